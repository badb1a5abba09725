/**
 * One direction of the udp backend's packet loop: packets routed into the TUN are read in
 * batches (one read(2) each, since a TUN has no batch read), checked, TTL-decremented and handed
 * to {@link UdpSender} (udp_send.ts), which sends them to their peers with one sendmmsg(2) per
 * batch. With TUN offloads (vnetHdr) a read may be a TCP super-packet, cut here into
 * MTU-size segments with full checksums (see offload.ts). Packets to subnets without a peer get
 * an ICMP net-unreachable written back into the TUN. Sync FFI only: runs in a Worker.
 *
 * @example
 * ```ts
 * const pump = new TunToUdp({ tunFd, udpFd, port: 8285, table, counters, batchSize: 64 });
 * while (running) if (pump.step() < 64) pollTun();
 * ```
 */
import { Errno, errno, lastError, libc, MsgBatch } from "../../../ffi/libc/mod.ts";
import type { LibcSymbols } from "../../../ffi/libc/mod.ts";
import { BadPacket, buildNetUnreachable, decrementTtl, destination, ipv4Length } from "./packet.ts";
import {
  completeChecksum,
  GSO_ECN,
  GSO_NONE,
  GSO_TCPV4,
  readVnetHdr,
  TsoPlan,
  VNET_F_NEEDS_CSUM,
  VNET_HDR_LEN,
  type VnetHdr,
  writeTsoSegment,
} from "./offload.ts";
import { words } from "./checksum.ts";
import type { PeerTable } from "./peers.ts";
import { TX } from "./counters.ts";
import { UdpSender } from "./udp_send.ts";

export interface PumpOptions {
  tunFd: number;
  udpFd: number;
  /** Peers' UDP port (flannel: 8285). */
  port: number;
  table: PeerTable;
  counters: Float64Array;
  batchSize: number;
  /** Bytes per packet buffer: at least the TUN MTU. */
  slotSize: number;
  /** Send runs of equal-size packets to one peer with UDP GSO (UDP_SEGMENT); default true. */
  gso?: boolean;
  /**
   * The TUN was opened with IFF_VNET_HDR: every packet read or written carries a virtio_net_hdr,
   * reads may be TCP super-packets (TSO) and checksums may be left to us. Default false.
   */
  vnetHdr?: boolean;
}

/** #queue results. */
const QUEUED = 0;
const NO_PEER = 1;
const TTL_EXPIRED = 2;

