/**
 * ICMP echo probes over one raw socket, many in flight at once: `probe(dst, …)` sends `count`
 * echoes of an exact size (optionally don't-fragment) and resolves with what came back, each
 * bounded by a timeout. A shared receive loop matches replies by id and sequence number, so 500
 * peers probed in parallel ({@link mapLimit} in parallel.ts) share one socket and finish in about one timeout.
 *
 * Shared by `weft doctor` (src/doctor/reach_checks.ts) and the agent's continuous peer health
 * (src/agent/peer_health.ts): open one {@link IcmpProber} per batch of probes, call `probe` per
 * peer, then `close()` (the raw socket queues every ICMP message of the namespace while open).
 * IPv6 addresses are probed with ICMPv6 over a second socket, opened on the first IPv6 probe.
 * Which address to probe for a peer is targets.ts's.
 *
 * @example
 * ```ts
 * const p = new IcmpProber();
 * const r = await p.probe("198.19.5.0", { count: 3, intervalMs: 100, timeoutMs: 1000, size: 84 });
 * p.close(); // r.received, r.rttMs
 * ```
 */
import { type IcmpSocket, openIcmpSocket } from "../../ffi/libc/icmp.ts";
import { ICMP6_PACKET_TOO_BIG, type Icmp6Socket, openIcmp6Socket } from "../../ffi/libc/icmp6.ts";
import { formatIp, parseIp } from "../base/ipv4.ts";
import { formatIp6, isIp6, parseIp6 } from "../base/ipv6.ts";
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
  /** The probed address as text (either family). */
  dst: string;
  sentAt: number;
  done: (rtt: number | null, mtu?: number) => void;
}

/**
 * Sends one echo request (id, seq, IP size) some other way than the prober's own socket (e.g.
 * wrapped in a VXLAN frame, see vxlan_probe.ts); false when it could not be sent.
 */
export type EchoSender = (id: number, seq: number, size: number) => boolean;

/** What probes a peer: {@link IcmpProber}, or a fake in tests. */
export interface Prober {
  /** Echoes to `dst` (IPv4 or IPv6), sent by `send` when given; replies read by the prober. */
  probe(dst: string, o: ProbeOptions, send?: EchoSender): Promise<ProbeResult>;
  close(): void;
}

export class IcmpProber implements Prober {
  #sock: IcmpSocket;
  /** Opened on the first IPv6 probe: an IPv4-only network never opens one. */
  #sock6: Icmp6Socket | null = null;
  #id = crypto.getRandomValues(new Uint16Array(1))[0];
  #seq = 0;
  #pending = new Map<number, Pending>();
  #loop: Promise<void> | null = null;

  constructor() {
    this.#sock = openIcmpSocket();
  }

  async probe(dst: string, o: ProbeOptions, send?: EchoSender): Promise<ProbeResult> {
    const v6 = isIp6(dst);
    const ip = v6 ? 0 : parseIp(dst);
    const ip6 = v6 ? parseIp6(dst) : 0n;
    const key = v6 ? formatIp6(ip6) : dst;
    if (v6) this.#sock6 ??= openIcmp6Socket();
    const sendEcho = send ??
      ((id: number, seq: number, size: number) =>
        v6
          ? this.#sock6!.sendEcho(ip6, { id, seq, size, df: o.df ?? false })
          : this.#sock.sendEcho(ip, { id, seq, size, df: o.df ?? false }));
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
        this.#pending.set(seq, { dst: key, sentAt: performance.now(), done: finish });
      });
      if (!sendEcho(this.#id, seq, o.size)) {
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
      if (m.kind === "reply") this.#settle(m.id, m.seq, formatIp(m.from));
      else this.#settle(m.id, m.seq, formatIp(m.dst), true, m.code === 4 ? m.mtu : undefined);
    }
    for (let m = this.#sock6?.recv(); m; m = this.#sock6!.recv()) {
      // A peer's VTEP address `<IPv6 subnet>::` is also the subnet-router anycast address of its
      // pod bridge's prefix, and Linux answers an echo to an anycast address from another of its
      // addresses: an IPv6 reply is matched by our id and sequence number alone.
      if (m.kind === "reply") this.#settle(m.id, m.seq, null);
      else {
        const mtu = m.type === ICMP6_PACKET_TOO_BIG ? m.mtu : undefined;
        this.#settle(m.id, m.seq, formatIp6(m.dst), true, mtu);
      }
    }
  }

  /** A reply from `addr` (or an error about our echo to `addr`) settles the probe it answers. */
  #settle(id: number, seq: number, addr: string | null, error = false, mtu?: number): void {
    if (id !== this.#id) return;
    const p = this.#pending.get(seq);
    if (!p || (addr !== null && p.dst !== addr)) return;
    if (error) p.done(null, mtu);
    else p.done(performance.now() - p.sentAt);
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
    this.#sock6?.close();
  }
}

/** "3/3, rtt 0.4 ms" for a result. */
export function describeProbe(r: ProbeResult): string {
  const avg = r.rttMs.length ? r.rttMs.reduce((a, b) => a + b, 0) / r.rttMs.length : null;
  return `${r.received}/${r.sent}${avg !== null ? `, rtt ${avg.toFixed(2)} ms` : ""}`;
}
