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
import { LeaseDecoder } from "../lease/decode.ts";
import { contains, formatCidr, isIp, parseCidr, parseIp, sameNet } from "../base/ipv4.ts";
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
  /** Every decodable IPv4 lease. */
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

/** Whether `peer` (a subnet or an address) names lease `l`. */
export function peerSelected(l: KnownLease, peer: string | undefined): boolean {
  if (!peer) return true;
  if (isIp(peer)) return l.attrs.publicIP === peer || contains(l.subnet, parseIp(peer));
  try {
    return sameNet(parseCidr(peer, true), l.subnet);
  } catch {
    return false;
  }
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
    f.leases = new LeaseDecoder().decodeAll(leases);
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
    f.ext = await selectExternalInterface(o.iface);
  } catch (e) {
    f.extError = (e as Error).message;
  }
  try {
    f.subnetEnv = await readSubnetEnv(o.subnetFile);
  } catch (e) {
    f.subnetEnvError = (e as Error).message;
  }
  f.own = ownLease(f);
  const ownIp = f.ext?.publicIP;
  f.peers = f.leases.filter((l) =>
    l !== f.own && l.attrs.publicIP !== ownIp && peerProblem(l) === null &&
    f.backendType !== null && leaseMatches(f.backendType, l) && peerSelected(l, o.peer)
  );
  return f;
}

/** This node's lease: the one of subnet.env with our public IP, else any with our public IP. */
function ownLease(f: Facts): KnownLease | null {
  const ip = f.ext?.publicIP;
  if (!ip) return null;
  const mine = f.leases.filter((l) => l.attrs.publicIP === ip);
  const env = f.subnetEnv?.subnet;
  return mine.find((l) => env && formatCidr(l.subnet) === formatCidr(env)) ?? mine[0] ?? null;
}
