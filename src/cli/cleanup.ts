/**
 * `weft cleanup`: removes what weft put on this host, and nothing else — the vxlan device
 * `flannel.<VNI>` (its neighbour and FDB entries go with it), the udp TUN `flannel0`, routes into
 * the cluster network via those devices or via a gateway on the external interface (host-gw,
 * DirectRouting), weft's blackhole route for the subnet (`--ip-blackhole-route`), flannel's
 * iptables chains and their jump rules, and subnet.env. With
 * `--release-lease` it also deletes this node's lease (found by public IP) from the registry.
 *
 * The registry is only asked for the network config (VNI, network) and, with `--release-lease`,
 * for the lease. When it cannot be reached the kernel and file cleanup still runs, from
 * subnet.env and the devices present; the lease release is then reported as failed (exit 1).
 * Stop the agent first: a running agent recreates what is removed here.
 *
 * @example
 * ```sh
 * weft cleanup --dry-run --iface eth0          # prints what would be removed
 * weft cleanup --release-lease --registry etcd --etcd-endpoints http://198.18.0.2:2379 --iface eth0
 * ```
 */
import { registryFlags } from "./agent_flags.ts";
import { flagHelp, type FlagTable, type FlagValues, parseFlags, UsageError } from "./flags.ts";
import { setupLogging } from "../base/log.ts";
import { openRegistry } from "../registry/open.ts";
import { withTimeout } from "../base/async.ts";
import { checkRegistryFlags, registryOptions } from "./registry_flags.ts";
import type { Registry } from "../registry/registry.ts";
import { backendNumber, type NetworkConfig, parseNetworkConfig } from "../config/network.ts";
import { LeaseDecoder } from "../lease/decode.ts";
import { findOwnLease } from "../lease/allocate.ts";
import type { Lease } from "../lease/codec.ts";
import { isOwnedRoute } from "../backend/routes.ts";
import { isOurBlackhole } from "../agent/blackhole.ts";
import { formatCidr, type Ipv4Net, networkOf, parseCidr } from "../base/ipv4.ts";
import { parseSubnetEnvText } from "../config/subnet_env.ts";
import { type ExternalInterface, selectExternalInterface } from "../net/iface.ts";
import { commandRunner, FWD_CHAIN, MASQ_CHAIN, RuleManager, type Runner } from "../ops/iptables.ts";
import {
  type Link,
  type Netlink,
  type Route,
  RT_TABLE_MAIN,
  RTN_BLACKHOLE,
} from "../../ffi/libnl/mod.ts";

export const cleanupFlags: FlagTable = {
  ...registryFlags,
  "subnet-file": {
    type: "string",
    default: "/run/flannel/subnet.env",
    arg: "FILE",
    help:
      "the subnet.env the agent wrote (removed; also tells the network when the registry is down)",
  },
  "iface": {
    type: "list",
    default: [],
    arg: "NAME|IP",
    help:
      "external interface, as given to the agent (finds host-gw/DirectRouting routes and the public IP)",
  },
  "iface-regex": {
    type: "list",
    default: [],
    arg: "REGEX",
    help: "external interface by regex, as given to the agent",
  },
  "iface-can-reach": {
    type: "string",
    default: "",
    arg: "IP",
    help: "external interface = the one used to reach this address",
  },
  "public-ip": {
    type: "string",
    default: "",
    arg: "IP",
    help: "the public IP the agent published (finds the lease for --release-lease)",
  },
  "release-lease": {
    type: "bool",
    default: false,
    help: "also delete this node's subnet lease from the registry",
  },
  "dry-run": { type: "bool", default: false, help: "print what would be removed, change nothing" },
  "registry-timeout": {
    type: "int",
    default: 5,
    min: 1,
    max: 300,
    arg: "SEC",
    help: "give up on the registry after this long",
  },
  "help": { type: "bool", default: false, alias: "h", help: "show this help" },
};

const USAGE = `Usage: weft cleanup [--release-lease] [--dry-run] [flags]

Removes weft's devices (flannel.<VNI>, flannel0), its routes into the cluster network (the
blackhole route too), the FLANNEL-POSTRTG/FLANNEL-FWD iptables chains and their jumps, and
subnet.env. Stop the agent first.
Pass the registry, --iface and --subnet-file flags the agent ran with.`;

/** What weft put in the kernel, found by {@link planKernel}. */
export interface KernelPlan {
  routes: { route: Route; text: string }[];
  devices: { link: Link; text: string }[];
  /** Things that look like weft's but are left alone, with the reason. */
  notes: string[];
}

