/**
 * IPv4 packet handling for the udp backend's packet loop: header validation, TTL decrement with
 * the RFC 1624 incremental checksum update, and the ICMP destination net-unreachable that flannel
 * writes back into the TUN when no peer owns the destination. All functions work in place on
 * (buffer, offset, length) so the loop allocates nothing per packet.
 *
 * @example
 * ```ts
 * const len = ipv4Length(buf, off, n);          // total length, or a negative BadPacket code
 * if (len > 0 && decrementTtl(buf, off)) send(buf, off, len);
 * const m = buildNetUnreachable(buf, off, len, icmp, 0); // 0 when no ICMP may be sent
 * ```
 */
import { fold, internetChecksum } from "./checksum.ts";

/** IP protocol numbers (the IPv4 header's protocol field). */
export const IPPROTO_ICMP = 1;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const ICMP_DEST_UNREACH = 3;
export const ICMP_NET_UNREACH = 0;
/** TTL of the ICMP messages we originate (flannel uses 64). */
export const ICMP_TTL = 64;
/** Largest message buildNetUnreachable writes: 20 + 8 + 60 (header with options) + 8. */
export const MAX_UNREACHABLE_LEN = 96;

/** Why ipv4Length rejected a packet (negative so a valid length is always > 0). */
export const BadPacket = {
  TOO_SHORT: -1,
  NOT_IPV4: -2,
  BAD_IHL: -3,
  BAD_TOTAL_LENGTH: -4,
} as const;

/**
 * Checks the IPv4 header of the `len` bytes at `off`: version 4, IHL ≥ 5, header within the
 * buffer, header length ≤ total length ≤ len. Returns the total length (trailing bytes beyond it
 * are not part of the packet) or a negative BadPacket code.
 */
export function ipv4Length(buf: Uint8Array, off: number, len: number): number {
  if (len < 20) return BadPacket.TOO_SHORT;
  const vihl = buf[off];
  if (vihl >> 4 !== 4) return BadPacket.NOT_IPV4;
  const hl = (vihl & 15) << 2;
  if (hl < 20 || hl > len) return BadPacket.BAD_IHL;
  const total = (buf[off + 2] << 8) | buf[off + 3];
  if (total < hl || total > len) return BadPacket.BAD_TOTAL_LENGTH;
  return total;
}

/** Destination address as an unsigned 32-bit number. */
export function destination(buf: Uint8Array, off: number): number {
  return ((buf[off + 16] << 24) | (buf[off + 17] << 16) | (buf[off + 18] << 8) | buf[off + 19]) >>>
    0;
}

/** Source address as an unsigned 32-bit number. */
export function source(buf: Uint8Array, off: number): number {
  return ((buf[off + 12] << 24) | (buf[off + 13] << 16) | (buf[off + 14] << 8) | buf[off + 15]) >>>
    0;
}

/**
 * Decrements the TTL and patches the header checksum incrementally (RFC 1624 eqn. 3:
 * HC' = ~(~HC + ~m + m'), m being the TTL/protocol word). Returns false, leaving the packet
 * untouched, when the TTL would reach 0: the caller drops it (flannel does the same at each end).
 */
export function decrementTtl(buf: Uint8Array, off: number): boolean {
  const ttl = buf[off + 8];
  if (ttl <= 1) return false;
  const m = (ttl << 8) | buf[off + 9];
  const m2 = m - 0x100;
  const hc = (buf[off + 10] << 8) | buf[off + 11];
  const hc2 = ~fold((~hc & 0xffff) + (~m & 0xffff) + m2) & 0xffff;
  buf[off + 8] = ttl - 1;
  buf[off + 10] = hc2 >> 8;
  buf[off + 11] = hc2 & 0xff;
  return true;
}

/** ICMP query types that may be answered with an error (RFC 1812 4.3.2.7 forbids errors
 * about ICMP errors only): echo, timestamp, information and address mask requests. */
const ICMP_QUERIES = new Set([8, 13, 15, 17]);

/**
 * Whether an ICMP error may be sent about this (already validated, `len` bytes) packet. Never
 * about ICMP error messages (that is what keeps error loops away; flannel skips every ICMP
 * packet, but then `ping` could not show "Destination Net Unreachable", so ICMP queries such as
 * echo requests are answered), never about non-first fragments, and never when the source
 * cannot receive a reply (0.0.0.0, multicast, limited broadcast) or the destination is multicast
 * or broadcast (RFC 1812 4.3.2.7).
 */
export function mayReplyUnreachable(buf: Uint8Array, off: number, len: number): boolean {
  if ((((buf[off + 6] & 0x1f) << 8) | buf[off + 7]) !== 0) return false;
  if (buf[off + 9] === IPPROTO_ICMP) {
    const hl = (buf[off] & 15) << 2;
    if (len <= hl || !ICMP_QUERIES.has(buf[off + hl])) return false;
  }
  const src = source(buf, off);
  const dst = destination(buf, off);
  if (src === 0 || src === 0xffffffff || src >>> 28 === 14) return false;
  if (dst === 0xffffffff || dst >>> 28 === 14) return false;
  return true;
}

/**
 * Writes into `out` at `outOff` an ICMP destination net-unreachable (type 3 code 0) from the
 * packet's destination back to its source, quoting its header and first 8 payload bytes
 * (RFC 792). `len` is the packet's validated total length. Returns the message length, or 0
 * when mayReplyUnreachable says no. `out` needs MAX_UNREACHABLE_LEN bytes from outOff.
 */
export function buildNetUnreachable(
  buf: Uint8Array,
  off: number,
  len: number,
  out: Uint8Array,
  outOff: number,
): number {
  if (!mayReplyUnreachable(buf, off, len)) return 0;
  const hl = (buf[off] & 15) << 2;
  const quoted = Math.min(len, hl + 8);
  const total = 20 + 8 + quoted;
  const o = outOff;
  out.fill(0, o, o + total);
  out[o] = 0x45;
  out[o + 2] = total >> 8;
  out[o + 3] = total & 0xff;
  out[o + 6] = 0x40; // DF, as flannel sets it
  out[o + 8] = ICMP_TTL;
  out[o + 9] = IPPROTO_ICMP;
  for (let i = 0; i < 4; i++) {
    out[o + 12 + i] = buf[off + 16 + i]; // from the unreachable destination
    out[o + 16 + i] = buf[off + 12 + i]; // to the sender
  }
  const ip = internetChecksum(out, o, 20);
  out[o + 10] = ip >> 8;
  out[o + 11] = ip & 0xff;
  const icmp = o + 20;
  out[icmp] = ICMP_DEST_UNREACH;
  out[icmp + 1] = ICMP_NET_UNREACH;
  out.set(buf.subarray(off, off + quoted), icmp + 8);
  const ck = internetChecksum(out, icmp, 8 + quoted);
  out[icmp + 2] = ck >> 8;
  out[icmp + 3] = ck & 0xff;
  return total;
}
