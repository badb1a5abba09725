/**
 * The other direction of the udp backend's packet loop: datagrams from peers are read with one
 * recvmmsg(2) per batch; each is accepted only from a member's public IP, checked,
 * TTL-decremented (flannel decrements at both ends) and written into the TUN (one write(2) per
 * packet: a TUN has no batch write). Sync FFI only: runs in a Worker.
 *
 * @example
 * ```ts
 * const pump = new UdpToTun({ tunFd, udpFd, port: 8285, table, counters, batchSize: 64 });
 * while (running) if (pump.step() < 64) pollSocket();
 * ```
 */
import { Errno, errno, lastError, libc, MSG_TRUNC, MsgBatch } from "../../../ffi/libc/mod.ts";
import type { LibcSymbols } from "../../../ffi/libc/mod.ts";
import { BadPacket, decrementTtl, ipv4Length } from "./packet.ts";
import { RX } from "./counters.ts";
import type { PumpOptions } from "./tun_to_udp.ts";

export interface UdpToTunOptions extends PumpOptions {
  /** Accept datagrams only from peers' public IPs (default true). */
  checkSource?: boolean;
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
  }

  /**
   * Receives up to one batch and writes the accepted packets into the TUN. Returns datagrams
   * received: fewer than the batch size means the socket queue is empty.
   */
  step(): number {
    const c = this.#c, o = this.#o, b = this.#b, data = b.data, table = o.table;
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
    let packets = 0, bytes = 0, notMember = 0, malformed = 0, notV4 = 0, ttl = 0, writeErr = 0;
    for (let i = 0; i < n; i++) {
      if (check && !table.isMember(b.peerIp(i))) {
        notMember++;
        continue;
      }
      const off = i * slot;
      const len = (b.flags(i) & MSG_TRUNC) ? -1 : ipv4Length(data, off, b.length(i));
      if (len < 0) {
        if (len === BadPacket.NOT_IPV4) notV4++;
        else malformed++;
        continue;
      }
      if (!decrementTtl(data, off)) {
        ttl++;
        continue;
      }
      let w = c.write(o.tunFd, b.slotPtr[i], BigInt(len));
      if (w < 0 && errno() === Errno.EINTR) w = c.write(o.tunFd, b.slotPtr[i], BigInt(len));
      if (w < 0) {
        const e = errno();
        if (e === Errno.EBADF || e === Errno.EBADFD) {
          throw lastError("write", `TUN fd ${o.tunFd}`, {
            EBADFD: "the TUN device was deleted; the backend must recreate it",
          });
        }
        // EIO (device down) or EINVAL (kernel refused the packet): drop and count.
        writeErr++;
        o.counters[RX.LAST_WRITE_ERRNO] = e;
        continue;
      }
      packets++;
      bytes += len;
    }
    const cnt = o.counters;
    cnt[RX.UDP_PACKETS] += n;
    if (n > 0) cnt[RX.BATCHES]++;
    cnt[RX.PACKETS] += packets;
    cnt[RX.BYTES] += bytes;
    if (notMember) cnt[RX.NOT_MEMBER] += notMember;
    if (malformed) cnt[RX.MALFORMED] += malformed;
    if (notV4) cnt[RX.NOT_IPV4] += notV4;
    if (ttl) cnt[RX.TTL] += ttl;
    if (writeErr) cnt[RX.TUN_WRITE_ERROR] += writeErr;
    return n;
  }
}