export interface KernelFacts {
  links: Link[];
  /** Routes of the main table. */
  routes: Route[];
  /** The cluster network, when known (registry config or subnet.env). */
  network: Ipv4Net | null;
  /** This node's subnet, when known. */
  own: Ipv4Net | null;
  /** The config's vxlan VNI when the registry's config says vxlan; null: any flannel.N. */
  vni: number | null;
  /** The external interface's ifindex, when it could be determined. */
  extIndex: number | null;
}

/** A route as `ip route` shows it, with interface names. */
export function describeRoute(r: Route, links: Link[]): string {
  if (r.type === RTN_BLACKHOLE) return `blackhole ${r.dst} metric ${r.metric}`;
  const dev = links.find((l) => l.index === r.dev)?.name ?? `if${r.dev}`;
  return `${r.dst}${r.gw ? ` via ${r.gw}` : ""}${r.dev !== undefined ? ` dev ${dev}` : ""}` +
    `${r.onlink ? " onlink" : ""}`;
}

/**
 * Pure: which devices and routes are weft's. Devices: `flannel.<vni>` (or every `flannel.N`
 * vxlan device when the VNI is unknown) and the TUN `flannel0`. Routes: every main-table route
 * through those devices (they would vanish with the device anyway; listing them makes the output
 * complete), and routes into the network via a gateway on the external interface
 * ({@link isOwnedRoute}, the agent's own definition).
 */
export function planKernel(f: KernelFacts): KernelPlan {
  const notes: string[] = [];
  const devices: KernelPlan["devices"] = [];
  for (const l of f.links) {
    const m = /^flannel\.(\d+)$/.exec(l.name);
    if (m && l.kind === "vxlan") {
      if (f.vni === null || Number(m[1]) === f.vni) {
        devices.push({ link: l, text: `${l.name} (vxlan VNI ${l.vxlan?.id ?? m[1]})` });
      } else {
        notes.push(
          `left ${l.name}: the registry's config uses VNI ${f.vni}; delete it by hand ` +
            `(ip link del ${l.name}) if it is a leftover`,
        );
      }
    } else if (l.name === "flannel0" && l.kind === "tun") {
      devices.push({ link: l, text: `${l.name} (udp TUN)` });
    } else if (m || l.name === "flannel0") {
      notes.push(`left ${l.name}: it is a ${l.kind ?? "plain"} device, not one weft creates`);
    }
  }
  const devIdx = new Set(devices.map((d) => d.link.index));
  const routes: KernelPlan["routes"] = [];
  for (const r of f.routes) {
    const viaDevice = r.dev !== undefined && devIdx.has(r.dev) &&
      (r.table ?? RT_TABLE_MAIN) === RT_TABLE_MAIN;
    const viaExt = f.network !== null && f.extIndex !== null &&
      isOwnedRoute(r, f.network, f.own, { ext: f.extIndex });
    const blackhole = f.network !== null && isOurBlackhole(r, f.network);
    if (viaDevice || viaExt || blackhole) {
      routes.push({ route: r, text: describeRoute(r, f.links) });
    }
  }
  return { routes, devices, notes };
}

/** What the iptables removal did (or would do), from the `iptables-restore` input it fed. */
export function describeRestore(bin: string, input: string): string[] {
  const out: string[] = [];
  let table = "";
  for (const line of input.split("\n")) {
    if (line.startsWith("*")) table = line.slice(1);
    // Shown as the rule was listed (-A), which is what an operator finds in iptables-save.
    else if (line.startsWith("-D ")) {
      out.push(`iptables rule "-t ${table} -A ${line.slice(3)}" (${bin})`);
    } else if (line.startsWith("-X ")) {
      out.push(`iptables chain ${line.slice(3)} in table ${table} (${bin})`);
    }
  }
  return out;
}

/** Lines of output plus the errors that make the command fail. */
class Report {
  errors: string[] = [];
  count = 0;
  constructor(readonly dryRun: boolean) {}
  did(what: string) {
    this.count++;
    console.log(`${this.dryRun ? "would remove" : "removed"} ${what}`);
  }
  note(what: string) {
    console.log(`note: ${what}`);
  }
  fail(what: string) {
    this.errors.push(what);
    console.error(`weft: ${what}`);
  }
}

interface RegistryView {
  registry: Registry | null;
  config: NetworkConfig | null;
  /** Why the registry could not be used; null when it answered. */
  error: string | null;
}

