/**
 * The Internet checksum (RFC 1071) for the udp backend: one summing routine, {@link sum16}, for
 * IPv4 headers, TCP/UDP segments (with {@link pseudoSum}) and the ICMP messages we originate.
 *
 * The packet path sums 32 bits at a time through a Uint32Array over the same (4-byte aligned)
 * buffer: `words(buf)` makes it once per buffer, and nothing is allocated per packet. Callers
 * without such a view (one-off messages, tests) pass `null` and get the same sum byte by byte.
 *
 * @example
 * ```ts
 * const w = words(buf);
 * setIpChecksum(buf, w, off);                                  // IPv4 header, in place
 * const tcp = ~fold(pseudoSum(buf, off, 6, l4) + sum16(buf, w, off + 20, l4)) & 0xffff;
 * internetChecksum(icmp, 0, 36);                               // ready to store
 * ```
 */

/** A Uint32Array over the same memory as `buf` (its byteOffset must be a multiple of 4). */
export function words(buf: Uint8Array): Uint32Array {
  if (buf.byteOffset % 4 !== 0) throw new RangeError("buffer must be 4-byte aligned");
  return new Uint32Array(buf.buffer, buf.byteOffset, buf.byteLength >>> 2);
}

/** Folds a one's-complement sum (any size up to 2^53) to 16 bits. */
export function fold(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 65536);
  return sum;
}

/**
 * One's-complement sum of `len` bytes at `off` as big-endian 16-bit words (RFC 1071), folded
 * to 16 bits and not complemented. `w` is words(buf), or null to sum byte by byte. Any
 * alignment of `off`; with `w`, the aligned middle is summed as little-endian 32-bit words and
 * byte-swapped (the sum commutes with the swap).
 */
export function sum16(buf: Uint8Array, w: Uint32Array | null, off: number, len: number): number {
  const end = off + len;
  let s = 0;
  let i = off;
  if (w !== null) {
    while (i < end && (i & 3) !== 0) {
      s += ((i - off) & 1) === 0 ? buf[i] << 8 : buf[i];
      i++;
    }
    const wEnd = end & ~3;
    if (wEnd > i) {
      let le = 0;
      for (let k = i >>> 2, e = wEnd >>> 2; k < e; k++) le += w[k];
      le = fold(le);
      // The first word's first byte sits at an even (high byte) or odd (low byte) position.
      s += ((i - off) & 1) === 0 ? ((le & 0xff) << 8) | (le >>> 8) : le;
      i = wEnd;
    }
  }
  while (i < end) {
    s += ((i - off) & 1) === 0 ? buf[i] << 8 : buf[i];
    i++;
  }
  return fold(s);
}

/** Sum of the IPv4 pseudo-header (source, destination, protocol, L4 length) of the packet at off. */
export function pseudoSum(buf: Uint8Array, off: number, proto: number, l4Len: number): number {
  return ((buf[off + 12] << 8) | buf[off + 13]) + ((buf[off + 14] << 8) | buf[off + 15]) +
    ((buf[off + 16] << 8) | buf[off + 17]) + ((buf[off + 18] << 8) | buf[off + 19]) + proto + l4Len;
}

/** The Internet checksum of `len` bytes at `off`, ready to store (0 over data that holds one). */
export function internetChecksum(
  buf: Uint8Array,
  off: number,
  len: number,
  w: Uint32Array | null = null,
): number {
  return ~sum16(buf, w, off, len) & 0xffff;
}

/** Recomputes the IPv4 header checksum of the packet at `off`. */
export function setIpChecksum(buf: Uint8Array, w: Uint32Array | null, off: number): void {
  buf[off + 10] = 0;
  buf[off + 11] = 0;
  const c = internetChecksum(buf, off, (buf[off] & 15) << 2, w);
  buf[off + 10] = c >> 8;
  buf[off + 11] = c & 0xff;
}

/** True when the IPv4 header at `off` carries a correct checksum. */
export function headerChecksumOk(
  buf: Uint8Array,
  off: number,
  w: Uint32Array | null = null,
): boolean {
  return internetChecksum(buf, off, (buf[off] & 15) << 2, w) === 0;
}
