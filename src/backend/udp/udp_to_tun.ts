/**
 * The other direction of the udp backend's packet loop: datagrams from peers are read with one
 * recvmmsg(2) per batch (with UDP GRO, a message may hold several datagrams of one sender); each is accepted only from a member's public IP, checked,
 * TTL-decremented (flannel decrements at both ends) and written into the TUN (one write(2) per
 * packet: a TUN has no batch write). Sync FFI only: runs in a Worker.
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
import { RX } from "./counters.ts";
import type { PumpOptions } from "./tun_to_udp.ts";

export interface UdpToTunOptions extends PumpOptions {
  /** Accept datagrams only from peers' public IPs (default true). */
  checkSource?: boolean;
  /** Enable UDP_GRO on the socket (default true; needs slotSize 65536). */
  gro?: boolean;
}

export class UdpToTun {
  readonly #c: LibcSymbols;
  readonly #o: UdpToTunOptions;
  readonly #b: MsgBatch;
  readonly #check: boolean;

  constructor(o: UdpToTunOptions) {
    this.#c = libc();
    this.#o = o;
    this.#b = new MsgBatch(o.batchSize, o.slotSize, o.port);
    this.#check = o.checkSource ?? true;
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
      t.ttl =
        0;
    t.writeErr = 0;
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
    const cnt = o.counters;
    cnt[RX.UDP_PACKETS] += t.datagrams;
    if (n > 0) cnt[RX.BATCHES]++;
    cnt[RX.PACKETS] += t.packets;
    cnt[RX.BYTES] += t.bytes;
    if (t.notMember) cnt[RX.NOT_MEMBER] += t.notMember;
    if (t.malformed) cnt[RX.MALFORMED] += t.malformed;
    if (t.notV4) cnt[RX.NOT_IPV4] += t.notV4;
    if (t.ttl) cnt[RX.TTL] += t.ttl;
    if (t.writeErr) cnt[RX.TUN_WRITE_ERROR] += t.writeErr;
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
    ttl: 0,
    writeErr: 0,
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
    if (!decrementTtl(data, off)) {
      t.ttl++;
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
}
