/**
 * Preallocated recvmmsg/sendmmsg batches: `size` slots, each with a payload buffer of
 * `slotSize` bytes, one iovec, one sockaddr_in, one mmsghdr and a small control buffer, all in
 * two ArrayBuffers allocated once, so the packet loop does no per-packet allocation. Message j
 * normally carries slot j; setMessage() lets one message span consecutive slots (UDP GSO).
 * Layout is Linux x86-64/aarch64 (LP64).
 *
 * @example
 * ```ts
 * const b = new MsgBatch(64, 2048);
 * const n = b.recv(udpFd);            // datagrams now in b.data at b.offset(i), b.length(i) bytes
 * b.setLength(0, 84); b.setPeer(0, parseIp("198.18.0.2"), 8285);
 * b.send(udpFd, 0, 1);
 * // Three equal-size packets in slots 0..2 as one UDP GSO send (the kernel splits them):
 * b.setMessage(0, 0, 3); b.setSegmentSize(0, 1400); b.send(udpFd, 0, 1);
 * ```
 */
import { MSG_DONTWAIT, SOCKADDR_IN_SIZE, writeSockaddrIn } from "./udp.ts";
import { addressOf, libc } from "./lib.ts";

/** struct mmsghdr: struct msghdr (56 bytes) + unsigned msg_len, padded to 64. */
const MMSG = 64;
const IOV = 16;
const M_NAME = 0;
const M_NAMELEN = 8;
const M_IOV = 16;
const M_IOVLEN = 24;
const M_CONTROL = 32;
const M_CONTROLLEN = 40;
const M_FLAGS = 48;
const M_LEN = 56;
/** Per-message control buffer: one cmsghdr (16 bytes) + up to 8 bytes of data. */
const CTL = 32;
/** CMSG_SPACE(2) and CMSG_SPACE(4) are both 24 on LP64. */
const CMSG_SPACE_SMALL = 24;

export const SOL_UDP = 17;
/** setsockopt/cmsg: send one buffer as many datagrams of this size (Linux 4.18+). */
export const UDP_SEGMENT = 103;
/** setsockopt: receive coalesced datagrams, segment size in a cmsg (Linux 5.0+). */
export const UDP_GRO = 104;
/** Most segments one UDP GSO send may carry (UDP_MAX_SEGMENTS in Linux before 6.9). */
export const UDP_MAX_SEGMENTS = 64;

export class MsgBatch {
  /** Payload arena: slot i spans [offset(i), offset(i) + slotSize). */
  readonly data: Uint8Array<ArrayBuffer>;
  /** Headers arena: mmsghdr[size], iovec[size], sockaddr_in[size]. */
  readonly #hdr: DataView;
  readonly #hdrBuf: Uint8Array<ArrayBuffer>;
  readonly #iovBase: number;
  readonly #saBase: number;
  readonly #ctlBase: number;
  /** Address of each slot's iovec, to point a message at it. */
  readonly #iovAddr: bigint[] = [];
  /** Whether recv() asks for control data (UDP_GRO segment sizes). */
  #recvControl = false;
  /** Entries the last recv() filled (their lengths need restoring before the next). */
  #filled = 0;
  /** Pointers to each payload slot and to each mmsghdr, made once. */
  readonly slotPtr: Deno.PointerObject[] = [];
  readonly #msgPtr: Deno.PointerObject[] = [];

