/**
 * The other direction of the udp backend's packet loop: datagrams from peers are read with one
 * recvmmsg(2) per batch (with UDP GRO, a message may hold several datagrams of one sender); each
 * is accepted only from a member's public IP, checked, TTL-decremented (flannel decrements at
 * both ends) and written into the TUN: one write(2) per packet (a TUN has no batch write), or,
 * with TUN offloads (vnetHdr), one writev(2) per run of consecutive segments of one TCP stream,
 * merged into a super-packet behind a virtio_net_hdr (see offload.ts). Sync FFI only: runs in a
 * Worker.
 *
 * @example
 * ```ts
 * const pump = new UdpToTun({ tunFd, udpFd, port: 8285, table, counters, batchSize: 64 });
 * while (running) if (pump.step() < 64) pollSocket();
 * ```
 */
import {
  Errno,
  errno,
  lastError,
  libc,
  MSG_TRUNC,
  MsgBatch,
  setSockOptInt,
  SOL_UDP,
  UDP_GRO,
} from "../../../ffi/libc/mod.ts";
import type { LibcSymbols } from "../../../ffi/libc/mod.ts";
import { BadPacket, decrementTtl, ipv4Length } from "./packet.ts";
import {
  coalescablePayload,
  COALESCE_MAX,
  continuesFlow,
  finishSuperPacket,
  hasPsh,
  nextSeq,
  VNET_HDR_LEN,
} from "./offload.ts";
import { headerChecksumOk, words } from "./checksum.ts";
import { RX } from "./counters.ts";
import type { PumpOptions } from "./tun_to_udp.ts";

export interface UdpToTunOptions extends PumpOptions {
  /** Accept datagrams only from peers' public IPs (default true). */
  checkSource?: boolean;
  /** Enable UDP_GRO on the socket (default true; needs slotSize 65536). */
  gro?: boolean;
}

/** Most segments merged into one super-packet (writev takes them as iovecs). */
const MAX_SEGMENTS = 64;
/** Offsets in #hdrs of the zero virtio_net_hdr (single packets) and the super-packet's. */
const ZERO_HDR = 0;
const GSO_HDR = 16;

export class UdpToTun {
  readonly #c: LibcSymbols;
  readonly #o: UdpToTunOptions;
  readonly #b: MsgBatch;
  readonly #check: boolean;
  /** With vnetHdr: a virtio_net_hdr goes in front of every write (writev). */
  readonly #vnet: boolean;
  readonly #words: Uint32Array;
  /** Address of the payload arena as a number (exact below 2^53), for iovecs. */
  readonly #dataAddr: number;
  /**
   * writev's iovecs: [0] the virtio_net_hdr, [1] the first packet, [2..] further segments'
   * payloads; #hdrs holds a zero header (single packets) and the super-packet's header.
   */
  readonly #iov = new Uint8Array(new ArrayBuffer((2 + MAX_SEGMENTS) * 16));
  readonly #iovView = new DataView(this.#iov.buffer);
  readonly #iovPtr: Deno.PointerObject;
  readonly #hdrs = new Uint8Array(new ArrayBuffer(64));
  readonly #hdrsAddr: number;
  /** The super-packet being built: first packet's offset (-1: none), segments, bytes, mss. */
  #head = -1;
  #headLen = 0;
  #segs = 0;
  #total = 0;
  #mss = 0;
  #next = 0;

  constructor(o: UdpToTunOptions) {
    this.#c = libc();
    this.#o = o;
    this.#b = new MsgBatch(o.batchSize, o.slotSize, o.port);
    this.#check = o.checkSource ?? true;
    this.#vnet = o.vnetHdr ?? false;
    this.#words = words(this.#b.data);
    this.#dataAddr = Number(Deno.UnsafePointer.value(this.#b.slotPtr[0]));
    this.#iovPtr = Deno.UnsafePointer.of(this.#iov)!;
    this.#hdrsAddr = Number(Deno.UnsafePointer.value(Deno.UnsafePointer.of(this.#hdrs)!));
    // UDP GRO: the kernel may hand over several datagrams of one sender as one buffer (less
    // per-datagram socket work). Needs slots that fit the largest coalesced buffer.
    if ((o.gro ?? true) && o.slotSize >= 65536) {
      try {
        setSockOptInt(o.udpFd, SOL_UDP, UDP_GRO, 1);
        this.#b.receiveControl(true);
        o.counters[RX.GRO_ON] = 1;
      } catch { /* kernel before 5.0: one datagram per message, as before */ }
    }
  }

