/**
 * One direction of the udp backend's packet loop: packets routed into the TUN are read in
 * batches (one read(2) each, since a TUN has no batch read), checked, TTL-decremented and sent to
 * their peer with one sendmmsg(2) per batch, runs of equal-size packets to one peer as UDP GSO
 * messages. With TUN offloads (vnetHdr) a read may be a TCP super-packet, cut here into
 * MTU-size segments with full checksums (see offload.ts). Packets to subnets without a peer get
 * an ICMP net-unreachable written back into the TUN. Sync FFI only: runs in a Worker.
 *
 * @example
 * ```ts
 * const pump = new TunToUdp({ tunFd, udpFd, port: 8285, table, counters, batchSize: 64 });
 * while (running) if (pump.step() < 64) pollTun();
 * ```
 */
import {
  Errno,
  errno,
  lastError,
  libc,
  MsgBatch,
  POLLOUT,
  PollSet,
  SOCKADDR_IN_SIZE,
  UDP_MAX_SEGMENTS,
  writeSockaddrIn,
} from "../../../ffi/libc/mod.ts";
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

/** How long one step may wait for socket buffer space before dropping the rest (ms). */
const SEND_WAIT_MS = 200;
/** #queue results. */
const QUEUED = 0;
const NO_PEER = 1;
const TTL_EXPIRED = 2;
/** Largest UDP GSO payload: 65535 minus the IP and UDP headers, rounded down for options. */
const GSO_MAX_BYTES = 65000;

export class TunToUdp {
  readonly #c: LibcSymbols;
  readonly #o: PumpOptions;
  readonly #b: MsgBatch;
  readonly #slotBig: bigint;
  /** Per slot: packet length and peer; per message: first slot, packets, bytes. */
  readonly #lens: Int32Array;
  readonly #peers: Uint32Array;
  readonly #msgFirst: Int32Array;
  readonly #msgCount: Int32Array;
  readonly #msgBytes: Int32Array;
  readonly #icmp = new Uint8Array(4096);
  readonly #icmpPtr: Deno.PointerObject;
  readonly #sa = new Uint8Array(256);
  readonly #saView = new DataView(this.#sa.buffer);
  readonly #saPtr: Deno.PointerObject;
  readonly #out: PollSet;
  #gso: boolean;
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
  /** End of this step's wait for socket buffer space (one budget per step, set lazily). */
  #deadline = 0;

