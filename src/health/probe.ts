/**
 * ICMP echo probes over one raw socket, many in flight at once: `probe(dst, …)` sends `count`
 * echoes of an exact size (optionally don't-fragment) and resolves with what came back, each
 * bounded by a timeout. A shared receive loop matches replies by id and sequence number, so 500
 * peers probed in parallel ({@link mapLimit} in parallel.ts) share one socket and finish in about one timeout.
 *
 * Shared by `weft doctor` (src/doctor/reach_checks.ts) and the agent's continuous peer health
 * (src/agent/peer_health.ts): open one {@link IcmpProber} per batch of probes, call `probe` per
 * peer, then `close()` (the raw socket queues every ICMP message of the namespace while open).
 *
 * @example
 * ```ts
 * const p = new IcmpProber();
 * const r = await p.probe("198.19.5.0", { count: 3, intervalMs: 100, timeoutMs: 1000, size: 84 });
 * p.close(); // r.received, r.rttMs
 * ```
 */
import { type IcmpSocket, openIcmpSocket } from "../../ffi/libc/icmp.ts";
import { formatIp, parseIp } from "../base/ipv4.ts";
import { gatewayOf } from "../config/subnet_env.ts";
import type { Lease } from "../lease/codec.ts";
import { sleep } from "../base/async.ts";

export interface ProbeOptions {
  count: number;
  intervalMs: number;
  /** Per echo. */
  timeoutMs: number;
  /** Total IP packet size. */
  size: number;
  df?: boolean;
}

export interface ProbeResult {
  dst: string;
  sent: number;
  received: number;
  rttMs: number[];
  /** The kernel refused the size locally (EMSGSIZE: bigger than the route's MTU). */
  tooBig: boolean;
  /** A router answered "fragmentation needed" with this next-hop MTU. */
  fragNeededMtu: number | null;
}

interface Pending {
  dst: number;
  sentAt: number;
  done: (rtt: number | null, mtu?: number) => void;
}

/** What probes a peer: {@link IcmpProber}, or a fake in tests. */
export interface Prober {
  probe(dst: string, o: ProbeOptions): Promise<ProbeResult>;
  close(): void;
}

/**
 * The address a peer answers on over the overlay: its device's `<subnet>.0/32` (vxlan's VTEP,
 * udp's flannel0) or, for host-gw (no device of its own), its pods' bridge `<subnet>.1`.
 */
export function overlayAddress(backend: string, l: Lease): string {
  return backend === "host-gw" ? gatewayOf(l.subnet) : formatIp(l.subnet.ip);
}

export class IcmpProber implements Prober {
  #sock: IcmpSocket;
  #id = crypto.getRandomValues(new Uint16Array(1))[0];
  #seq = 0;
  #pending = new Map<number, Pending>();
  #loop: Promise<void> | null = null;

  constructor() {
    this.#sock = openIcmpSocket();
  }

  async probe(dst: string, o: ProbeOptions): Promise<ProbeResult> {
    const ip = parseIp(dst);
    const r: ProbeResult = {
      dst,
      sent: 0,
      received: 0,
      rttMs: [],
      tooBig: false,
      fragNeededMtu: null,
    };
    const waits: Promise<void>[] = [];
    for (let i = 0; i < o.count; i++) {
      if (i > 0) await sleep(o.intervalMs);
      const seq = this.#seq = (this.#seq + 1) & 0xffff;
      const answered = new Promise<void>((resolve) => {
        // A reply already queued when the time is up counts: read the socket before giving up.
        const timer = setTimeout(() => {
          this.#drain();
          if (this.#pending.has(seq)) finish(null);
        }, o.timeoutMs);
        const finish = (rtt: number | null, mtu?: number) => {
          clearTimeout(timer);
          this.#pending.delete(seq);
          if (rtt !== null) {
            r.received++;
            r.rttMs.push(rtt);
          }
          if (mtu !== undefined) r.fragNeededMtu = mtu;
          resolve();
        };
        this.#pending.set(seq, { dst: ip, sentAt: performance.now(), done: finish });
      });
      if (!this.#sock.sendEcho(ip, { id: this.#id, seq, size: o.size, df: o.df ?? false })) {
        r.tooBig = true;
        this.#pending.get(seq)?.done(null);
        await answered;
        break;
      }
      r.sent++;
      waits.push(answered);
      this.#loop ??= this.#receive();
    }
    await Promise.all(waits);
    return r;
  }

  /** Reads every queued message and settles the probes they answer. */
  #drain(): void {
    for (let m = this.#sock.recv(); m; m = this.#sock.recv()) {
      if (m.id !== this.#id) continue;
      const p = this.#pending.get(m.seq);
      if (!p) continue;
      if (m.kind === "reply" && m.from === p.dst) p.done(performance.now() - p.sentAt);
      else if (m.kind === "unreachable" && m.dst === p.dst) {
        p.done(null, m.code === 4 ? m.mtu : undefined);
      }
    }
  }

  /** Drains the socket while anything is pending (the socket is non-blocking; 5 ms steps). */
  async #receive(): Promise<void> {
    try {
      while (this.#pending.size > 0) {
        this.#drain();
        await sleep(5);
      }
    } finally {
      this.#loop = null;
    }
  }

  close(): void {
    for (const p of [...this.#pending.values()]) p.done(null);
    this.#sock.close();
  }
}

/** "3/3, rtt 0.4 ms" for a result. */
export function describeProbe(r: ProbeResult): string {
  const avg = r.rttMs.length ? r.rttMs.reduce((a, b) => a + b, 0) / r.rttMs.length : null;
  return `${r.received}/${r.sent}${avg !== null ? `, rtt ${avg.toFixed(2)} ms` : ""}`;
}
