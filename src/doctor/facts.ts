/**
 * What the doctor looks at, read once: the registry (config, leases, latency), the external
 * interface, subnet.env, and this node's lease and peers as the agent with the same flags would
 * see them. Every read failure is kept as text for the checks to report, never thrown.
 */
import type { Registry } from "../registry/contract/registry.ts";
import { openRegistry, type RegistryOptions } from "../registry/open.ts";
import { type NetworkConfig, parseNetworkConfig } from "../config/network.ts";
import { readSubnetEnv, type SubnetEnv } from "../config/subnet_env.ts";
import {
  type ExternalInterface,
  type IfaceSelection,
  selectExternalInterface,
} from "../net/iface.ts";
import { type KnownLease, leaseMatches, peerProblem } from "../lease/codec.ts";
import { namesNode } from "../lease/allocate.ts";
import { LeaseDecoder } from "../lease/decode.ts";
import { contains, formatCidr, isIp, parseCidr, parseIp, sameNet } from "../base/ipv4.ts";
import { contains6, formatCidr6, isIp6, parseCidr6, parseIp6, sameNet6 } from "../base/ipv6.ts";
import { hasIpv4Half } from "../health/targets.ts";
import { withTimeout } from "../base/async.ts";

/** The agent's flags the doctor needs, typed. */
export interface DoctorOptions {
  registry: RegistryOptions;
  iface: IfaceSelection;
  subnetFile: string;
  healthzIp: string;
  healthzPort: number;
  ipMasq: boolean;
  forwardRules: boolean;
  /** --subnet-lease-renew-margin in minutes. */
  renewMarginMin: number;
  backendOverride?: string;
  /** --peer: only the peer whose subnet or public IP this names (a subnet or an address). */
  peer?: string;
  /** Bound on each registry call. */
  registryTimeoutMs?: number;
}

export interface Facts {
  opts: DoctorOptions;
  now: number;
  registryKind: string;
  registryError: string | null;
  /** Milliseconds of one warm registry round trip (listing the leases). */
  registryLatencyMs: number | null;
  configText: string | null;
  config: NetworkConfig | null;
  configError: string | null;
  /** Every decodable lease (dual-stack and IPv6-only ones too). */
  leases: KnownLease[];
  ext: ExternalInterface | null;
  extError: string | null;
  subnetEnv: SubnetEnv | null;
  subnetEnvError: string | null;
  /** The backend this node runs: --backend, else the config's. */
  backendType: string | null;
  own: KnownLease | null;
  /** Leases this node programs (the agent's peer rule), after the --peer filter. */
  peers: KnownLease[];
}

/** Whether `peer` (a subnet or an address, of either family) names lease `l`. */
export function peerSelected(l: KnownLease, peer: string | undefined): boolean {
  if (!peer) return true;
  const v4 = hasIpv4Half(l);
  const s6 = l.subnet6;
  if (isIp(peer)) return v4 && (l.attrs.publicIP === peer || contains(l.subnet, parseIp(peer)));
  if (isIp6(peer)) {
    const ip = parseIp6(peer);
    return (!!l.attrs.publicIPv6 && isIp6(l.attrs.publicIPv6) &&
      parseIp6(l.attrs.publicIPv6) === ip) || (!!s6 && contains6(s6, ip));
  }
  try {
    if (peer.includes(":")) return !!s6 && sameNet6(parseCidr6(peer, true), s6);
    return v4 && sameNet(parseCidr(peer, true), l.subnet);
  } catch {
    return false;
  }
}

/** A lease's name in report lines: its subnets, "198.19.5.0/24" or "…/24 + 2001:db8:1:5::/64". */
export function leaseSubnets(l: KnownLease): string {
  const v6 = l.subnet6 ? formatCidr6(l.subnet6) : "";
  if (!hasIpv4Half(l)) return v6;
  return v6 ? `${formatCidr(l.subnet)} + ${v6}` : formatCidr(l.subnet);
}

/** The node address a lease names: PublicIP, or PublicIPv6 when it has no IPv4 half. */
export function leaseAddress(l: KnownLease): string {
  return hasIpv4Half(l) ? l.attrs.publicIP : l.attrs.publicIPv6 ?? "";
}

