/**
 * The sending half of the udp backend's TUN → UDP direction: slots of a {@link MsgBatch}, each
 * holding one checked packet for one peer, go out with one sendmmsg(2) per batch, runs of
 * equal-size packets to one peer as UDP GSO messages. It waits (bounded, per step) for socket
 * buffer space, counts what the kernel refuses, and falls back to one datagram per packet when
 * a GSO message is refused. Sync FFI only: runs in the forwarder's Worker.
 *
 * @example
 * ```ts
 * const tx = new UdpSender(batch, { udpFd, port: 8285, counters, gso: true });
 * tx.newStep();
 * tx.set(0, len, peerIp);   // per packet, into slot 0, 1, ...
 * tx.send(1);               // slots [0, 1)
 * ```
 */
import {
  Errno,
  errno,
  libc,
  type LibcSymbols,
  type MsgBatch,
  POLLOUT,
  PollSet,
  SOCKADDR_IN_SIZE,
  UDP_MAX_SEGMENTS,
  writeSockaddrIn,
} from "../../../ffi/libc/mod.ts";
import { TX } from "./counters.ts";

/** How long one step may wait for socket buffer space before dropping the rest (ms). */
const SEND_WAIT_MS = 200;
/** Largest UDP GSO payload: 65535 minus the IP and UDP headers, rounded down for options. */
const GSO_MAX_BYTES = 65000;

export interface UdpSenderOptions {
  udpFd: number;
  /** Peers' UDP port (flannel: 8285). */
  port: number;
  counters: Float64Array;
  /** Send runs of equal-size packets to one peer with UDP GSO (UDP_SEGMENT); default true. */
  gso?: boolean;
}

export class UdpSender {
  readonly #c: LibcSymbols;
  readonly #b: MsgBatch;
  readonly #fd: number;
  readonly #counters: Float64Array;
  /** Per slot: packet length and peer; per message: first slot, packets, bytes. */
  readonly #lens: Int32Array;
  readonly #peers: Uint32Array;
  readonly #msgFirst: Int32Array;
  readonly #msgCount: Int32Array;
  readonly #msgBytes: Int32Array;
  readonly #sa = new Uint8Array(256);
  readonly #saView = new DataView(this.#sa.buffer);
  readonly #saPtr: Deno.PointerObject;
  readonly #out: PollSet;
  #gso: boolean;
  /** End of this step's wait for socket buffer space (one budget per step, set lazily). */
  #deadline = 0;

  constructor(b: MsgBatch, o: UdpSenderOptions) {
    this.#c = libc();
    this.#b = b;
    this.#fd = o.udpFd;
    this.#counters = o.counters;
    this.#lens = new Int32Array(b.size);
    this.#peers = new Uint32Array(b.size);
    this.#msgFirst = new Int32Array(b.size);
    this.#msgCount = new Int32Array(b.size);
    this.#msgBytes = new Int32Array(b.size);
    writeSockaddrIn(this.#saView, 0, 0, o.port);
    this.#saPtr = Deno.UnsafePointer.of(this.#sa)!;
    this.#out = new PollSet([o.udpFd], POLLOUT);
    this.#gso = o.gso ?? true;
    if (!this.#gso) o.counters[TX.GSO_OFF] = 1;
  }

  /** Starts a step: its wait for buffer space gets a fresh SEND_WAIT_MS budget. */
  newStep(): void {
    this.#deadline = 0;
  }

  /** Slot `k` holds a `len`-byte packet for `peer` (an IPv4 address as a number). */
  set(k: number, len: number, peer: number): void {
    this.#b.setLength(k, len);
    this.#lens[k] = len;
    this.#peers[k] = peer;
  }

  /** Sends slots [0, k), as set. */
  send(k: number): void {
    this.#flush(this.#messages(k));
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
    const b = this.#b, cnt = this.#counters;
    const count = this.#msgCount, bytesOf = this.#msgBytes;
    let sent = 0, packets = 0, bytes = 0, errors = 0, calls = 0, gsoMsgs = 0;
    while (sent < m) {
      const r = b.send(this.#fd, sent, m - sent);
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
    const c = this.#c, fd = this.#fd, b = this.#b;
    let packets = 0, bytes = 0;
    this.#saView.setUint32(4, this.#peers[first], false);
    for (let i = first; i < first + n; i++) {
      const len = this.#lens[i];
      let r = c.sendto(fd, b.slotPtr[i], BigInt(len), 0, this.#saPtr, SOCKADDR_IN_SIZE);
      if (r < 0 && errno() === Errno.EINTR) {
        r = c.sendto(fd, b.slotPtr[i], BigInt(len), 0, this.#saPtr, SOCKADDR_IN_SIZE);
      }
      if (r < 0) {
        this.#counters[TX.LAST_SEND_ERRNO] = errno();
        continue;
      }
      packets++;
      bytes += len;
    }
    return { packets, bytes };
  }
}
