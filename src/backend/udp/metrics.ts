/**
 * Publishes the packet workers' counters as Prometheus counters. The workers count in shared
 * memory; `sync()` adds what changed since the last call to the process-wide registry, so call
 * it before each scrape (or on a timer). The metrics registry's counters only increment, hence
 * deltas; a new forwarder (counters back at 0) is detected and counted from 0 again.
 *
 * @example
 * ```ts
 * const m = new ForwarderMetrics(() => fwd.counters());
 * m.sync(); // then metrics.render() includes weft_udp_tx_packets_total etc.
 * ```
 */
import { metrics } from "../../base/metrics.ts";
import type { DropReason, ForwarderCounters } from "./counters.ts";

const txPackets = metrics.counter(
  "weft_udp_tx_packets_total",
  "Packets read from the TUN and sent to peers as udp datagrams.",
);
const txBytes = metrics.counter("weft_udp_tx_bytes_total", "Bytes of packets sent to peers.");
const rxPackets = metrics.counter(
  "weft_udp_rx_packets_total",
  "Packets received from peers and written into the TUN.",
);
const rxBytes = metrics.counter("weft_udp_rx_bytes_total", "Bytes of packets written to the TUN.");
const icmpSent = metrics.counter(
  "weft_udp_icmp_unreachable_sent_total",
  "ICMP net-unreachable messages written back for packets to subnets without a peer.",
);
const dropped = metrics.counter(
  "weft_udp_dropped_packets_total",
  "Packets dropped by the udp forwarder, by reason (no_route: no peer owns the destination; " +
    "not_member: datagram from an address that is no peer; malformed; not_ipv4; bad_checksum: " +
    "inner IPv4 header checksum wrong; ttl: TTL " +
    "expired; send_error; tun_write_error).",
);

const tsoPackets = metrics.counter(
  "weft_udp_tun_tso_packets_total",
  "TCP super-packets read from the TUN (TUN offloads) and cut into datagram-size segments.",
);
const tsoSegments = metrics.counter(
  "weft_udp_tun_tso_segments_total",
  "Segments cut from TCP super-packets read from the TUN.",
);
const coalesced = metrics.counter(
  "weft_udp_tun_coalesced_packets_total",
  "Super-packets written into the TUN, each merging several received TCP segments.",
);
const coalescedSegments = metrics.counter(
  "weft_udp_tun_coalesced_segments_total",
  "Received TCP segments merged into super-packets written into the TUN.",
);
const offloadActive = metrics.gauge(
  "weft_udp_tun_offload",
  "1 when the TUN carries virtio_net_hdr (TSO and coalescing on; Backend.TunOffload), else 0.",
);

type Flat = Record<string, number>;

function flatten(c: ForwarderCounters): Flat {
  const f: Flat = {
    txPackets: c.txPackets,
    txBytes: c.txBytes,
    rxPackets: c.rxPackets,
    rxBytes: c.rxBytes,
    icmp: c.icmpUnreachableSent,
    tso: c.tunOffload.tsoPackets,
    tsoSegs: c.tunOffload.tsoSegments,
    coal: c.tunOffload.coalescedPackets,
    coalSegs: c.tunOffload.coalescedSegments,
  };
  for (const [k, v] of Object.entries(c.drops)) f[`drop:${k}`] = v;
  return f;
}

export class ForwarderMetrics {
  #last: Flat | null = null;

  constructor(readonly read: () => ForwarderCounters) {}

  /** Adds the counters' growth since the previous sync to the registry. */
  sync(): void {
    const c = this.read();
    offloadActive.set(c.tunOffload.active ? 1 : 0);
    const now = flatten(c);
    const last = this.#last;
    const d = (k: string) => {
      const prev = last?.[k] ?? 0;
      // A smaller value means a new forwarder started counting from 0.
      return now[k] >= prev ? now[k] - prev : now[k];
    };
    const add = (
      c: { inc(by: number, l?: Record<string, string>): void },
      k: string,
      l?: Record<string, string>,
    ) => {
      const v = d(k);
      if (v > 0) c.inc(v, l);
    };
    add(txPackets, "txPackets");
    add(txBytes, "txBytes");
    add(rxPackets, "rxPackets");
    add(rxBytes, "rxBytes");
    add(icmpSent, "icmp");
    add(tsoPackets, "tso");
    add(tsoSegments, "tsoSegs");
    add(coalesced, "coal");
    add(coalescedSegments, "coalSegs");
    for (const k of Object.keys(now)) {
      if (k.startsWith("drop:")) add(dropped, k, { reason: k.slice(5) as DropReason });
    }
    this.#last = now;
  }
}