/** Reads everything; closes the registry before returning. */
export async function gatherFacts(o: DoctorOptions): Promise<Facts> {
  const f: Facts = {
    opts: o,
    now: Date.now(),
    registryKind: o.registry.kind,
    registryError: null,
    registryLatencyMs: null,
    configText: null,
    config: null,
    configError: null,
    leases: [],
    ext: null,
    extError: null,
    subnetEnv: null,
    subnetEnvError: null,
    backendType: null,
    own: null,
    peers: [],
  };
  const t = o.registryTimeoutMs ?? 5000;
  let r: Registry | null = null;
  try {
    // Opening a KV path that does not exist would create an empty registry: say so instead.
    if (o.registry.kind === "kv" && o.registry.kvPath) {
      try {
        Deno.statSync(o.registry.kvPath);
      } catch {
        throw new Error(`no Deno KV registry file at ${o.registry.kvPath}`);
      }
    }
    r = await withTimeout(openRegistry(o.registry), t, "opening the registry");
    f.configText = await withTimeout(r.getConfig(), t, "reading the network config");
    // Latency of a warm round trip: the first call also pays for connecting.
    const start = performance.now();
    const { leases } = await withTimeout(r.listLeases(), t, "listing the leases");
    f.registryLatencyMs = performance.now() - start;
    // Every lease, IPv6-only ones too: the config is not parsed yet, and the checks need them
    // all (an IPv6-only network has nothing else; a stray IPv6-only lease is worth naming).
    f.leases = new LeaseDecoder({ ipv6: true }).decodeAll(leases);
  } catch (e) {
    f.registryError = (e as Error).message;
  } finally {
    await r?.close().catch(() => {});
  }
  if (f.configText !== null) {
    try {
      f.config = parseNetworkConfig(f.configText);
    } catch (e) {
      f.configError = (e as Error).message;
    }
  }
  f.backendType = o.backendOverride || f.config?.backendType || null;
  try {
    // As the agent selects it: IPv6-only needs (and looks for) no IPv4 address.
    f.ext = await selectExternalInterface({
      ...o.iface,
      ipv6: f.config?.enableIPv6 ?? false,
      ipv4: f.config?.enableIPv4 ?? true,
    });
  } catch (e) {
    f.extError = (e as Error).message;
  }
  try {
    f.subnetEnv = await readSubnetEnv(o.subnetFile);
  } catch (e) {
    f.subnetEnvError = (e as Error).message;
  }
  f.own = ownLease(f);
  const ipv6 = f.config?.enableIPv6 ?? false;
  f.peers = f.leases.filter((l) =>
    l !== f.own && !namesOwnNode(f, l) && peerProblem(l, ipv6) === null &&
    f.backendType !== null && leaseMatches(f.backendType, l) && peerSelected(l, o.peer)
  );
  return f;
}

/**
 * Whether `l` names this node: by PublicIP, or by PublicIPv6 in an IPv6-only network (its
 * leases all say `"PublicIP":"0.0.0.0"`), as the agent tells its own leases apart.
 */
function namesOwnNode(f: Facts, l: KnownLease): boolean {
  if (!f.ext) return false;
  if (f.config && !f.config.enableIPv4) {
    return !!f.ext.publicIPv6 && namesNode(f.config, l, f.ext.publicIPv6);
  }
  return l.attrs.publicIP === f.ext.publicIP;
}

/** This node's lease: the one of subnet.env naming this node, else any naming it. */
function ownLease(f: Facts): KnownLease | null {
  const mine = f.leases.filter((l) => namesOwnNode(f, l));
  const env = f.subnetEnv;
  const same = (l: KnownLease) =>
    !!env &&
    (env.subnet.prefix > 0
      ? formatCidr(l.subnet) === formatCidr(env.subnet)
      : !!l.subnet6 && !!env.ipv6 && sameNet6(l.subnet6, env.ipv6.subnet));
  return mine.find(same) ?? mine[0] ?? null;
}
