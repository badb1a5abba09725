/**
 * Pods for the harness: subnet.env reading and the wiring a CNI plugin would do — a `cni0`
 * bridge holding FLANNEL_SUBNET's first address, a pod namespace with a veth into it, the pod
 * IP, a default route via the bridge and FLANNEL_MTU on every link. All wiring sits in
 * {@link wirePod}, so weft's own CNI mode can replace the bridge wiring later ("cni").
 *
 * @example
 * ```ts
 * const env = parseSubnetEnv("FLANNEL_SUBNET=198.19.5.1/24\nFLANNEL_MTU=1450\n");
 * env.subnet; // { ip: 198.19.5.0 as number, prefix: 24 }
 * await wirePod("bridge", { hostNs, podNs, hostVeth: "w3k9z1v1", ip: "198.19.5.2",
 *   prefix: 24, gateway: "198.19.5.1", mtu: 1450 });
 * ```
 */
import {
  contains,
  formatIp,
  type Ipv4Net,
  maskOf,
  parseCidr,
  parseIp,
  sizeOf,
} from "../../src/net/ipv4.ts";
import { run, runOk } from "./proc.ts";

export interface SubnetEnv {
  /** Every KEY=value line, as written. */
  vars: Record<string, string>;
  /** FLANNEL_SUBNET as written, e.g. "198.19.5.1/24". */
  subnetText: string;
  /** The pod subnet (network address + length). */
  subnet: Ipv4Net;
  /** FLANNEL_SUBNET's address: the bridge/gateway address. */
  gateway: string;
  /** FLANNEL_NETWORK, or null when absent. */
  network: string | null;
  mtu: number;
  /** FLANNEL_IPMASQ, or null when absent. */
  ipmasq: boolean | null;
}

/** Parses subnet.env text; throws naming the bad line/value when FLANNEL_SUBNET or FLANNEL_MTU is unusable. */
export function parseSubnetEnv(text: string, source = "subnet.env"): SubnetEnv {
  const vars: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const t = line.trim();
    if (t === "" || t.startsWith("#")) continue;
    const eq = t.indexOf("=");
    if (eq <= 0) throw new Error(`${source}: line "${t}" is not KEY=value`);
    vars[t.slice(0, eq)] = t.slice(eq + 1);
  }
  const subnetText = vars.FLANNEL_SUBNET;
  if (!subnetText) throw new Error(`${source}: FLANNEL_SUBNET is missing`);
  const host = parseCidr(subnetText, true);
  const mtu = Number(vars.FLANNEL_MTU);
  if (!Number.isInteger(mtu) || mtu < 68 || mtu > 65535) {
    throw new Error(`${source}: FLANNEL_MTU="${vars.FLANNEL_MTU}" is not an MTU (68..65535)`);
  }
  return {
    vars,
    subnetText,
    subnet: { ip: (host.ip & maskOf(host.prefix)) >>> 0, prefix: host.prefix },
    gateway: formatIp(host.ip),
    network: vars.FLANNEL_NETWORK ?? null,
    mtu,
    ipmasq: vars.FLANNEL_IPMASQ === undefined ? null : vars.FLANNEL_IPMASQ === "true",
  };
}

/** Reads and parses a subnet.env file; null when it does not exist (agent not ready yet). */
export async function readSubnetEnvFile(path: string): Promise<SubnetEnv | null> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
  return parseSubnetEnv(text, path);
}

/** Renders KEY=value lines in the given order (for fake subnet.env files in tests). */
export function formatSubnetEnv(vars: Record<string, string | number | boolean>): string {
  return Object.entries(vars).map(([k, v]) => `${k}=${v}\n`).join("");
}

/**
 * The lowest address of `subnet` that is not the network, gateway or broadcast address and not
 * in `used`; throws when the subnet is full.
 */
export function nextFreeIp(subnet: Ipv4Net, gateway: string, used: Set<string>): string {
  const gw = parseIp(gateway);
  const last = subnet.ip + sizeOf(subnet.prefix) - 1; // broadcast
  for (let ip = subnet.ip + 1; ip < last; ip++) {
    const text = formatIp(ip);
    if (ip !== gw && !used.has(text)) return text;
  }
  throw new Error(`pod subnet ${formatIp(subnet.ip)}/${subnet.prefix} has no free address left`);
}

