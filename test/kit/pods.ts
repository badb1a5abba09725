/**
 * Pods for the harness: subnet.env reading and the wiring a CNI plugin would do — a `cni0`
 * bridge holding FLANNEL_SUBNET's first address, a pod namespace with a veth into it, the pod
 * IP, a default route via the bridge and FLANNEL_MTU on every link. All wiring sits in
 * {@link wirePod}. With "cni" it runs weft's CNI mode exactly as a container runtime would
 * (`CNI_COMMAND=ADD ...`, a flannel-style config on stdin, `weft` run with no arguments inside the
 * host namespace), and the pod's address and host veth come from the CNI result.
 *
 * @example
 * ```ts
 * const env = parseSubnetEnv(
 *   "FLANNEL_NETWORK=198.19.0.0/16\nFLANNEL_SUBNET=198.19.5.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n",
 * );
 * env.subnet; // { ip: 198.19.5.0 as number, prefix: 24 }
 * await wirePod("bridge", { hostNs, podNs, hostVeth: "w3k9z1v1", ip: "198.19.5.2",
 *   prefix: 24, gateway: "198.19.5.1", mtu: 1450 });
 * const wired = await wirePod("cni", { ...ctx, subnetFile: "/tmp/h1/subnet.env", cniDir: "/tmp/h1/cni" });
 * wired.ip; // what host-local handed out, e.g. "198.19.5.2"
 * await unwirePod("cni", ctx); // CNI DEL: veth gone, address released
 * ```
 */
import { contains, formatIp, type Ipv4Net, parseIp, sizeOf } from "../../src/base/ipv4.ts";
import {
  gatewayOf,
  hasIpv4,
  parseSubnetEnv as parseWeftSubnetEnv,
  type SubnetEnv as WeftSubnetEnv,
} from "../../src/config/subnet_env.ts";
import { denoInNs } from "./netns.ts";
import { run, runOk } from "./proc.ts";

/** weft's subnet.env (src/config/subnet_env.ts) plus what pod wiring needs as text. */
export interface SubnetEnv extends WeftSubnetEnv {
  /** FLANNEL_SUBNET, e.g. "198.19.5.1/24". */
  subnetText: string;
  /** FLANNEL_SUBNET's address: the bridge/gateway address. */
  gateway: string;
}

/**
 * Parses subnet.env text with weft's own parser; throws naming the missing key or bad value. An
 * IPv6-only node's file has no IPv4 half: `gateway` and `subnetText` are "".
 */
export function parseSubnetEnv(text: string, source = "subnet.env"): SubnetEnv {
  const env = parseWeftSubnetEnv(text, source);
  if (!hasIpv4(env)) return { ...env, subnetText: "", gateway: "" };
  const gateway = gatewayOf(env.subnet);
  return { ...env, subnetText: `${gateway}/${env.subnet.prefix}`, gateway };
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
  /** The pod's IPv6 address, prefix and gateway (the bridge's), when the host has IPv6. */
  ip6?: string;
  prefix6?: number;
  gateway6?: string;
  /** "cni" only: the host's subnet.env, read by weft's CNI mode. */
  subnetFile?: string;
  /** "cni" only: a per-host directory for weft's saved delegate configs and host-local's leases. */
  cniDir?: string;
  /** "cni" only: CNI_CONTAINERID; default the pod namespace's name (unique per run). */
  containerId?: string;
}

/** What wiring gave the pod (CNI picks the address and names the host veth itself). */
export interface WiredPod {
  ip: string;
  prefix: number;
  gateway: string;
  hostVeth: string;
}

/** The host bridge pods attach to, as flannel's CNI config names it. */
export const POD_BRIDGE = "cni0";