/** Opens the registry and reads the config, bounded; never throws. */
async function readRegistry(v: FlagValues, ms: number): Promise<RegistryView> {
  const where = v.registry === "etcd"
    ? `etcd at ${v["etcd-endpoints"]}`
    : `Deno KV ${v["kv-url"] || v["kv-path"]}`;
  if (v.registry !== "etcd" && !v["kv-url"]) {
    // Opening a missing KV file would create an empty registry; that is not "reachable".
    try {
      await Deno.stat(String(v["kv-path"]));
    } catch {
      return {
        registry: null,
        config: null,
        error: `${where}: no such file (pass the --kv-path the agent used)`,
      };
    }
  }
  let registry: Registry | null = null;
  try {
    registry = await withTimeout(openRegistry(registryOptions(v)), ms, `opening ${where}`);
    const text = await withTimeout(registry.getConfig(), ms, `reading the config from ${where}`);
    let config: NetworkConfig | null = null;
    if (text !== null) {
      try {
        config = parseNetworkConfig(text);
      } catch (e) {
        console.log(`note: the registry's network config is invalid (${(e as Error).message})`);
      }
    }
    return { registry, config, error: null };
  } catch (e) {
    await registry?.close().catch(() => {});
    return { registry: null, config: null, error: `${where}: ${(e as Error).message}` };
  }
}

interface SubnetFileView {
  network: Ipv4Net | null;
  own: Ipv4Net | null;
  exists: boolean;
}

async function readSubnetFile(path: string): Promise<SubnetFileView> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch {
    return { network: null, own: null, exists: false };
  }
  const env = parseSubnetEnvText(text);
  const cidr = (s: string | undefined, host: boolean) => {
    try {
      return s ? networkOf(parseCidr(s, host)) : null;
    } catch {
      return null;
    }
  };
  return {
    network: cidr(env.FLANNEL_NETWORK, false),
    own: cidr(env.FLANNEL_SUBNET, true),
    exists: true,
  };
}

/** Removes the kernel state in `plan`: ext routes, device routes, then the devices. */
function applyKernel(
  nl: Netlink,
  plan: KernelPlan,
  rep: Report,
  isNotFound: (e: unknown) => boolean,
) {
  for (const { route, text } of plan.routes) {
    try {
      if (!rep.dryRun) nl.routeDel(route);
      rep.did(`route ${text}`);
    } catch (e) {
      if (isNotFound(e)) continue; // went with something removed before
      rep.fail(`cannot remove route ${text}: ${(e as Error).message}`);
    }
  }
  for (const { link, text } of plan.devices) {
    try {
      if (!rep.dryRun) nl.linkDel(link.index);
      rep.did(
        `device ${text}${link.kind === "vxlan" ? " with its neighbour and FDB entries" : ""}`,
      );
    } catch (e) {
      if (isNotFound(e)) continue;
      rep.fail(`cannot remove device ${link.name}: ${(e as Error).message}`);
    }
  }
}

/** Deletes flannel's chains and jumps in every iptables flavour; dry runs record instead. */
async function removeRules(rep: Report): Promise<void> {
  const real = commandRunner();
  const runner: Runner = async (argv, stdin) => {
    if (!argv[0].endsWith("-restore")) return real(argv, stdin);
    const bin = argv[0].replace(/-restore$/, "");
    if (rep.dryRun) {
      for (const d of describeRestore(bin, stdin ?? "")) rep.did(d);
      return { code: 0, stdout: "", stderr: "" };
    }
    const r = await real(argv, stdin);
    if (r.code === 0) { for (const d of describeRestore(bin, stdin ?? "")) rep.did(d); }
    return r;
  };
  const any = parseCidr("0.0.0.0/0"); // remove() does not look at the network
  const mgr = new RuleManager({
    network: any,
    podSubnet: any,
    ipMasq: false,
    forward: false,
    runner,
  });
  try {
    await mgr.remove();
  } catch (e) {
    rep.fail(
      `cannot remove the ${MASQ_CHAIN}/${FWD_CHAIN} iptables chains: ${(e as Error).message}`,
    );
  }
}