/** How pods get their network: the stand-in bridge wiring, or weft's CNI plugin (later). */
export type PodWiring = "bridge" | "cni";

export interface PodWiringContext {
  hostNs: string;
  podNs: string;
  /** Host-side veth name (≤ 15 chars). The pod side is always `eth0`. */
  hostVeth: string;
  ip: string;
  prefix: number;
  gateway: string;
  mtu: number;
}

/** The host bridge pods attach to, as flannel's CNI config names it. */
export const POD_BRIDGE = "cni0";

/** Wires a pod whose namespace already exists. The one place to swap bridge wiring for CNI. */
export async function wirePod(kind: PodWiring, ctx: PodWiringContext): Promise<void> {
  if (kind === "cni") {
    throw new Error(
      `podWiring "cni" is not available yet: weft's CNI mode (src/cni) is not wired into the ` +
        `harness; use podWiring "bridge"`,
    );
  }
  await ensureBridge(ctx.hostNs, ctx.gateway, ctx.prefix, ctx.mtu);
  const h = ["ip", "-n", ctx.hostNs];
  const p = ["ip", "-n", ctx.podNs];
  await runOk([
    ...h,
    "link",
    "add",
    ctx.hostVeth,
    "mtu",
    String(ctx.mtu),
    "type",
    "veth",
    "peer",
    "name",
    "eth0",
    "mtu",
    String(ctx.mtu),
    "netns",
    ctx.podNs,
  ]);
  await runOk([...h, "link", "set", ctx.hostVeth, "master", POD_BRIDGE, "up"]);
  await runOk([...p, "addr", "add", `${ctx.ip}/${ctx.prefix}`, "dev", "eth0"]);
  await runOk([...p, "link", "set", "eth0", "up"]);
  await runOk([...p, "route", "add", "default", "via", ctx.gateway, "dev", "eth0"]);
}

/**
 * Makes sure `cni0` exists, is up, has MTU `mtu` and holds `gateway/prefix`. Like the bridge CNI
 * plugin, refuses a bridge that already holds a different IPv4 address (the host's lease changed
 * under existing pods): the test must remove those pods or expect the change.
 */
export async function ensureBridge(hostNs: string, gateway: string, prefix: number, mtu: number) {
  const want = `${gateway}/${prefix}`;
  const show = await run(["ip", "-n", hostNs, "-j", "addr", "show", "dev", POD_BRIDGE]);
  if (show.code !== 0) {
    await runOk([
      "ip",
      "-n",
      hostNs,
      "link",
      "add",
      POD_BRIDGE,
      "mtu",
      String(mtu),
      "type",
      "bridge",
    ]);
    await runOk(["ip", "-n", hostNs, "addr", "add", want, "dev", POD_BRIDGE]);
    await runOk(["ip", "-n", hostNs, "link", "set", POD_BRIDGE, "up"]);
    return;
  }
  const [link] = JSON.parse(show.stdout) as {
    mtu: number;
    addr_info: { family: string; local: string; prefixlen: number }[];
  }[];
  const have = link.addr_info.filter((a) => a.family === "inet").map((a) =>
    `${a.local}/${a.prefixlen}`
  );
  if (have.length > 0 && !have.includes(want)) {
    throw new Error(
      `${POD_BRIDGE} in netns ${hostNs} has ${have.join(", ")} but subnet.env says ${want}; ` +
        `remove the host's pods before adding pods in the new subnet`,
    );
  }
  if (have.length === 0) await runOk(["ip", "-n", hostNs, "addr", "add", want, "dev", POD_BRIDGE]);
  // A bridge's own MTU follows its ports, so set it explicitly to FLANNEL_MTU each time.
  if (link.mtu !== mtu) {
    await runOk(["ip", "-n", hostNs, "link", "set", POD_BRIDGE, "mtu", String(mtu)]);
  }
  await runOk(["ip", "-n", hostNs, "link", "set", POD_BRIDGE, "up"]);
}

/** True when `ip` lies in the subnet (used to check a pod still fits its host's lease). */
export function inSubnet(subnet: Ipv4Net, ip: string): boolean {
  return contains(subnet, parseIp(ip));
}