  constructor(readonly size: number, readonly slotSize: number, port = 0) {
    if (!Number.isInteger(size) || size < 1 || size > 1024) {
      throw new RangeError(`batch size ${size} must be an integer in 1..1024`);
    }
    if (!Number.isInteger(slotSize) || slotSize < 64 || slotSize > 65536) {
      throw new RangeError(`slot size ${slotSize} must be an integer in 64..65536`);
    }
    // Slots are 64-byte aligned; large arenas live outside V8's heap so pointers stay valid.
    this.data = new Uint8Array(size * slotSize);
    this.#iovBase = size * MMSG;
    this.#saBase = this.#iovBase + size * IOV;
    this.#ctlBase = this.#saBase + size * SOCKADDR_IN_SIZE;
    this.#hdrBuf = new Uint8Array(Math.max(256, this.#ctlBase + size * CTL));
    this.#hdr = new DataView(this.#hdrBuf.buffer);
    const dataAddr = addressOf(this.data);
    const hdrAddr = addressOf(this.#hdrBuf);
    const v = this.#hdr;
    for (let i = 0; i < size; i++) {
      const m = i * MMSG;
      const iov = this.#iovBase + i * IOV;
      const sa = this.#saBase + i * SOCKADDR_IN_SIZE;
      const slotAddr = dataAddr + BigInt(i * slotSize);
      v.setBigUint64(m + M_NAME, hdrAddr + BigInt(sa), true);
      v.setUint32(m + M_NAMELEN, SOCKADDR_IN_SIZE, true);
      v.setBigUint64(m + M_IOV, hdrAddr + BigInt(iov), true);
      v.setBigUint64(m + M_IOVLEN, 1n, true);
      v.setBigUint64(m + M_CONTROL, hdrAddr + BigInt(this.#ctlBase + i * CTL), true);
      v.setBigUint64(m + M_CONTROLLEN, 0n, true);
      this.#iovAddr.push(hdrAddr + BigInt(iov));
      v.setBigUint64(iov, slotAddr, true);
      v.setBigUint64(iov + 8, BigInt(slotSize), true);
      writeSockaddrIn(v, sa, 0, port);
      this.slotPtr.push(Deno.UnsafePointer.create(slotAddr)!);
      this.#msgPtr.push(Deno.UnsafePointer.create(hdrAddr + BigInt(m))!);
    }
  }

  /** Byte offset of slot i in `data`. */
  offset(i: number): number {
    return i * this.slotSize;
  }

  /**
   * recvmmsg into all slots (MSG_DONTWAIT unless other flags are given). Returns the count
   * received, or -1 with errno set (EAGAIN: nothing queued). Lengths: length(i); senders: peerIp(i).
   */
  recv(fd: number, flags = MSG_DONTWAIT): number {
    // The previous call rewrote msg_namelen and msg_controllen of the entries it filled; restore
    // them now rather than right after that call, so callers could read the kernel's values.
    const v = this.#hdr, ctl = this.#recvControl ? CMSG_SPACE_SMALL : 0;
    for (let i = 0; i < this.#filled; i++) {
      v.setUint32(i * MMSG + M_NAMELEN, SOCKADDR_IN_SIZE, true);
      v.setUint32(i * MMSG + M_CONTROLLEN, ctl, true);
    }
    const n = libc().recvmmsg(fd, this.#msgPtr[0], this.size, flags, null);
    this.#filled = n > 0 ? n : 0;
    return n;
  }

  /**
   * sendmmsg of slots [start, start + count) with their current lengths and peers. Returns how
   * many were sent (may be fewer than count), or -1 with errno set when the first one failed.
   */
  send(fd: number, start: number, count: number, flags = 0): number {
    return libc().sendmmsg(fd, this.#msgPtr[start], count, flags);
  }

  /** Bytes received into slot i by the last recv(). */
  length(i: number): number {
    return this.#hdr.getUint32(i * MMSG + M_LEN, true);
  }

  /** msg_flags of slot i after recv() (MSG_TRUNC: the datagram did not fit). */
  flags(i: number): number {
    return this.#hdr.getInt32(i * MMSG + M_FLAGS, true);
  }

  /** Sender address of slot i after recv(), host-order number. */
  peerIp(i: number): number {
    return this.#hdr.getUint32(this.#saBase + i * SOCKADDR_IN_SIZE + 4, false);
  }

  /** Sender port of slot i after recv(). */
  peerPort(i: number): number {
    return this.#hdr.getUint16(this.#saBase + i * SOCKADDR_IN_SIZE + 2, false);
  }

  /** Sets how many bytes of slot i the next send() transmits (iov_len). */
  setLength(i: number, len: number): void {
    // iov_len is a size_t; the high half stays 0 (slots are at most 64 KiB).
    this.#hdr.setUint32(this.#iovBase + i * IOV + 8, len, true);
  }

  /** Restores iov_len of every slot to slotSize (after setLength, before recv). */
  resetLengths(): void {
    for (let i = 0; i < this.size; i++) this.setLength(i, this.slotSize);
  }

  /** Destination of slot i for the next send(). */
  setPeer(i: number, ip: number, port: number): void {
    const sa = this.#saBase + i * SOCKADDR_IN_SIZE;
    this.#hdr.setUint16(sa + 2, port, false);
    this.#hdr.setUint32(sa + 4, ip, false);
  }

  /**
   * Makes message j carry slots [firstSlot, firstSlot + count) (each with its setLength()), for
   * send(). Message j and slot firstSlot may differ; message j's peer is set with setPeerIp(j).
   */
  setMessage(j: number, firstSlot: number, count: number): void {
    const m = j * MMSG;
    this.#hdr.setBigUint64(m + M_IOV, this.#iovAddr[firstSlot], true);
    this.#hdr.setUint32(m + M_IOVLEN, count, true);
  }

  /**
   * Attaches a UDP_SEGMENT cmsg to message j: the kernel sends its payload as datagrams of
   * `size` bytes (the last may be shorter). 0 removes it (one datagram).
   */
  setSegmentSize(j: number, size: number): void {
    const v = this.#hdr;
    if (size === 0) {
      v.setUint32(j * MMSG + M_CONTROLLEN, 0, true);
      return;
    }
    const c = this.#ctlBase + j * CTL;
    v.setUint32(c, 18, true); // cmsg_len = CMSG_LEN(2), a size_t
    v.setUint32(c + 4, 0, true);
    v.setInt32(c + 8, SOL_UDP, true);
    v.setInt32(c + 12, UDP_SEGMENT, true);
    v.setUint16(c + 16, size, true);
    v.setUint32(j * MMSG + M_CONTROLLEN, CMSG_SPACE_SMALL, true);
  }

  /** Makes recv() collect control data, for UDP_GRO segment sizes (see groSize). */
  receiveControl(on: boolean): void {
    this.#recvControl = on;
    for (let i = 0; i < this.size; i++) {
      this.#hdr.setUint32(i * MMSG + M_CONTROLLEN, on ? CMSG_SPACE_SMALL : 0, true);
    }
  }

  /**
   * After recv() with receiveControl(true) on a UDP_GRO socket: the segment size when slot i
   * holds several coalesced datagrams, else 0.
   */
  groSize(i: number): number {
    const v = this.#hdr;
    if (v.getUint32(i * MMSG + M_CONTROLLEN, true) < 20) return 0;
    const c = this.#ctlBase + i * CTL;
    if (v.getInt32(c + 8, true) !== SOL_UDP || v.getInt32(c + 12, true) !== UDP_GRO) return 0;
    // The kernel puts the size in an int (older kernels) or a u16; both read right as u16 LE.
    return v.getUint16(c + 16, true);
  }

  /** Destination address only (the port given to the constructor stays). */
  setPeerIp(i: number, ip: number): void {
    this.#hdr.setUint32(this.#saBase + i * SOCKADDR_IN_SIZE + 4, ip, false);
  }
}