/** Wires a pod whose namespace already exists. The one place to swap bridge wiring for CNI. */
export async function wirePod(kind: PodWiring, ctx: PodWiringContext): Promise<WiredPod> {
  if (kind === "cni") return await cniAdd(cniTarget(ctx));
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
  // An IPv6-only pod (ip "") gets its IPv6 address alone.
  if (ctx.ip) await runOk([...p, "addr", "add", `${ctx.ip}/${ctx.prefix}`, "dev", "eth0"]);
  await runOk([...p, "link", "set", "eth0", "up"]);
  if (ctx.ip) await runOk([...p, "route", "add", "default", "via", ctx.gateway, "dev", "eth0"]);
  if (ctx.ip6 && ctx.gateway6 && ctx.prefix6 !== undefined) {
    await ensureBridge6(ctx.hostNs, ctx.gateway6, ctx.prefix6);
    // nodad: usable at once, no duplicate-address wait (every address here is unique anyway).
    await runOk([...p, "-6", "addr", "add", `${ctx.ip6}/${ctx.prefix6}`, "dev", "eth0", "nodad"]);
    await runOk([...p, "-6", "route", "add", "default", "via", ctx.gateway6, "dev", "eth0"]);
  }
  return { ip: ctx.ip, prefix: ctx.prefix, gateway: ctx.gateway, hostVeth: ctx.hostVeth };
}

/** Gives `cni0` (made by {@link ensureBridge}) the IPv6 gateway address once. */
async function ensureBridge6(hostNs: string, gateway6: string, prefix6: number) {
  const want = `${gateway6}/${prefix6}`;
  const show = await runOk(["ip", "-n", hostNs, "-6", "-j", "addr", "show", "dev", POD_BRIDGE]);
  const [link] = JSON.parse(show) as { addr_info: { local: string; prefixlen: number }[] }[];
  if (link.addr_info.some((a) => `${a.local}/${a.prefixlen}` === want)) return;
  await runOk(["ip", "-n", hostNs, "-6", "addr", "add", want, "dev", POD_BRIDGE, "nodad"]);
}

/**
 * Undoes {@link wirePod} before the pod namespace is deleted: CNI DEL for "cni" (the runtime's
 * part: veth removed, address released); nothing for "bridge", whose veth goes with the netns.
 */
export async function unwirePod(kind: PodWiring, ctx: PodWiringContext): Promise<void> {
  if (kind === "cni") await cniDel(cniTarget(ctx));
}

// ---- CNI: weft's plugin mode, invoked as a container runtime invokes a plugin ----

const REPO_MAIN = decodeURIComponent(new URL("../../main.ts", import.meta.url).pathname);
/** The reference plugins (bridge, host-local) weft delegates to. */
export const CNI_PATH = "/usr/lib/cni";
/** The network name in the CNI config (host-local keeps its leases under it). */
export const CNI_NETWORK_NAME = "weftnet";
/** Bound on one plugin run: deno start-up plus the bridge and host-local delegates. */
const CNI_TIMEOUT_MS = 60_000;

/** Where and for whom one CNI command runs. */
export interface CniTarget {
  hostNs: string;
  podNs: string;
  containerId: string;
  subnetFile: string;
  /** Per-host state directory: `<cniDir>/weft` (saved delegates), `<cniDir>/ipam` (host-local). */
  cniDir: string;
}

function cniTarget(ctx: PodWiringContext): CniTarget {
  if (!ctx.subnetFile || !ctx.cniDir) {
    throw new Error(`podWiring "cni" needs subnetFile and cniDir in the wiring context`);
  }
  return {
    hostNs: ctx.hostNs,
    podNs: ctx.podNs,
    containerId: ctx.containerId ?? ctx.podNs,
    subnetFile: ctx.subnetFile,
    cniDir: ctx.cniDir,
  };
}

/**
 * flannel's CNI config with weft as the plugin. `ipam.dataDir` keeps host-local's leases in the
 * run's directory: its default (/var/lib/cni/networks) is on the test machine and shared by every
 * run and host.
 */
export function cniConfig(t: Pick<CniTarget, "subnetFile" | "cniDir">): string {
  return JSON.stringify({
    cniVersion: "1.0.0",
    name: CNI_NETWORK_NAME,
    type: "weft",
    subnetFile: t.subnetFile,
    dataDir: `${t.cniDir}/weft`,
    ipam: { dataDir: `${t.cniDir}/ipam` },
    delegate: { hairpinMode: true, isDefaultGateway: true },
  });
}

/** One plugin run: exit code, stdout (result or error JSON) and stderr. */
export interface CniRun {
  code: number;
  stdout: string;
  stderr: string;
  /** stdout parsed, when it is JSON. */
  json: Record<string, unknown> | null;
}

