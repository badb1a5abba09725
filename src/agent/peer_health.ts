/**
 * Continuous peer health: every interval (jittered ±10 %, so nodes restarted together do not probe
 * in step) the agent sends a few ICMP echoes over the overlay to up to `maxPerRound` peers, taking
 * them in turn round the sorted peer list, so every peer is probed within ⌈N / max⌉ rounds. It
 * exports `weft_peer_reachable{subnet,public_ip}`, `weft_peer_rtt_seconds{…}` and
 * `weft_peers_unreachable`, drops the series of peers that are gone, and logs a peer once per
 * change (unreachable, reachable again), never every round. Readiness never depends on it: one bad
 * peer must not take a node out of service. The prober is the doctor's (src/health/probe.ts).
 * Each peer is probed on its IPv4 overlay address, or its IPv6 one when it has no IPv4 half
 * (IPv6-only). A host-gw peer without pods has no bridge, so nothing holds `<subnet>.1`: when
 * that address is silent but the host answers on the underlay, the peer is in the state "no pod
 * address to probe", not unreachable (no `weft_peer_reachable` series; counted in
 * `weft_peers_without_pod_address`, not in `weft_peers_unreachable`).
 *
 * @example
 * ```ts
 * const h = new PeerHealth({ intervalMs: 30_000, maxPerRound: 256, backend: "vxlan",
 *   peers: () => watcher.peers() });
 * await h.run(signal); // h.status() lists each peer's reachability, RTT and last probe
 * ```
 */
import { getLogger } from "@logtape/logtape";
import { sleep } from "../base/async.ts";
import { metrics } from "../base/metrics.ts";
import type { Lease } from "../lease/codec.ts";
import { IcmpProber, type ProbeOptions, type Prober } from "../health/probe.ts";
import { overlayTargets, type ProbeTarget } from "../health/targets.ts";
import { mapLimit } from "../health/parallel.ts";

const log = getLogger(["weft", "peer-health"]);

const reachableGauge = metrics.gauge(
  "weft_peer_reachable",
  "1 when the peer answered the last overlay probe, 0 when it did not (per peer lease).",
);
const rttGauge = metrics.gauge(
  "weft_peer_rtt_seconds",
  "Mean round-trip time of the last overlay probe to the peer that answered.",
);
const unreachableGauge = metrics.gauge(
  "weft_peers_unreachable",
  "Peers whose last overlay probe got no answer.",
);
const noPodGauge = metrics.gauge(
  "weft_peers_without_pod_address",
  "host-gw peers whose pod bridge address does not answer while the host does on the underlay " +
    "(no pods there yet): not counted as unreachable.",
);
const rounds = metrics.counter("weft_peer_probe_rounds_total", "Peer probe rounds run.");
const probes = metrics.counter("weft_peer_probes_total", "Peers probed (a few echoes each).");

/** A few echoes per peer, each bounded: a peer is reachable when any comes back. */
export const PEER_PROBE: ProbeOptions = { count: 3, intervalMs: 100, timeoutMs: 1000, size: 84 };
/** Jitter of the interval: each delay lies in interval × [1 − JITTER, 1 + JITTER]. */
export const JITTER = 0.1;

export interface PeerHealthOptions {
  /** Between round starts, before jitter; must be > 0 (0 means off: do not construct). */
  intervalMs: number;
  maxPerRound: number;
  /** The backend's name (the address a peer answers on depends on it). */
  backend: string;
  peers: () => readonly Lease[];
  /**
   * host-gw: when a peer's bridge address is silent, probe its public IP too, to tell "no pod
   * address to probe" (the host answers) from unreachable. Off by default; the agent turns it on.
   */
  underlayCheck?: boolean;
  /** Default: an ICMP raw socket (root). */
  prober?: () => Prober;
  /** Default Math.random; tests pin it. */
  random?: () => number;
  probe?: ProbeOptions;
}

export interface PeerStatus {
  subnet: string;
  publicIP: string;
  /** The overlay address probed. */
  address: string;
  /** null until its first probe, and while {@link PeerStatus.noPodAddress}. */
  reachable: boolean | null;
  /** host-gw: the pod bridge address is silent, the host answers on the underlay (no pods). */
  noPodAddress?: boolean;
  /** Mean RTT of the last probe that got answers; null when it got none. */
  rttMs: number | null;
  /** Epoch ms of the last probe; null before the first. */
  lastProbe: number | null;
  /** Epoch ms when `reachable` last changed. */
  since: number | null;
  /** Why the last probe could not be sent (socket error); null when it could. */
  error: string | null;
}

