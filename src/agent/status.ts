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
import { type PeerStatus, probeTarget } from "./peer_health.ts";
import type { LoggedProblem } from "../base/recent_log.ts";
import type { Lease } from "../lease/codec.ts";
import { formatCidr } from "../base/ipv4.ts";

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
  // IPv6-only: the IPv6 half (the IPv4 one is the empty network 0.0.0.0/0).
  const t = probeTarget("", l);
  return {
    key: l.key,
    subnet: t?.subnet ?? formatCidr(l.subnet),
    publicIP: t?.publicIP ?? l.attrs.publicIP,
    expiresAt: typeof l.expiresAt === "number" ? new Date(l.expiresAt).toISOString() : null,
  };
}

/** Every known peer lease, by address, with its probe state where it has one. */
export function peerViews(peers: readonly Lease[], probed: readonly PeerStatus[]): PeerView[] {
  const bySubnet = new Map(probed.map((s) => [s.subnet, s]));
  // By the address a peer is probed on: IPv4, or IPv6 for IPv6-only leases (0.0.0.0/0 each).
  const keyed = peers.map((l) => ({ l, t: probeTarget("", l) }));
  const order = (x: typeof keyed[0]) => [x.l.subnet.ip, x.l.subnet6?.ip ?? 0n] as const;
  keyed.sort((a, b) => {
    const [a4, a6] = order(a);
    const [b4, b6] = order(b);
    return a4 - b4 || (a6 < b6 ? -1 : a6 > b6 ? 1 : 0);
  });
  return keyed.map(({ l: p, t }) => {
    const subnet = t?.subnet ?? formatCidr(p.subnet);
    const publicIP = t?.publicIP ?? p.attrs.publicIP;
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