/** Runs weft's CNI mode for `command` inside the host namespace, as a runtime would. */
export async function cniExec(command: "ADD" | "DEL" | "CHECK", t: CniTarget): Promise<CniRun> {
  const r = await run(
    denoInNs(t.hostNs, [REPO_MAIN]),
    {
      stdin: cniConfig(t),
      timeoutMs: CNI_TIMEOUT_MS,
      env: {
        NO_COLOR: "1",
        CNI_COMMAND: command,
        CNI_CONTAINERID: t.containerId,
        CNI_NETNS: `/var/run/netns/${t.podNs}`,
        CNI_IFNAME: "eth0",
        CNI_PATH,
      },
    },
  );
  let json: Record<string, unknown> | null = null;
  try {
    json = r.stdout.trim() ? JSON.parse(r.stdout) : null;
  } catch {
    // not JSON: reported by the callers with the raw output
  }
  const code = r.timedOut ? -1 : r.code;
  return { code, stdout: r.stdout, stderr: r.stderr, json };
}

function cniFailure(command: string, t: CniTarget, r: CniRun): Error {
  const j = r.json as { code?: number; msg?: string; details?: string } | null;
  const why = j?.msg
    ? `CNI error ${j.code}: ${j.msg}${j.details ? ` (${j.details})` : ""}`
    : `${r.stdout.trim() || "(no stdout)"}`;
  return new Error(
    `CNI ${command} of ${t.containerId} in ${t.hostNs} ${
      r.code === -1 ? `timed out after ${CNI_TIMEOUT_MS} ms` : `exited ${r.code}`
    }: ${why}${r.stderr.trim() ? `\nstderr: ${r.stderr.trim()}` : ""}`,
  );
}

/** The pod's address and host veth from a CNI 1.0 result (bridge delegate). */
export function parseCniResult(result: unknown): WiredPod {
  const r = result as {
    interfaces?: { name: string; sandbox?: string }[];
    ips?: { address: string; gateway?: string; interface?: number }[];
  };
  const ip4 = r.ips?.find((i) => !i.address.includes(":"));
  if (!ip4) throw new Error(`CNI result has no IPv4 address: ${JSON.stringify(result)}`);
  const [ip, len] = ip4.address.split("/");
  const veth = r.interfaces?.find((i) => !i.sandbox && i.name !== POD_BRIDGE);
  if (!veth) throw new Error(`CNI result names no host veth: ${JSON.stringify(result)}`);
  return { ip, prefix: Number(len), gateway: ip4.gateway ?? "", hostVeth: veth.name };
}

/** CNI ADD; returns what the plugin set up, throws with the plugin's CNI error otherwise. */
export async function cniAdd(t: CniTarget): Promise<WiredPod> {
  const r = await cniExec("ADD", t);
  if (r.code !== 0 || !r.json) throw cniFailure("ADD", t, r);
  return parseCniResult(r.json);
}

/** CNI DEL; throws with the plugin's CNI error when it fails. */
export async function cniDel(t: CniTarget): Promise<void> {
  const r = await cniExec("DEL", t);
  if (r.code !== 0) throw cniFailure("DEL", t, r);
}

/**
 * Makes sure `cni0` exists, is up, has MTU `mtu` and holds `gateway/prefix`. Like the bridge CNI
 * plugin, refuses a bridge that already holds a different IPv4 address (the host's lease changed
 * under existing pods): the test must remove those pods or expect the change. `gateway` "": an
 * IPv6-only host's bridge, no IPv4 address.
 */
export async function ensureBridge(hostNs: string, gateway: string, prefix: number, mtu: number) {
  const want = gateway ? `${gateway}/${prefix}` : "";
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
    if (want) await runOk(["ip", "-n", hostNs, "addr", "add", want, "dev", POD_BRIDGE]);
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
  if (want && have.length > 0 && !have.includes(want)) {
    throw new Error(
      `${POD_BRIDGE} in netns ${hostNs} has ${have.join(", ")} but subnet.env says ${want}; ` +
        `remove the host's pods before adding pods in the new subnet`,
    );
  }
  if (want && have.length === 0) {
    await runOk(["ip", "-n", hostNs, "addr", "add", want, "dev", POD_BRIDGE]);
  }
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