/** The delay before the next round: interval × [1 − JITTER, 1 + JITTER] for r in [0, 1). */
export function jitteredInterval(intervalMs: number, r: number): number {
  return intervalMs * (1 - JITTER + 2 * JITTER * r);
}

/**
 * The next round's peers: up to `max` of `peers` sorted by subnet, starting after `cursor` (the
 * subnet probed last; null: from the start) and wrapping round, each at most once.
 */
export function nextBatch<T extends { subnet: string }>(
  peers: readonly T[],
  cursor: string | null,
  max: number,
): T[] {
  const sorted = [...peers].sort((a, b) => a.subnet < b.subnet ? -1 : a.subnet > b.subnet ? 1 : 0);
  const start = cursor === null ? 0 : sorted.findIndex((p) => p.subnet > cursor);
  const from = start < 0 ? 0 : start;
  const out: T[] = [];
  for (let i = 0; i < Math.min(max, sorted.length); i++) {
    out.push(sorted[(from + i) % sorted.length]);
  }
  return out;
}

interface Peer {
  subnet: string;
  lease: Lease;
}

/** The one target a peer is probed on: its IPv4 overlay address, else its IPv6 one. */
export function probeTarget(backend: string, l: Lease): ProbeTarget | null {
  return overlayTargets(backend, l)[0] ?? null;
}

export class PeerHealth {
  #state = new Map<string, PeerStatus>();
  #cursor: string | null = null;
  #random: () => number;

  constructor(readonly opts: PeerHealthOptions) {
    if (!(opts.intervalMs > 0)) throw new RangeError(`peer probe interval ${opts.intervalMs} ms`);
    this.#random = opts.random ?? Math.random;
  }