  /**
   * Receives up to one batch and writes the accepted packets into the TUN. Returns messages
   * received: fewer than the batch size means the socket queue is empty.
   */
  step(): number {
    const o = this.#o, b = this.#b, table = o.table;
    const slot = o.slotSize, check = this.#check;
    const n = b.recv(o.udpFd);
    if (n < 0) {
      const e = errno();
      // Pending socket errors (an ICMP about an earlier send) are reported once; nothing lost.
      if (
        e === Errno.EAGAIN || e === Errno.EINTR || e === Errno.ECONNREFUSED ||
        e === Errno.EHOSTUNREACH || e === Errno.ENETUNREACH
      ) return 0;
      throw lastError("recvmmsg", `udp fd ${o.udpFd}, ${b.size} messages`);
    }
    const t = this.#tally;
    t.datagrams =
      t.packets =
      t.bytes =
      t.notMember =
      t.malformed =
      t.notV4 =
      t.badSum =
      t.ttl =
        0;
    t.writeErr = t.superPackets = t.superSegments = 0;
    for (let i = 0; i < n; i++) {
      const total = b.length(i);
      const gro = b.groSize(i);
      const segs = gro > 0 && gro < total ? Math.ceil(total / gro) : 1;
      t.datagrams += segs;
      if (check && !table.isMember(b.peerIp(i))) {
        t.notMember += segs;
        continue;
      }
      if (b.flags(i) & MSG_TRUNC) {
        t.malformed += segs;
        continue;
      }
      const base = i * slot;
      if (segs === 1) {
        this.#deliver(base, total, b.slotPtr[i]);
        continue;
      }
      for (let s = 0; s < total; s += gro) {
        const ptr = s === 0 ? b.slotPtr[i] : Deno.UnsafePointer.offset(b.slotPtr[i], s)!;
        this.#deliver(base + s, Math.min(gro, total - s), ptr);
      }
    }
    if (this.#head >= 0) this.#flushSuper(false);
    const cnt = o.counters;
    cnt[RX.UDP_PACKETS] += t.datagrams;
    if (n > 0) cnt[RX.BATCHES]++;
    cnt[RX.PACKETS] += t.packets;
    cnt[RX.BYTES] += t.bytes;
    if (t.notMember) cnt[RX.NOT_MEMBER] += t.notMember;
    if (t.malformed) cnt[RX.MALFORMED] += t.malformed;
    if (t.notV4) cnt[RX.NOT_IPV4] += t.notV4;
    if (t.badSum) cnt[RX.BAD_CHECKSUM] += t.badSum;
    if (t.ttl) cnt[RX.TTL] += t.ttl;
    if (t.writeErr) cnt[RX.TUN_WRITE_ERROR] += t.writeErr;
    if (t.superPackets) {
      cnt[RX.COALESCED_PACKETS] += t.superPackets;
      cnt[RX.COALESCED_SEGMENTS] += t.superSegments;
    }
    return n;
  }

  /** Per-step counts, kept in one object so #deliver needs no closures or allocations. */
  readonly #tally = {
    datagrams: 0,
    packets: 0,
    bytes: 0,
    notMember: 0,
    malformed: 0,
    notV4: 0,
    badSum: 0,
    ttl: 0,
    writeErr: 0,
    superPackets: 0,
    superSegments: 0,
  };

  /** Checks one datagram of `n` bytes at `off` (= `ptr`) and writes it into the TUN. */
  #deliver(off: number, n: number, ptr: Deno.PointerObject): void {
    const c = this.#c, o = this.#o, data = this.#b.data, t = this.#tally;
    const len = ipv4Length(data, off, n);
    if (len < 0) {
      if (len === BadPacket.NOT_IPV4) t.notV4++;
      else t.malformed++;
      return;
    }
    // Checked before the TTL update, which patches the checksum incrementally and so would keep
    // a wrong one wrong: the kernel would drop such a packet after the TUN, uncounted.
    if (!headerChecksumOk(data, off, this.#words)) {
      t.badSum++;
      return;
    }
    if (!decrementTtl(data, off)) {
      t.ttl++;
      return;
    }
    if (this.#vnet) {
      this.#offer(off, len);
      return;
    }
    let w = c.write(o.tunFd, ptr, BigInt(len));
    if (w < 0 && errno() === Errno.EINTR) w = c.write(o.tunFd, ptr, BigInt(len));
    if (w < 0) {
      const e = errno();
      if (e === Errno.EBADF || e === Errno.EBADFD) {
        throw lastError("write", `TUN fd ${o.tunFd}`, {
          EBADFD: "the TUN device was deleted; the backend must recreate it",
        });
      }
      // EIO (device down) or EINVAL (kernel refused the packet): drop and count.
      t.writeErr++;
      o.counters[RX.LAST_WRITE_ERRNO] = e;
      return;
    }
    t.packets++;
    t.bytes += len;
  }

