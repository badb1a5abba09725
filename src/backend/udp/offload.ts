/**
 * TUN offloads for the udp backend (IFF_VNET_HDR): every packet read from or written into the
 * TUN carries a 10-byte virtio_net_hdr. Reading, the kernel may hand over a TCP super-packet (up
 * to 64 KiB, TSO) with its checksum left to us; we cut it into MTU-size segments with complete
 * checksums, so each UDP datagram on the wire is still one ordinary IP packet (flanneld's wire
 * format). Writing, consecutive TCP segments of one flow are coalesced into one super-packet (as
 * the kernel's GRO does), so the kernel walks its receive path once per burst instead of once per
 * packet. All functions work in place on (buffer, offset) and allocate nothing per packet.
 *
 * Checksums come from checksum.ts, summed 32 bits at a time through `words(buf)`, made once per
 * buffer.
 *
 * @example
 * ```ts
 * const w = words(buf);
 * const v = readVnetHdr(buf, 0);                  // flags, gsoType, gsoSize, csumStart, ...
 * const p = new TsoPlan();
 * if (v.gsoType === GSO_TCPV4 && p.plan(buf, 10, n - 10, v.gsoSize)) {
 *   for (let i = 0; i < p.count; i++) writeTsoSegment(buf, p, i, out, outWords, slotOff(i));
 * }
 * ```
 */
import { fold, pseudoSum, setIpChecksum, sum16 } from "./checksum.ts";
import { IPPROTO_TCP, IPPROTO_UDP } from "./packet.ts";

/** sizeof(struct virtio_net_hdr): flags, gso_type, hdr_len, gso_size, csum_start, csum_offset. */
export const VNET_HDR_LEN = 10;
/** virtio_net_hdr.flags: the checksum from csum_start on is still to be computed. */
export const VNET_F_NEEDS_CSUM = 1;
export const GSO_NONE = 0;
export const GSO_TCPV4 = 1;
/** Bit or-ed into gso_type when the flow uses ECN (CWR must then only be on the first). */
export const GSO_ECN = 0x80;

const TCP_FIN = 0x01;
const TCP_PSH = 0x08;
const TCP_ACK = 0x10;
const TCP_CWR = 0x80;
/** Largest IPv4 total length. */
const IP_MAX = 65535;

/** The fields of a virtio_net_hdr (little-endian on the hosts weft runs on). */
export interface VnetHdr {
  flags: number;
  gsoType: number;
  hdrLen: number;
  gsoSize: number;
  csumStart: number;
  csumOffset: number;
}

/** Reads the virtio_net_hdr at `off` into `out` (reused: no allocation per packet). */
export function readVnetHdr(buf: Uint8Array, off: number, out: VnetHdr): VnetHdr {
  out.flags = buf[off];
  out.gsoType = buf[off + 1];
  out.hdrLen = buf[off + 2] | (buf[off + 3] << 8);
  out.gsoSize = buf[off + 4] | (buf[off + 5] << 8);
  out.csumStart = buf[off + 6] | (buf[off + 7] << 8);
  out.csumOffset = buf[off + 8] | (buf[off + 9] << 8);
  return out;
}

/** Writes a virtio_net_hdr at `off`. */
export function writeVnetHdr(
  buf: Uint8Array,
  off: number,
  flags: number,
  gsoType: number,
  hdrLen: number,
  gsoSize: number,
  csumStart: number,
  csumOffset: number,
): void {
  buf[off] = flags;
  buf[off + 1] = gsoType;
  buf[off + 2] = hdrLen & 0xff;
  buf[off + 3] = hdrLen >> 8;
  buf[off + 4] = gsoSize & 0xff;
  buf[off + 5] = gsoSize >> 8;
  buf[off + 6] = csumStart & 0xff;
  buf[off + 7] = csumStart >> 8;
  buf[off + 8] = csumOffset & 0xff;
  buf[off + 9] = csumOffset >> 8;
}

/**
 * Completes a partial (VNET_F_NEEDS_CSUM) checksum of the `len`-byte packet at `off`: the field
 * at csumStart + csumOffset holds the pseudo-header sum; the checksum covers csumStart to the
 * end. Returns false (packet untouched) when the offsets do not fit the packet.
 */
export function completeChecksum(
  buf: Uint8Array,
  w: Uint32Array,
  off: number,
  len: number,
  csumStart: number,
  csumOffset: number,
): boolean {
  const at = csumStart + csumOffset;
  if (csumStart >= len || at + 2 > len) return false;
  let c = ~sum16(buf, w, off + csumStart, len - csumStart) & 0xffff;
  // A UDP checksum of 0 means "none"; the computed value 0 is sent as 0xffff (RFC 768).
  if (c === 0 && buf[off + 9] === IPPROTO_UDP && csumOffset === 6) c = 0xffff;
  buf[off + at] = c >> 8;
  buf[off + at + 1] = c & 0xff;
  return true;
}

