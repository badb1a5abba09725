/**
 * Fuzz target: the udp backend's IPv4 packet parser (src/backend/udp/packet.ts). Any bytes give a
 * total length within the header and the bytes read, or a BadPacket code, and nothing else is
 * thrown; every function reads only the packet's own bytes (its result is the same whatever lies
 * around the packet in the buffer) and writes only where it says; the TTL decrement keeps a valid
 * header checksum valid; a net-unreachable reply has valid checksums and quotes the packet.
 */
import fc from "fast-check";
import {
  BadPacket,
  buildNetUnreachable,
  decrementTtl,
  ipv4Length,
  MAX_UNREACHABLE_LEN,
} from "../../src/backend/udp/packet.ts";
import { ipHeaderOk, refSum, setIpChecksum, writeIpv4Header } from "../kit/packets.ts";
import type { FuzzTarget } from "./harness.ts";

const CODES: number[] = Object.values(BadPacket);

/** Raw bytes, or an IPv4 header with fuzzed fields (so the checks past the first pass too). */
const packetBytes = fc.oneof(
  fc.uint8Array({ maxLength: 120 }),
  fc.record({
    ihl: fc.integer({ min: 0, max: 15 }),
    total: fc.oneof(fc.nat(140), fc.nat(65535)),
    len: fc.nat(140),
    proto: fc.constantFrom(1, 6, 17, 47),
    frag: fc.nat(0xffff),
    ttl: fc.nat(255),
    src: fc.uint8Array({ minLength: 4, maxLength: 4 }),
    dst: fc.uint8Array({ minLength: 4, maxLength: 4 }),
    icmpType: fc.nat(255),
    fill: fc.nat(255),
    goodSum: fc.boolean(),
  }).map((h) => {
    const b = new Uint8Array(Math.max(h.len, 20)).fill(h.fill);
    writeIpv4Header(b, 0, {
      total: h.total,
      proto: h.proto,
      src: h.src,
      dst: h.dst,
      frag: h.frag,
      ttl: h.ttl,
    });
    b[0] = 0x40 | h.ihl;
    const hl = h.ihl * 4;
    if (hl >= 20 && hl < b.length) b[hl] = h.icmpType;
    if (h.goodSum && hl >= 20 && hl <= b.length) setIpChecksum(b, 0);
    return b.subarray(0, h.len);
  }),
);

/** `p` at `off` in a buffer of `off + p.length + after` bytes filled with `fill` around it. */
function place(p: Uint8Array, off: number, after: number, fill: number): Uint8Array {
  const b = new Uint8Array(off + p.length + after).fill(fill);
  b.set(p, off);
  return b;
}

const layout = fc.record({ off: fc.nat(16), after: fc.nat(16) });

function same(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

export const udpPacketTarget: FuzzTarget = {
  name: "udp packet parser",
  properties: [
    {
      name: "ipv4Length: a length within header and bytes read, or a BadPacket code",
      property: () =>
        fc.property(packetBytes, layout, (p, { off, after }) => {
          const n = ipv4Length(place(p, off, after, 0), off, p.length);
          const m = ipv4Length(place(p, off, after, 0xff), off, p.length);
          if (n !== m) throw new Error(`result depends on bytes outside the packet: ${n} vs ${m}`);
          if (n < 0 && !CODES.includes(n)) throw new Error(`unknown code ${n}`);
          if (n >= 0 && (n < ((p[0] & 15) << 2) || n < 20 || n > p.length)) {
            throw new Error(`length ${n} for ${p.length} bytes`);
          }
        }),
    },
    {
      name: "decrementTtl, buildNetUnreachable: only the packet's bytes read, checksums valid",
      property: () =>
        fc.property(packetBytes, layout, fc.nat(8), (p, { off, after }, outOff) => {
          const len = ipv4Length(p, 0, p.length);
          if (len < 0) return;
          const pkt = p.slice(0, len);
          const outs = [0, 0xff].map((fill) => {
            const b = place(pkt, off, after, fill);
            const out = new Uint8Array(outOff + MAX_UNREACHABLE_LEN + 8).fill(fill);
            const m = buildNetUnreachable(b, off, len, out, outOff);
            if (!b.subarray(off, off + len).every((x, i) => x === pkt[i])) {
              throw new Error("buildNetUnreachable changed the packet");
            }
            if (
              !out.subarray(0, outOff).every((x) => x === fill) ||
              !out.subarray(outOff + m).every((x) => x === fill)
            ) {
              throw new Error(`buildNetUnreachable wrote outside its ${m} bytes`);
            }
            const okBefore = ipHeaderOk(pkt);
            const dec = decrementTtl(b, off);
            if (
              !b.subarray(0, off).every((x) => x === fill) ||
              !b.subarray(off + len).every((x) => x === fill)
            ) {
              throw new Error("decrementTtl wrote outside the packet");
            }
            if (dec !== pkt[8] > 1) throw new Error(`decrementTtl ${dec} at TTL ${pkt[8]}`);
            if (dec && (b[off + 8] !== pkt[8] - 1 || ipHeaderOk(b.subarray(off)) !== okBefore)) {
              throw new Error("TTL decrement broke the header checksum");
            }
            return { m, msg: out.slice(outOff, outOff + m), pkt: b.slice(off, off + len) };
          });
          if (
            outs[0].m !== outs[1].m || !same(outs[0].msg, outs[1].msg) ||
            !same(outs[0].pkt, outs[1].pkt)
          ) {
            throw new Error("result depends on bytes outside the packet");
          }
          const { m, msg } = outs[0];
          if (m === 0) return;
          const hl = (pkt[0] & 15) << 2;
          if (m > MAX_UNREACHABLE_LEN || m !== 28 + Math.min(len, hl + 8)) {
            throw new Error(`length ${m}`);
          }
          if (!ipHeaderOk(msg) || refSum(msg, 20, m - 20) !== 0xffff) {
            throw new Error("ICMP reply checksums");
          }
          if (!same(msg.subarray(28), pkt.subarray(0, m - 28)) || msg[20] !== 3 || msg[21] !== 0) {
            throw new Error("ICMP reply does not quote the packet");
          }
          // Never an error about an ICMP error (RFC 1812): only queries are answered.
          if (pkt[9] === 1 && ![8, 13, 15, 17].includes(pkt[hl])) {
            throw new Error("ICMP about ICMP error");
          }
        }),
    },
  ],
};