  /**
   * With vnetHdr: adds the checked packet at `off` to the super-packet being built when it
   * continues that TCP stream, else writes what was built and starts anew (or writes it alone).
   */
  #offer(off: number, len: number): void {
    const data = this.#b.data;
    const payload = coalescablePayload(data, this.#words, off, len);
    if (this.#head >= 0) {
      if (
        payload > 0 && payload <= this.#mss && this.#segs < MAX_SEGMENTS &&
        this.#total + payload <= COALESCE_MAX && continuesFlow(data, this.#head, off, this.#next)
      ) {
        this.#setIov(1 + this.#segs, off + len - payload, payload);
        this.#segs++;
        this.#total += payload;
        this.#next = (this.#next + payload) >>> 0;
        // A shorter segment or PSH ends a burst (GRO's rule too); PSH moves to the header.
        const psh = hasPsh(data, off);
        if (payload < this.#mss || psh) this.#flushSuper(psh);
        return;
      }
      this.#flushSuper(false);
    }
    this.#setIov(1, off, len);
    if (payload > 0 && !hasPsh(data, off)) {
      this.#head = off;
      this.#segs = 1;
      this.#total = this.#headLen = len;
      this.#mss = payload;
      this.#next = nextSeq(data, off, payload);
      return;
    }
    this.#write(2, ZERO_HDR, 1, len);
  }

  /** Writes the super-packet being built (a lone first packet as itself). */
  #flushSuper(psh: boolean): void {
    const head = this.#head, segs = this.#segs;
    this.#head = -1;
    if (segs === 1) {
      this.#write(2, ZERO_HDR, 1, this.#total);
      return;
    }
    finishSuperPacket(
      this.#b.data,
      this.#words,
      head,
      this.#total,
      this.#mss,
      psh,
      this.#hdrs,
      GSO_HDR,
    );
    // Count bytes as the segments arrived (each with its headers), as without offloads.
    const hl = this.#headLen - this.#mss;
    if (this.#write(1 + segs, GSO_HDR, segs, this.#total + (segs - 1) * hl)) {
      this.#tally.superPackets++;
      this.#tally.superSegments += segs;
    }
  }

  /** iovec i = `len` bytes at `off` in the payload arena. */
  #setIov(i: number, off: number, len: number): void {
    const v = this.#iovView, addr = this.#dataAddr + off;
    v.setUint32(i * 16, addr % 0x1_0000_0000, true);
    v.setUint32(i * 16 + 4, Math.floor(addr / 0x1_0000_0000), true);
    v.setUint32(i * 16 + 8, len, true);
  }

  /**
   * writev of iovecs [0, count) with iovec 0 = the virtio_net_hdr at `hdr` in #hdrs; counts
   * `segs` packets of `bytes` IP bytes as written or as write errors. True when written.
   */
  #write(count: number, hdr: number, segs: number, bytes: number): boolean {
    const c = this.#c, o = this.#o, t = this.#tally, v = this.#iovView;
    const addr = this.#hdrsAddr + hdr;
    v.setUint32(0, addr % 0x1_0000_0000, true);
    v.setUint32(4, Math.floor(addr / 0x1_0000_0000), true);
    v.setUint32(8, VNET_HDR_LEN, true);
    let w = c.writev(o.tunFd, this.#iovPtr, count);
    if (w < 0 && errno() === Errno.EINTR) w = c.writev(o.tunFd, this.#iovPtr, count);
    if (w < 0) {
      const e = errno();
      if (e === Errno.EBADF || e === Errno.EBADFD) {
        throw lastError("writev", `TUN fd ${o.tunFd}`, {
          EBADFD: "the TUN device was deleted; the backend must recreate it",
        });
      }
      t.writeErr += segs;
      o.counters[RX.LAST_WRITE_ERRNO] = e;
      return false;
    }
    t.packets += segs;
    t.bytes += bytes;
    return true;
  }
}