/** How a TCP/IPv4 super-packet is cut: header bytes, payload, segment size and count. */
export class TsoPlan {
  /** IPv4 header length, IPv4 + TCP header length, payload bytes, segment payload (MSS). */
  ipHl = 0;
  hl = 0;
  payload = 0;
  mss = 0;
  count = 0;
  /** Offset of the super-packet's IP header in its buffer, and its IP id and TCP seq. */
  off = 0;
  id = 0;
  seq = 0;

  /**
   * Plans the cut of the `len`-byte packet at `off` into segments of `mss` payload bytes.
   * False when it is not a TCP/IPv4 packet with whole headers and a payload (send as is then).
   */
  plan(buf: Uint8Array, off: number, len: number, mss: number): boolean {
    if (len < 40 || buf[off] >> 4 !== 4 || buf[off + 9] !== IPPROTO_TCP || mss <= 0) return false;
    const ipHl = (buf[off] & 15) << 2;
    if (ipHl < 20 || ipHl + 20 > len) return false;
    const tcpHl = (buf[off + ipHl + 12] >> 4) << 2;
    if (tcpHl < 20 || ipHl + tcpHl >= len) return false;
    this.off = off;
    this.ipHl = ipHl;
    this.hl = ipHl + tcpHl;
    this.payload = len - this.hl;
    this.mss = mss;
    this.count = Math.ceil(this.payload / mss);
    this.id = (buf[off + 4] << 8) | buf[off + 5];
    const t = off + ipHl;
    this.seq = ((buf[t + 4] << 24) | (buf[t + 5] << 16) | (buf[t + 6] << 8) | buf[t + 7]) >>> 0;
    return true;
  }

  /** Total IP length of segment i. */
  segmentLength(i: number): number {
    return this.hl + Math.min(this.mss, this.payload - i * this.mss);
  }
}

/**
 * Writes segment i of the planned super-packet in `src` to `dst` at `dstOff` (4-byte aligned):
 * the headers with this segment's IP length, id (+i) and checksum, TCP sequence number, flags
 * (FIN and PSH only on the last, CWR only on the first) and full TCP checksum, then its payload.
 * Returns the segment's length. `dw` is words(dst).
 */
export function writeTsoSegment(
  src: Uint8Array,
  p: TsoPlan,
  i: number,
  dst: Uint8Array,
  dw: Uint32Array,
  dstOff: number,
): number {
  const seg = Math.min(p.mss, p.payload - i * p.mss);
  const total = p.hl + seg;
  dst.set(src.subarray(p.off, p.off + p.hl), dstOff);
  const from = p.off + p.hl + i * p.mss;
  dst.set(src.subarray(from, from + seg), dstOff + p.hl);
  const o = dstOff;
  dst[o + 2] = total >> 8;
  dst[o + 3] = total & 0xff;
  const id = (p.id + i) & 0xffff;
  dst[o + 4] = id >> 8;
  dst[o + 5] = id & 0xff;
  setIpChecksum(dst, dw, o);
  const t = o + p.ipHl;
  const seq = (p.seq + i * p.mss) >>> 0;
  dst[t + 4] = seq >>> 24;
  dst[t + 5] = (seq >>> 16) & 0xff;
  dst[t + 6] = (seq >>> 8) & 0xff;
  dst[t + 7] = seq & 0xff;
  let flags = dst[t + 13];
  if (i !== p.count - 1) flags &= ~(TCP_FIN | TCP_PSH);
  if (i !== 0) flags &= ~TCP_CWR;
  dst[t + 13] = flags;
  dst[t + 16] = 0;
  dst[t + 17] = 0;
  const l4 = total - p.ipHl;
  const c = ~fold(pseudoSum(dst, o, IPPROTO_TCP, l4) + sum16(dst, dw, t, l4)) & 0xffff;
  dst[t + 16] = c >> 8;
  dst[t + 17] = c & 0xff;
  return total;
}

/**
 * For coalescing received packets: the payload length of the `len`-byte packet at `off` when it
 * may join a super-packet (IPv4 with DF, without options or fragmentation, TCP with only ACK or ACK|PSH,
 * a payload, and correct IP and TCP checksums, which GRO checks too: the kernel does not check
 * them again once the super-packet's headers are rewritten), else 0.
 */
