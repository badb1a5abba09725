/**
 * `weft cleanup`: removes what weft put on this host, and nothing else — the vxlan device
 * `flannel.<VNI>` (its neighbour and FDB entries go with it), the udp TUN `flannel0`, routes into
 * the cluster network via those devices or via a gateway on the external interface (host-gw,
 * DirectRouting), weft's blackhole route for the subnet (`--ip-blackhole-route`), flannel's
 * iptables chains and their jump rules, its nftables tables, and subnet.env. With
 * `--release-lease` it also deletes this node's lease (found by public IP) from the registry.
 * What is weft's is what each backend and agent part declares it owns ({@link owners}); this
 * module only reads the flags, the registry and subnet.env, and asks each owner to remove its own.
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
import { ifaceSelection, registryFlags } from "./agent_flags.ts";
import { flagHelp, type FlagTable, type FlagValues, parseFlags, UsageError } from "./flags.ts";
import { setupLogging } from "../base/log.ts";
import { openRegistry } from "../registry/open.ts";
import { withTimeout } from "../base/async.ts";
import { checkRegistryFlags, registryOptions } from "./registry_flags.ts";
import type { Registry } from "../registry/contract/registry.ts";
import { type NetworkConfig, parseNetworkConfig } from "../config/network.ts";
import { releaseOwnLease } from "../lease/release.ts";
import type { OwnHints } from "../lease/allocate.ts";
import { readNodeId } from "./node_id.ts";
import type { CleanupReport, Owned } from "../backend/backend.ts";
import { kernelState, planKernel, removeKernel } from "../backend/owned.ts";
import { ownedByBackends } from "../agent/select_backend.ts";
import { blackholeOwned } from "../agent/blackhole.ts";
import { iptablesOwned } from "../iptables/keeper.ts";
import { nftOwned } from "../nftables/keeper.ts";
import { formatCidr } from "../base/ipv4.ts";
import { readSubnetEnvHints } from "../config/subnet_env.ts";
import { type ExternalInterface, selectExternalInterface } from "../net/iface.ts";
import { netlink } from "../../ffi/libnl/mod.ts";

export const cleanupFlags: FlagTable = {
  ...registryFlags,
  "subnet-file": {
    type: "string",
    default: "/run/flannel/subnet.env",
    arg: "FILE",
    help:
      "the subnet.env the agent wrote (removed; also tells the network when the registry is down)",
  },
  "node-id-file": {
    type: "string",
    default: "/var/lib/weft/node-id",
    arg: "FILE",
    help: "the agent's host identity (a lease of another host with the same IP is never released)",
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
  "public-ipv6": {
    type: "string",
    default: "",
    arg: "IP",
    form: "ipv6",
    help: "the public IPv6 address the agent published (finds an IPv6-only node's lease)",
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
blackhole route too), the FLANNEL-POSTRTG/FLANNEL-FWD iptables chains and their jumps, the
flannel-ipv4/flannel-ipv6 nftables tables, and subnet.env. Stop the agent first.
Pass the registry, --iface and --subnet-file flags the agent ran with.`;

/**
 * Everyone who puts state on a host, each with what it owns under `config`: every backend, the
 * blackhole route, the iptables chains and the nftables tables.
 */
export async function owners(config: NetworkConfig | null): Promise<Owned[]> {
  return [...await ownedByBackends(config), blackholeOwned, iptablesOwned(), nftOwned()];
}

/** Lines of output plus the errors that make the command fail. */
class Report implements CleanupReport {
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

async function releaseLease(
  view: RegistryView,
  publicIP: string | null,
  rep: Report,
  ms: number,
  hints: OwnHints,
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
    const step = <T>(p: Promise<T>, what: string) => withTimeout(p, ms, what);
    const r = await releaseOwnLease(reg, view.config, publicIP, {
      dryRun: rep.dryRun,
      step,
      hints,
    });
    if (!r.lease) {
      rep.note(`no lease with public IP ${publicIP} in the ${reg.kind} registry`);
      return;
    }
    const subnet = formatCidr(r.lease.subnet);
    if (r.outcome === "other") {
      rep.fail(
        `lease ${subnet} (public IP ${publicIP}) belongs to another host (weft node id ` +
          `${r.lease.attrs.nodeId}): not released; two hosts share this public IP`,
      );
      return;
    }
    if (r.outcome === "released") {
      rep.did(`lease ${subnet} (public IP ${publicIP}) from the ${reg.kind} registry`);
    } else {
      rep.fail(
        `lease ${subnet} changed while it was being released (is the agent still running?); ` +
          `stop the agent and run cleanup again`,
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
  const [view, sf] = await Promise.all([readRegistry(v, ms), readSubnetEnvHints(subnetFile)]);
  if (view.error) rep.note(`registry not used: ${view.error}`);
  // An IPv6-only network (the config's EnableIPv4 false, or a subnet.env with IPv6 lines alone).
  const v6only = view.config ? !view.config.enableIPv4 : !sf.network && !!sf.subnet6;
  const network = v6only ? null : view.config?.network ?? sf.network;
  const network6 = view.config?.ipv6?.network ?? sf.network6 ?? null;

  let ext: ExternalInterface | null = null;
  try {
    const sel = ifaceSelection(v);
    ext = await selectExternalInterface({
      ...sel,
      publicIP: v6only ? undefined : sel.publicIP,
      ipv4: !v6only,
    });
  } catch (e) {
    rep.note(
      `external interface unknown (${(e as Error).message}); routes via a gateway on it ` +
        `(host-gw, DirectRouting) are left in place`,
    );
  }
  if (!network && !network6) {
    rep.note(
      `cluster network unknown (no registry config, no ${subnetFile}); only routes through ` +
        `weft's own devices are removed`,
    );
  }

  // For each owner: remove what it declares (devices and routes in one plan, then the rest).
  const all = await owners(view.config);
  try {
    const nl = netlink();
    const plan = planKernel(all, {
      ...kernelState(nl),
      network,
      own: sf.subnet,
      extIndex: ext?.index ?? null,
      subnetLen: view.config?.subnetLen ?? null,
      network6,
      own6: sf.subnet6 ?? null,
      subnetLen6: view.config?.ipv6?.subnetLen ?? null,
    });
    for (const n of plan.notes) rep.note(n);
    removeKernel(nl, plan, rep);
  } catch (e) {
    rep.fail(`cannot inspect or change the kernel's devices and routes: ${(e as Error).message}`);
  }
  for (const o of all) await o.remove?.(rep);

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
    // The lease is found by PublicIPv6 in an IPv6-only network (its PublicIP is 0.0.0.0).
    const publicIP = v6only
      ? String(v["public-ipv6"] || "") || ext?.publicIPv6 || null
      : String(v["public-ip"] || "") || ext?.publicIP || null;
    const nodeId = await readNodeId(String(v["node-id-file"]));
    await releaseLease(view, publicIP, rep, ms, {
      hint: sf.subnet,
      hint6: sf.subnet6 ?? null,
      nodeId,
    });
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