async function releaseLease(
  view: RegistryView,
  publicIP: string | null,
  rep: Report,
  ms: number,
): Promise<void> {
  if (!view.registry) {
    rep.fail(
      `lease not released: the registry cannot be reached (${view.error}); run ` +
        `'weft cleanup --release-lease' again once it is up, or let the lease expire`,
    );
    return;
  }
  if (!publicIP) {
    rep.fail(
      "lease not released: this node's public IP is unknown; pass --iface or --public-ip as " +
        "the agent had them",
    );
    return;
  }
  const reg = view.registry;
  try {
    const { leases } = await withTimeout(reg.listLeases(), ms, "listing leases");
    const decoded = new LeaseDecoder().decodeAll(leases);
    const own: Lease | null = view.config
      ? findOwnLease(view.config, decoded, publicIP)
      : decoded.find((l) => l.attrs.publicIP === publicIP) ?? null;
    if (!own) {
      rep.note(`no lease with public IP ${publicIP} in the ${reg.kind} registry`);
      return;
    }
    const what = `lease ${formatCidr(own.subnet)} (public IP ${publicIP}) from the ${reg.kind} ` +
      `registry`;
    if (rep.dryRun) return rep.did(what);
    const gone = await withTimeout(
      reg.deleteLease(own.key, own.revision),
      ms,
      "deleting the lease",
    );
    if (gone) rep.did(what);
    else {
      rep.fail(
        `lease ${formatCidr(own.subnet)} changed while it was being released (is the agent ` +
          `still running?); stop the agent and run cleanup again`,
      );
    }
  } catch (e) {
    rep.fail(`lease not released: ${(e as Error).message}`);
  }
}

/** `weft cleanup ...`; returns the exit code. */
export async function cleanupCommand(
  args: string[],
  env: Record<string, string | undefined>,
): Promise<number> {
  let v: FlagValues;
  try {
    const { values, positional, given } = parseFlags(args, cleanupFlags, env);
    if (values.help) {
      console.log(`${USAGE}\n\n${flagHelp(cleanupFlags)}`);
      return 0;
    }
    if (positional.length) throw new UsageError(`unexpected argument "${positional[0]}"`);
    checkRegistryFlags(values, given);
    v = values;
  } catch (e) {
    console.error(`weft: ${(e as Error).message}`);
    return e instanceof UsageError ? 2 : 1;
  }
  // Library logs only when something is wrong: the command's own lines are the output.
  await setupLogging(
    v["log-level"] === "info" ? "warning" : v["log-level"] as "debug",
    String(v["log-format"]) as "text",
  );
  const rep = new Report(Boolean(v["dry-run"]));
  const ms = Number(v["registry-timeout"]) * 1000;
  if (rep.dryRun) console.log("dry run: nothing is changed");

  const subnetFile = String(v["subnet-file"]);
  const [view, sf] = await Promise.all([readRegistry(v, ms), readSubnetFile(subnetFile)]);
  if (view.error) rep.note(`registry not used: ${view.error}`);
  const network = view.config?.network ?? sf.network;
  const vni = view.config?.backendType === "vxlan" ? backendNumber(view.config, "VNI", 1) : null;

  let ext: ExternalInterface | null = null;
  try {
    ext = await selectExternalInterface({
      iface: v.iface as string[],
      ifaceRegex: v["iface-regex"] as string[],
      ifaceCanReach: String(v["iface-can-reach"] || "") || undefined,
      publicIP: String(v["public-ip"] || "") || undefined,
    });
  } catch (e) {
    rep.note(
      `external interface unknown (${(e as Error).message}); routes via a gateway on it ` +
        `(host-gw, DirectRouting) are left in place`,
    );
  }
  if (!network) {
    rep.note(
      `cluster network unknown (no registry config, no ${subnetFile}); only routes through ` +
        `weft's own devices are removed`,
    );
  }

  try {
    const { netlink, isNotFound } = await import("../../ffi/libnl/mod.ts");
    const nl = netlink();
    const plan = planKernel({
      links: nl.linkList(),
      routes: [...nl.routeList({ table: RT_TABLE_MAIN }), ...nl.routeList({ type: RTN_BLACKHOLE })],
      network,
      own: sf.own,
      vni,
      extIndex: ext?.index ?? null,
    });
    for (const n of plan.notes) rep.note(n);
    applyKernel(nl, plan, rep, isNotFound);
  } catch (e) {
    rep.fail(`cannot inspect or change the kernel's devices and routes: ${(e as Error).message}`);
  }

  await removeRules(rep);

  if (sf.exists) {
    try {
      if (!rep.dryRun) await Deno.remove(subnetFile);
      rep.did(subnetFile);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) {
        rep.fail(`cannot remove ${subnetFile}: ${(e as Error).message}`);
      }
    }
  }

  if (v["release-lease"]) {
    const publicIP = String(v["public-ip"] || "") || ext?.publicIP || null;
    await releaseLease(view, publicIP, rep, ms);
  }
  await view.registry?.close().catch(() => {});

  if (rep.count === 0 && rep.errors.length === 0) {
    console.log("nothing of weft's found on this host");
  }
  if (rep.errors.length) {
    console.error(
      `weft: cleanup incomplete, ${rep.errors.length} problem(s):\n${
        rep.errors.map((e) => `  - ${e}`).join("\n")
      }`,
    );
    return 1;
  }
  return 0;
}