export function coalescablePayload(
  buf: Uint8Array,
  w: Uint32Array,
  off: number,
  len: number,
): number {
  if (len < 41 || buf[off] !== 0x45 || buf[off + 9] !== IPPROTO_TCP) return 0;
  // Flags exactly DF (no reserved bit, no MF, no fragment offset): without DF, GRO would also
  // need consecutive IP ids, and a reserved bit would be lost in the merge.
  if (buf[off + 6] !== 0x40 || buf[off + 7] !== 0) return 0;
  // The super-packet's IP header is rewritten with a fresh checksum: check the old one first.
  if (sum16(buf, w, off, 20) !== 0xffff) return 0;
  const t = off + 20;
  const flags = buf[t + 13];
  if ((flags & ~TCP_PSH) !== TCP_ACK) return 0;
  const hl = 20 + ((buf[t + 12] >> 4) << 2);
  if (hl < 40 || hl >= len) return 0;
  if (fold(pseudoSum(buf, off, IPPROTO_TCP, len - 20) + sum16(buf, w, t, len - 20)) !== 0xffff) {
    return 0;
  }
  return len - hl;
}

/**
 * Whether the coalescable packet at `next` continues the super-packet whose first packet is at
 * `head`, given the sequence number expected next: same addresses, ports, TOS, TTL, DF, TCP
 * header length and options, ACK number and window, and the next bytes of the stream, as the
 * kernel's GRO asks. Unlike GRO, IP ids are not compared: both packets have DF set, where ids
 * carry no meaning (RFC 6864); re-segmenting numbers them from the first.
 */
export function continuesFlow(
  buf: Uint8Array,
  head: number,
  next: number,
  expectSeq: number,
): boolean {
  if (buf[head + 1] !== buf[next + 1] || buf[head + 8] !== buf[next + 8]) return false;
  if ((buf[head + 6] & 0x40) !== (buf[next + 6] & 0x40)) return false;
  for (let i = 12; i < 20; i++) if (buf[head + i] !== buf[next + i]) return false;
  const th = head + 20, tn = next + 20;
  const seq = ((buf[tn + 4] << 24) | (buf[tn + 5] << 16) | (buf[tn + 6] << 8) | buf[tn + 7]) >>> 0;
  if (seq !== expectSeq) return false;
  if (buf[th + 12] !== buf[tn + 12]) return false;
  const tcpHl = (buf[th + 12] >> 4) << 2;
  // Ports (0..3), ack (8..11), window (14, 15), urgent pointer and options (18..tcpHl).
  for (let i = 0; i < 4; i++) if (buf[th + i] !== buf[tn + i]) return false;
  for (let i = 8; i < 12; i++) if (buf[th + i] !== buf[tn + i]) return false;
  if (buf[th + 14] !== buf[tn + 14] || buf[th + 15] !== buf[tn + 15]) return false;
  for (let i = 18; i < tcpHl; i++) if (buf[th + i] !== buf[tn + i]) return false;
  return true;
}

/** TCP sequence number following the packet at `off` with `payload` bytes. */
export function nextSeq(buf: Uint8Array, off: number, payload: number): number {
  const t = off + 20;
  const seq = ((buf[t + 4] << 24) | (buf[t + 5] << 16) | (buf[t + 6] << 8) | buf[t + 7]) >>> 0;
  return (seq + payload) >>> 0;
}

/** Whether the packet at `off` has PSH set (a super-packet ends with it). */
export function hasPsh(buf: Uint8Array, off: number): boolean {
  return (buf[off + 33] & TCP_PSH) !== 0;
}

/** Largest total length a super-packet may reach. */
export const COALESCE_MAX = IP_MAX;

/**
 * Turns the first packet at `head` into the header of a super-packet of `total` IP bytes whose
 * payloads follow in other buffers: IP length and checksum, PSH when the last segment had it,
 * and the TCP checksum field set to the pseudo-header sum (the kernel completes it). Writes the
 * matching virtio_net_hdr (TCPV4, gso_size `mss`, checksum from the TCP header) at `vnet`.
 */
export function finishSuperPacket(
  buf: Uint8Array,
  w: Uint32Array,
  head: number,
  total: number,
  mss: number,
  psh: boolean,
  vnet: Uint8Array,
  vnetOff: number,
): void {
  buf[head + 2] = total >> 8;
  buf[head + 3] = total & 0xff;
  setIpChecksum(buf, w, head);
  const t = head + 20;
  if (psh) buf[t + 13] |= TCP_PSH;
  const p = fold(pseudoSum(buf, head, IPPROTO_TCP, total - 20));
  buf[t + 16] = p >> 8;
  buf[t + 17] = p & 0xff;
  const hl = 20 + ((buf[t + 12] >> 4) << 2);
  writeVnetHdr(vnet, vnetOff, VNET_F_NEEDS_CSUM, GSO_TCPV4, hl, mss, 20, 16);
}
