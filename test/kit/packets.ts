/**
 * Packet-building blocks for the udp backend's unit tests (udp_packet, udp_offload,
 * udp_coalesce): protocol numbers and TCP flags, a seeded PRNG, reference RFC 1071 checksums
 * written independently of the module under test, big-endian readers, and one IPv4 header
 * writer. Each test file keeps its own TCP/UDP/ICMP layouts (they differ on purpose); the header
 * under them and every checksum come from here.
 *
 * @example
 * ```ts
 * const p = new Uint8Array(40);
 * const ihl = writeIpv4Header(p, 0, { total: 40, proto: TCP, src: [198, 19, 1, 2], dst: DST });
 * // … TCP header at p[ihl] …
 * setL4Checksum(p);            // TCP checksum over the whole packet
 * assert.ok(ipHeaderOk(p) && l4ChecksumOk(p));
 * ```
 */

export const ICMP = 1;
export const TCP = 6;
export const UDP = 17;

export const FIN = 0x01;
export const SYN = 0x02;
export const RST = 0x04;
export const PSH = 0x08;
export const ACK = 0x10;
export const URG = 0x20;
export const ECE = 0x40;
export const CWR = 0x80;

// ---- deterministic randomness ----

/** mulberry32: a tiny seeded PRNG with 32-bit state (test data is the same on every run). */
export class Rand {
  #a: number;
  constructor(seed: number) {
    this.#a = seed >>> 0;
  }
  /** Uniform in [0, 1). */
  next(): number {
    this.#a = (this.#a + 0x6d2b79f5) >>> 0;
    let t = this.#a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** Integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.next() * xs.length)];
  }
}

/** {@link Rand.next} as a plain function. */
export function prng(seed: number): () => number {
  const r = new Rand(seed);
  return () => r.next();
}

/** `n` bytes from the PRNG seeded with `seed`. */
export function randomBytes(n: number, seed: number): Uint8Array<ArrayBuffer> {
  const r = new Rand(seed);
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(r.next() * 256);
  return b;
}

// ---- reference checksums (RFC 1071), independent of the module under test ----

/** End-around carry until the sum fits 16 bits. */
export function refFold(s: number): number {
  while (s > 0xffff) s = (s & 0xffff) + Math.floor(s / 65536);
  return s;
}

/** One's-complement sum of `len` bytes at `off`: big-endian pairs, odd last byte padded. */
export function refSum(b: ArrayLike<number>, off: number, len: number): number {
  let s = 0;
  for (let i = 0; i < len; i++) s += (i & 1) === 0 ? b[off + i] << 8 : b[off + i];
  return refFold(s);
}

/** Sum of the IPv4 pseudo header of the packet at `off` (addresses read from the packet). */
export function refPseudo(b: Uint8Array, off: number, proto: number, l4Len: number): number {
  return refFold(refSum(b, off + 12, 8) + proto + l4Len);
}

/** Header length in bytes of the IPv4 packet at `off`. */
export function ihlOf(b: Uint8Array, off = 0): number {
  return (b[off] & 15) * 4;
}

/** True when the IPv4 header checksum of the packet at `off` verifies. */
export function ipHeaderOk(b: Uint8Array, off = 0): boolean {
  return refSum(b, off, ihlOf(b, off)) === 0xffff;
}

/** Sets a correct IPv4 header checksum on the packet at `off`. */
export function setIpChecksum(b: Uint8Array, off = 0): void {
  b[off + 10] = b[off + 11] = 0;
  const c = ~refSum(b, off, ihlOf(b, off)) & 0xffff;
  b[off + 10] = c >> 8;
  b[off + 11] = c & 0xff;
}

/** True when the TCP/UDP checksum of the `len`-byte IPv4 packet at `off` verifies. */
export function l4ChecksumOk(b: Uint8Array, off = 0, len = b.length - off, proto = TCP): boolean {
  const ihl = ihlOf(b, off);
  const l4 = len - ihl;
  return refFold(refPseudo(b, off, proto, l4) + refSum(b, off + ihl, l4)) === 0xffff;
}

/** Sets a full, correct L4 checksum (field at ihl+16 for TCP, ihl+6 for UDP). */
export function setL4Checksum(b: Uint8Array, off = 0, len = b.length - off, proto = TCP): void {
  const ihl = ihlOf(b, off);
  const at = off + ihl + (proto === TCP ? 16 : 6);
  b[at] = b[at + 1] = 0;
  const c = ~refFold(refPseudo(b, off, proto, len - ihl) + refSum(b, off + ihl, len - ihl)) &
    0xffff;
  b[at] = c >> 8;
  b[at + 1] = c & 0xff;
}

// ---- readers ----

export function u16(b: Uint8Array, at: number): number {
  return (b[at] << 8) | b[at + 1];
}

export function u32(b: Uint8Array, at: number): number {
  return ((b[at] << 24) | (b[at + 1] << 16) | (b[at + 2] << 8) | b[at + 3]) >>> 0;
}

/** The 32-bit value of address a.b.c.d. */
export function ipNum(a: number, b: number, c: number, d: number): number {
  return ((a << 24) | (b << 16) | (c << 8) | d) >>> 0;
}

/** The four bytes of a 32-bit address. */
export function ipBytes(ip: number): number[] {
  return [ip >>> 24, (ip >>> 16) & 0xff, (ip >>> 8) & 0xff, ip & 0xff];
}

// ---- the IPv4 header ----

export interface Ipv4Header {
  /** Total length of the packet (header + payload). */
  total: number;
  proto: number;
  src: ArrayLike<number>;
  dst: ArrayLike<number>;
  tos?: number;
  /** Identification; default 0. */
  id?: number;
  /** Flags and fragment offset word: 0x4000 = DF (default), 0x2000 = MF, low 13 bits offset. */
  frag?: number;
  /** Default 64. */
  ttl?: number;
  /** IP options, a multiple of 4 bytes; default none (IHL 5). */
  options?: ArrayLike<number>;
}

/**
 * Writes an IPv4 header at `off` with a correct checksum; returns its length in bytes. Bytes
 * after the header are not touched.
 */
export function writeIpv4Header(b: Uint8Array, off: number, h: Ipv4Header): number {
  const opts = h.options ?? [];
  const ihl = 20 + opts.length;
  b.fill(0, off, off + 20);
  b[off] = 0x40 | (ihl >> 2);
  b[off + 1] = h.tos ?? 0;
  b[off + 2] = h.total >> 8;
  b[off + 3] = h.total & 0xff;
  const id = h.id ?? 0;
  b[off + 4] = id >> 8;
  b[off + 5] = id & 0xff;
  const frag = h.frag ?? 0x4000;
  b[off + 6] = frag >> 8;
  b[off + 7] = frag & 0xff;
  b[off + 8] = h.ttl ?? 64;
  b[off + 9] = h.proto;
  b.set(h.src, off + 12);
  b.set(h.dst, off + 16);
  b.set(opts, off + 20);
  setIpChecksum(b, off);
  return ihl;
}
