/**
 * What `/status` reports (JSON): the own lease and its expiry, readiness and its reason, every
 * peer with reachability, RTT and last probe, the last warnings and errors logged, datapath
 * repairs, and the registry kind. `weft status` prints it as a table (src/cli/status.ts).
 *
 * @example
 * ```ts
 * const s: AgentStatus = agent.status(); // then { ...s, registry: "etcd" } in weft run
 * s.peers.filter((p) => p.reachable === false); // the peers that did not answer
 * ```
 */
import type { Readiness } from "./readiness.ts";
import type { PeerStatus } from "./peer_health.ts";
import type { LoggedProblem } from "../base/recent_log.ts";
import { type Lease, leaseAddressText, leaseSubnetText } from "../lease/codec.ts";
import { bySubnet as bySubnetOrder } from "../lease/allocate.ts";

export interface AgentStatus {
  /** Registry kind ("kv", "etcd"); set by `weft run`, which knows it. */
  registry?: string;
  backend: string | null;
  lease: {
    key: string;
    subnet: string;
    publicIP: string;
    /** ISO time; null for a reservation (no TTL). */
    expiresAt: string | null;
  } | null;
  readiness: Readiness;
  /** Peer probing: off (interval 0, or the alloc backend), or its interval and cap. */
  peerProbes: { intervalSeconds: number; maxPerRound: number } | null;
  /** Every peer lease the agent knows, with its last probe (null fields before the first). */
  peers: PeerView[];
  datapathRepairs: number;
  /** Newest last. */
  lastErrors: { at: string; level: string; logger: string; msg: string }[];
}

export interface PeerView {
  subnet: string;
  publicIP: string;
  reachable: boolean | null;
  /** host-gw: the pod bridge address is silent but the host answers (no pods): not unreachable. */
  noPodAddress?: boolean;
  rttMs: number | null;
  /** ISO time of the last probe. */
  lastProbe: string | null;
  /** ISO time of the last change of `reachable`. */
  since: string | null;
  error: string | null;
}

const iso = (ms: number | null): string | null => ms === null ? null : new Date(ms).toISOString();

/** One peer's view from its probe state. */
export function peerView(s: PeerStatus): PeerView {
  return {
    subnet: s.subnet,
    publicIP: s.publicIP,
    reachable: s.reachable,
    ...(s.noPodAddress ? { noPodAddress: true } : {}),
    rttMs: s.rttMs === null ? null : Math.round(s.rttMs * 1000) / 1000,
    lastProbe: iso(s.lastProbe),
    since: iso(s.since),
    error: s.error,
  };
}

/** The own lease as /status shows it. */
export function leaseView(l: Lease): NonNullable<AgentStatus["lease"]> {
  return {
    key: l.key,
    subnet: leaseSubnetText(l),
    publicIP: leaseAddressText(l),
    expiresAt: typeof l.expiresAt === "number" ? new Date(l.expiresAt).toISOString() : null,
  };
}

/** Every known peer lease, by address, with its probe state where it has one. */
export function peerViews(peers: readonly Lease[], probed: readonly PeerStatus[]): PeerView[] {
  const bySubnet = new Map(probed.map((s) => [s.subnet, s]));
  return [...peers].sort(bySubnetOrder).map((p) => {
    const subnet = leaseSubnetText(p);
    const publicIP = leaseAddressText(p);
    const s = bySubnet.get(subnet);
    // A probe state for another public IP is stale (the lease moved): not this lease's.
    return s && s.publicIP === publicIP ? peerView(s) : {
      subnet,
      publicIP,
      reachable: null,
      rttMs: null,
      lastProbe: null,
      since: null,
      error: null,
    };
  });
}

/** The problems ring as /status shows it. */
export function errorViews(list: readonly LoggedProblem[]): AgentStatus["lastErrors"] {
  return list.map((p) => ({ at: iso(p.at)!, level: p.level, logger: p.logger, msg: p.msg }));
}