  /** Every known peer's state, sorted by subnet (peers not probed yet included). */
  status(): PeerStatus[] {
    return [...this.#state.values()].sort((a, b) => a.subnet < b.subnet ? -1 : 1);
  }

  /**
   * Probes rounds until `signal` aborts; the first round after a random part of the interval.
   * Each round opens its own prober: a raw ICMP socket receives every ICMP message of the
   * namespace, so one held open between rounds would fill with other traffic's.
   */
  async run(signal: AbortSignal): Promise<void> {
    const open = this.opts.prober ?? (() => new IcmpProber());
    let openError = "";
    let delay = this.opts.intervalMs * this.#random();
    while (!signal.aborted) {
      await sleep(delay, signal);
      if (signal.aborted) break;
      const started = performance.now();
      let prober: Prober | null = null;
      try {
        prober = open();
        if (openError) log.info("peer probes work again");
        openError = "";
      } catch (e) {
        // Probing is diagnostics: without it the agent still serves. Logged once per cause.
        const msg = (e as Error).message;
        if (msg !== openError) {
          log.error("peer probes off: {error}; retried every round", { error: msg });
        }
        openError = msg;
      }
      if (prober) {
        try {
          await this.round(prober);
        } finally {
          prober.close();
        }
      }
      const next = jitteredInterval(this.opts.intervalMs, this.#random());
      delay = Math.max(0, next - (performance.now() - started));
    }
  }

  /** One round: forget peers that are gone, probe the next batch, update metrics and logs. */
  async round(prober: Prober): Promise<void> {
    const peers = this.sync();
    const batch = nextBatch(peers, this.#cursor, this.opts.maxPerRound);
    if (batch.length === 0) return;
    this.#cursor = batch[batch.length - 1].subnet;
    rounds.inc();
    probes.inc(batch.length);
    const o = this.opts.probe ?? PEER_PROBE;
    await mapLimit(batch, batch.length, async (p) => {
      const s = this.#state.get(p.subnet)!;
      try {
        const r = await prober.probe(s.address, o);
        if (r.received === 0 && this.opts.backend === "host-gw" && this.opts.underlayCheck) {
          // Silent bridge address: a host without pods, or a host that is down?
          const under = await prober.probe(s.publicIP, { ...o, count: Math.min(o.count, 2) });
          if (under.received > 0) {
            this.recordNoPodAddress(p.subnet, Date.now());
            return;
          }
        }
        const rtt = r.rttMs.length ? r.rttMs.reduce((a, b) => a + b, 0) / r.rttMs.length : null;
        this.record(p.subnet, r.received > 0, rtt, Date.now());
      } catch (e) {
        s.error = `cannot probe ${s.address}: ${(e as Error).message}`;
        log.debug("{error}", { error: s.error });
      }
    });
  }

  /**
   * Brings the peer states in line with the watcher's peers: new peers are added (not probed
   * yet); peers that are gone, or whose lease names another public IP, lose their state and
   * metric series. Returns the current peers.
   */
  sync(): Peer[] {
    const now = new Map<string, { lease: Lease; t: ProbeTarget }>();
    for (const lease of this.opts.peers()) {
      const t = probeTarget(this.opts.backend, lease);
      if (t) now.set(t.subnet, { lease, t });
    }
    for (const [subnet, s] of this.#state) {
      const l = now.get(subnet);
      if (l && l.t.publicIP === s.publicIP) continue;
      this.#forget(s);
    }
    for (const [subnet, { t }] of now) {
      if (this.#state.has(subnet)) continue;
      this.#state.set(subnet, {
        subnet,
        publicIP: t.publicIP,
        address: t.address,
        reachable: null,
        noPodAddress: false,
        rttMs: null,
        lastProbe: null,
        since: null,
        error: null,
      });
    }
    this.#countUnreachable();
    return [...now].map(([subnet, { lease }]) => ({ subnet, lease }));
  }

  /**
   * Records one probe's outcome for a known peer: metrics always, a log line only when the
   * reachability changed (a first probe only when unreachable). Returns whether it logged.
   */
  record(subnet: string, reachable: boolean, rttMs: number | null, at: number): boolean {
    const s = this.#state.get(subnet);
    if (!s) return false; // gone while probed
    const was = s.reachable;
    s.reachable = reachable;
    s.noPodAddress = false;
    s.rttMs = reachable ? rttMs : null;
    s.lastProbe = at;
    s.error = null;
    const labels = { subnet, public_ip: s.publicIP };
    reachableGauge.set(reachable ? 1 : 0, labels);
    if (reachable && rttMs !== null) rttGauge.set(rttMs / 1000, labels);
    else rttGauge.delete(labels);
    this.#countUnreachable();
    if (was === reachable) return false;
    s.since = at;
    const what = { subnet, ip: s.publicIP, addr: s.address };
    if (!reachable) {
      log.warn(
        "peer {subnet} ({ip}) unreachable: no answer from {addr} over the overlay; " +
          "run weft doctor --peer {subnet} to see why",
        what,
      );
    } else if (was === false) log.info("peer {subnet} ({ip}) reachable again", what);
    return was !== null || !reachable;
  }

  /**
   * Records a host-gw peer whose bridge address is silent while the host answers: not
   * unreachable, no reachability series; logged once when it enters that state.
   */
  recordNoPodAddress(subnet: string, at: number): void {
    const s = this.#state.get(subnet);
    if (!s) return;
    const was = s.noPodAddress;
    Object.assign(s, {
      reachable: null,
      noPodAddress: true,
      rttMs: null,
      lastProbe: at,
      error: null,
    });
    const labels = { subnet, public_ip: s.publicIP };
    reachableGauge.delete(labels);
    rttGauge.delete(labels);
    this.#countUnreachable();
    if (was) return;
    s.since = at;
    log.info(
      "peer {subnet} ({ip}): no pod address to probe ({addr} does not answer, the host does " +
        "on the underlay: no pods there yet?)",
      { subnet, ip: s.publicIP, addr: s.address },
    );
  }

  #forget(s: PeerStatus): void {
    this.#state.delete(s.subnet);
    const labels = { subnet: s.subnet, public_ip: s.publicIP };
    reachableGauge.delete(labels);
    rttGauge.delete(labels);
  }

  #countUnreachable(): void {
    let n = 0;
    let noPod = 0;
    for (const s of this.#state.values()) {
      if (s.reachable === false) n++;
      if (s.noPodAddress) noPod++;
    }
    unreachableGauge.set(n);
    noPodGauge.set(noPod);
  }
}