  constructor(o: PumpOptions) {
    this.#c = libc();
    this.#o = o;
    this.#b = new MsgBatch(o.batchSize, o.slotSize, o.port);
    this.#slotBig = BigInt(o.slotSize);
    this.#lens = new Int32Array(o.batchSize);
    this.#peers = new Uint32Array(o.batchSize);
    this.#msgFirst = new Int32Array(o.batchSize);
    this.#msgCount = new Int32Array(o.batchSize);
    this.#msgBytes = new Int32Array(o.batchSize);
    this.#icmpPtr = Deno.UnsafePointer.of(this.#icmp)!;
    writeSockaddrIn(this.#saView, 0, 0, o.port);
    this.#saPtr = Deno.UnsafePointer.of(this.#sa)!;
    this.#out = new PollSet([o.udpFd], POLLOUT);
    this.#gso = o.gso ?? true;
    if (!this.#gso) o.counters[TX.GSO_OFF] = 1;
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
    this.#deadline = 0;
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
    if (k > 0) this.#flush(this.#messages(k));
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
    const size = b.size, slot = o.slotSize, lens = this.#lens, peers = this.#peers;
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
          this.#flush(this.#messages(k));
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
          this.#flush(this.#messages(k));
          k = 0;
        }
        const l = writeTsoSegment(inBuf, plan, i, data, dw, k * slot);
        b.setLength(k, l);
        lens[k] = l;
        peers[k] = peer;
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
    if (k > 0) this.#flush(this.#messages(k));
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
    this.#b.setLength(k, len);
    this.#lens[k] = len;
    this.#peers[k] = peer;
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

  /**
   * Groups slots [0, k) into messages. With UDP GSO, a run of packets to the same peer, all of
   * the first one's length except possibly a shorter last one, becomes one message with a
   * UDP_SEGMENT cmsg: the kernel sends them as the same separate datagrams (same wire format),
   * but walks its UDP/IP output path once per run instead of once per packet. Returns the count.
   */
  #messages(k: number): number {
    const b = this.#b, lens = this.#lens, peers = this.#peers, gso = this.#gso;
    let j = 0;
    for (let i = 0; i < k;) {
      const peer = peers[i], seg = lens[i];
      let n = 1, total = seg;
      if (gso) {
        while (i + n < k && n < UDP_MAX_SEGMENTS && peers[i + n] === peer) {
          const l = lens[i + n];
          if (l > seg || total + l > GSO_MAX_BYTES) break;
          total += l;
          n++;
          if (l < seg) break; // only the last segment may be shorter
        }
      }
      b.setMessage(j, i, n);
      b.setPeerIp(j, peer);
      b.setSegmentSize(j, n > 1 ? seg : 0);
      this.#msgFirst[j] = i;
      this.#msgCount[j] = n;
      this.#msgBytes[j] = total;
      j++;
      i += n;
    }
    return j;
  }

  /**
   * sendmmsg of messages [0, m); waits for buffer space (bounded), skips messages the kernel
   * refuses, and falls back to one datagram per packet when a GSO message is refused.
   */
  #flush(m: number): void {
    const o = this.#o, b = this.#b, cnt = o.counters;
    const count = this.#msgCount, bytesOf = this.#msgBytes;
    let sent = 0, packets = 0, bytes = 0, errors = 0, calls = 0, gsoMsgs = 0;
    while (sent < m) {
      const r = b.send(o.udpFd, sent, m - sent);
      if (r > 0) {
        for (let q = sent; q < sent + r; q++) {
          packets += count[q];
          bytes += bytesOf[q];
          if (count[q] > 1) gsoMsgs++;
        }
        sent += r;
        calls++;
        continue;
      }
      const e = errno();
      if (e === Errno.EINTR) continue;
      if ((e === Errno.EAGAIN || e === Errno.ENOBUFS) && this.#mayWait()) {
        this.#out.wait(10);
        continue;
      }
      if (count[sent] > 1) {
        // EIO: the egress device cannot checksum-offload; EINVAL: segment plus headers exceed
        // the path MTU (or an old kernel): stop using GSO. Either way send this run singly.
        if (
          e === Errno.EIO || e === Errno.EINVAL || e === Errno.EOPNOTSUPP ||
          e === Errno.ENOPROTOOPT
        ) {
          this.#gso = false;
          cnt[TX.GSO_OFF] = 1;
        }
        const s = this.#sendSingles(this.#msgFirst[sent], count[sent]);
        packets += s.packets;
        bytes += s.bytes;
        errors += count[sent] - s.packets;
        sent++;
        continue;
      }
      // Message `sent` is refused (EMSGSIZE, ENETUNREACH, EPERM from a firewall, or the socket
      // stayed full past the deadline): count it and go on with the rest of the batch.
      errors++;
      cnt[TX.LAST_SEND_ERRNO] = e;
      sent++;
    }
    cnt[TX.PACKETS] += packets;
    cnt[TX.BYTES] += bytes;
    cnt[TX.BATCHES] += calls;
    if (gsoMsgs) cnt[TX.GSO_MESSAGES] += gsoMsgs;
    if (errors) cnt[TX.SEND_ERROR] += errors;
  }

  /** Whether this step may still wait for buffer space (SEND_WAIT_MS from its first wait). */
  #mayWait(): boolean {
    const now = performance.now();
    if (this.#deadline === 0) this.#deadline = now + SEND_WAIT_MS;
    return now < this.#deadline;
  }

  /** Sends slots [first, first + n) one sendto() each (the GSO fallback; rare). */
  #sendSingles(first: number, n: number): { packets: number; bytes: number } {
    const c = this.#c, o = this.#o, b = this.#b;
    let packets = 0, bytes = 0;
    this.#saView.setUint32(4, this.#peers[first], false);
    for (let i = first; i < first + n; i++) {
      const len = this.#lens[i];
      let r = c.sendto(o.udpFd, b.slotPtr[i], BigInt(len), 0, this.#saPtr, SOCKADDR_IN_SIZE);
      if (r < 0 && errno() === Errno.EINTR) {
        r = c.sendto(o.udpFd, b.slotPtr[i], BigInt(len), 0, this.#saPtr, SOCKADDR_IN_SIZE);
      }
      if (r < 0) {
        o.counters[TX.LAST_SEND_ERRNO] = errno();
        continue;
      }
      packets++;
      bytes += len;
    }
    return { packets, bytes };
  }
}