export class TunToUdp {
  readonly #c: LibcSymbols;
  readonly #o: PumpOptions;
  readonly #b: MsgBatch;
  readonly #slotBig: bigint;
  readonly #tx: UdpSender;
  readonly #icmp = new Uint8Array(4096);
  readonly #icmpPtr: Deno.PointerObject;
  /** With vnetHdr: reads land here (header + packet) and are copied or cut into slots. */
  readonly #in: Uint8Array | null;
  readonly #inPtr: Deno.PointerObject | null;
  readonly #inBig: bigint;
  readonly #words: Uint32Array;
  readonly #vh: VnetHdr = {
    flags: 0,
    gsoType: 0,
    hdrLen: 0,
    gsoSize: 0,
    csumStart: 0,
    csumOffset: 0,
  };
  readonly #plan = new TsoPlan();
  /** Where the ICMP message starts in #icmp (after a zero virtio_net_hdr with vnetHdr). */
  readonly #icmpOff: number;

  constructor(o: PumpOptions) {
    this.#c = libc();
    this.#o = o;
    this.#b = new MsgBatch(o.batchSize, o.slotSize, o.port);
    this.#slotBig = BigInt(o.slotSize);
    this.#tx = new UdpSender(this.#b, o);
    this.#icmpPtr = Deno.UnsafePointer.of(this.#icmp)!;
    this.#words = words(this.#b.data);
    if (o.vnetHdr) {
      // A TSO read is at most 64 KiB of IP packet after the header.
      this.#in = new Uint8Array(VNET_HDR_LEN + 65536);
      this.#inPtr = Deno.UnsafePointer.of(this.#in)!;
      this.#inBig = BigInt(this.#in.length);
      this.#icmpOff = VNET_HDR_LEN;
      o.counters[TX.VNET_HDR] = 1;
    } else {
      this.#in = this.#inPtr = null;
      this.#inBig = 0n;
      this.#icmpOff = 0;
    }
  }

  /**
   * Reads up to one batch from the TUN and sends what is routable. Returns packets read: fewer
   * than the batch size means the TUN queue is empty (wait in poll before the next step).
   */
  step(): number {
    this.#tx.newStep();
    if (this.#in) return this.#stepVnet();
    const c = this.#c, o = this.#o, b = this.#b, data = b.data;
    const size = b.size, slot = o.slotSize;
    let read = 0, k = 0, malformed = 0, notV4 = 0, ttl = 0;
    while (read < size) {
      // A dropped packet's slot is reused, so slots [0, k) are exactly the ones to send.
      const n = c.read(o.tunFd, b.slotPtr[k], this.#slotBig);
      if (n < 0) {
        const e = errno();
        if (e === Errno.EAGAIN) break;
        if (e === Errno.EINTR) continue;
        throw lastError("read", `TUN fd ${o.tunFd}`, {
          EBADFD: "the TUN device was deleted; the backend must recreate it",
          EBADF: "the TUN fd was closed while the forwarder ran",
        });
      }
      read++;
      const off = k * slot;
      const len = ipv4Length(data, off, n);
      if (len < 0) {
        if (len === BadPacket.NOT_IPV4) notV4++;
        else malformed++;
        continue;
      }
      const q = this.#queue(k, len);
      if (q === QUEUED) k++;
      else if (q === TTL_EXPIRED) ttl++;
    }
    const cnt = o.counters;
    cnt[TX.TUN_PACKETS] += read;
    if (malformed) cnt[TX.MALFORMED] += malformed;
    if (notV4) cnt[TX.NOT_IPV4] += notV4;
    if (ttl) cnt[TX.TTL] += ttl;
    if (k > 0) this.#tx.send(k);
    return read;
  }

  /**
   * step() for a TUN with virtio_net_hdr: each read goes to #in; an ordinary packet is copied to
   * its slot (its checksum completed when the kernel left it to us), a TCP super-packet is cut
   * into MTU-size segments, one slot each; a full batch of slots is sent before cutting on.
   */
  #stepVnet(): number {
    const c = this.#c, o = this.#o, b = this.#b, data = b.data, table = o.table;
    const inBuf = this.#in!, inPtr = this.#inPtr!, inBig = this.#inBig, vh = this.#vh;
    const size = b.size, slot = o.slotSize, tx = this.#tx;
    const plan = this.#plan, dw = this.#words;
    let read = 0, k = 0, malformed = 0, notV4 = 0, ttl = 0, tso = 0, segs = 0;
    while (read < size) {
      const n = c.read(o.tunFd, inPtr, inBig);
      if (n < 0) {
        const e = errno();
        if (e === Errno.EAGAIN) break;
        if (e === Errno.EINTR) continue;
        if (e === Errno.EINVAL) {
          // The kernel could not describe a queued packet in a virtio_net_hdr; it dropped it.
          read++;
          malformed++;
          continue;
        }
        throw lastError("read", `TUN fd ${o.tunFd}`, {
          EBADFD: "the TUN device was deleted; the backend must recreate it",
          EBADF: "the TUN fd was closed while the forwarder ran",
        });
      }
      read++;
      if (n <= VNET_HDR_LEN) {
        malformed++;
        continue;
      }
      readVnetHdr(inBuf, 0, vh);
      const pl = n - VNET_HDR_LEN;
      const len = ipv4Length(inBuf, VNET_HDR_LEN, pl);
      if (len < 0) {
        if (len === BadPacket.NOT_IPV4) notV4++;
        else malformed++;
        continue;
      }
      const gso = vh.gsoType & ~GSO_ECN;
      if (gso === GSO_NONE) {
        if (k === size) {
          this.#tx.send(k);
          k = 0;
        }
        const off = k * slot;
        data.set(inBuf.subarray(VNET_HDR_LEN, VNET_HDR_LEN + len), off);
        if (
          (vh.flags & VNET_F_NEEDS_CSUM) &&
          !completeChecksum(data, dw, off, len, vh.csumStart, vh.csumOffset)
        ) {
          malformed++;
          continue;
        }
        const q = this.#queue(k, len);
        if (q === QUEUED) k++;
        else if (q === TTL_EXPIRED) ttl++;
        continue;
      }
      // A super-packet: only TCP/IPv4 is offloaded to us (TUN_F_TSO4).
      if (gso !== GSO_TCPV4 || !plan.plan(inBuf, VNET_HDR_LEN, len, vh.gsoSize)) {
        malformed++;
        continue;
      }
      const peer = table.lookup(destination(inBuf, VNET_HDR_LEN));
      if (peer < 0) {
        o.counters[TX.NO_ROUTE]++;
        // The ICMP quotes the first bytes only: the super-packet's own header serves.
        const m = buildNetUnreachable(inBuf, VNET_HDR_LEN, len, this.#icmp, this.#icmpOff);
        if (m > 0 && this.#writeIcmp(m)) o.counters[TX.ICMP_SENT]++;
        continue;
      }
      if (!decrementTtl(inBuf, VNET_HDR_LEN)) {
        ttl++;
        continue;
      }
      tso++;
      for (let i = 0; i < plan.count; i++) {
        if (k === size) {
          this.#tx.send(k);
          k = 0;
        }
        tx.set(k, writeTsoSegment(inBuf, plan, i, data, dw, k * slot), peer);
        k++;
      }
      segs += plan.count;
    }
    const cnt = o.counters;
    cnt[TX.TUN_PACKETS] += read;
    if (malformed) cnt[TX.MALFORMED] += malformed;
    if (notV4) cnt[TX.NOT_IPV4] += notV4;
    if (ttl) cnt[TX.TTL] += ttl;
    if (tso) {
      cnt[TX.TSO_PACKETS] += tso;
      cnt[TX.TSO_SEGMENTS] += segs;
    }
    if (k > 0) this.#tx.send(k);
    return read;
  }

  /**
   * Queues the checked `len`-byte packet in slot k for its peer (TTL decremented), or answers it
   * with ICMP net-unreachable when no peer owns its destination. Returns what happened.
   */
  #queue(k: number, len: number): number {
    const o = this.#o, data = this.#b.data, off = k * o.slotSize;
    const peer = o.table.lookup(destination(data, off));
    if (peer < 0) {
      // Rare path: count before the ICMP goes out, so whoever sees it sees the count too.
      o.counters[TX.NO_ROUTE]++;
      if (this.#unreachable(off, len)) o.counters[TX.ICMP_SENT]++;
      return NO_PEER;
    }
    if (!decrementTtl(data, off)) return TTL_EXPIRED;
    this.#tx.set(k, len, peer);
    return QUEUED;
  }

  /** Writes an ICMP net-unreachable for the packet at `off` into the TUN; true when written. */
  #unreachable(off: number, len: number): boolean {
    const m = buildNetUnreachable(this.#b.data, off, len, this.#icmp, this.#icmpOff);
    return m > 0 && this.#writeIcmp(m);
  }

  /** Writes the `m`-byte ICMP message in #icmp (behind a zero virtio_net_hdr with vnetHdr). */
  #writeIcmp(m: number): boolean {
    const total = this.#icmpOff + m;
    // A failed write here only loses the error message; the original is dropped either way.
    return this.#c.write(this.#o.tunFd, this.#icmpPtr, BigInt(total)) === total;
  }
}
