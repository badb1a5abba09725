/**
 * Fuzz target: the udp backend's TUN offloads (src/backend/udp/offload.ts). A TCP super-packet
 * cut by TSO (TsoPlan, writeTsoSegment) and merged again by GRO's rule (coalescablePayload,
 * continuesFlow, nextSeq, finishSuperPacket, driven as UdpToTun drives them) gives back the
 * super-packet byte for byte, or (beyond 64 segments) super-packets that cut into the same
 * segments; TSO of any bytes writes segments with valid checksums from the packet's bytes only;
 * coalescablePayload and completeChecksum stay inside the packet.
 */
import fc from "fast-check";
import { words } from "../../src/backend/udp/checksum.ts";
import {
  coalescablePayload,
  COALESCE_MAX,
  completeChecksum,
  continuesFlow,
  finishSuperPacket,
  GSO_TCPV4,
  hasPsh,
  nextSeq,
  readVnetHdr,
  TsoPlan,
  VNET_HDR_LEN,
  type VnetHdr,
  writeTsoSegment,
  writeVnetHdr,
} from "../../src/backend/udp/offload.ts";
import {
  ACK,
  ipHeaderOk,
  l4ChecksumOk,
  PSH,
  setL4Checksum,
  TCP,
  writeIpv4Header,
} from "../kit/packets.ts";
import type { FuzzTarget } from "./harness.ts";

/** UdpToTun's limit on segments per super-packet (Linux GRO's too). */
const MAX_SEGMENTS = 64;
/** Segments per cut at most, so a case stays fast (mss is at least payload / this). */
const MAX_CUT = 300;

interface Super {
  bytes: Uint8Array;
  mss: number;
}

/** A TCP/IPv4 super-packet GRO may rebuild: no IP options, DF, ACK or ACK|PSH, full checksum. */
const superPacket: fc.Arbitrary<Super> = fc.record({
  tcpOpts: fc.integer({ min: 0, max: 10 }).chain((n) =>
    fc.uint8Array({ minLength: 4 * n, maxLength: 4 * n })
  ),
  payload: fc.oneof(fc.integer({ min: 1, max: 3000 }), fc.integer({ min: 1, max: 65535 - 80 })),
  mssPick: fc.double({ min: 0, max: 1, noNaN: true }),
  psh: fc.boolean(),
  seq: fc.nat(2 ** 32 - 1),
  ack: fc.nat(2 ** 32 - 1),
  id: fc.nat(0xffff),
  ttl: fc.integer({ min: 1, max: 255 }),
  tos: fc.nat(255),
  win: fc.nat(0xffff),
  ports: fc.tuple(fc.nat(0xffff), fc.nat(0xffff)),
  seed: fc.nat(255),
}).map((r) => {
  const thl = 20 + r.tcpOpts.length;
  const total = 20 + thl + r.payload;
  const b = new Uint8Array(total);
  writeIpv4Header(b, 0, {
    total,
    proto: TCP,
    src: [198, 18, 1, 2],
    dst: [198, 19, 3, 4],
    id: r.id,
    ttl: r.ttl,
    tos: r.tos,
  });
  const t = 20;
  b[t] = r.ports[0] >> 8, b[t + 1] = r.ports[0] & 0xff;
  b[t + 2] = r.ports[1] >> 8, b[t + 3] = r.ports[1] & 0xff;
  for (let i = 0; i < 4; i++) {
    b[t + 4 + i] = (r.seq >>> (24 - 8 * i)) & 0xff;
    b[t + 8 + i] = (r.ack >>> (24 - 8 * i)) & 0xff;
  }
  b[t + 12] = (thl >> 2) << 4;
  b[t + 13] = r.psh ? ACK | PSH : ACK;
  b[t + 14] = r.win >> 8, b[t + 15] = r.win & 0xff;
  b.set(r.tcpOpts, t + 20);
  for (let i = t + thl, x = r.seed; i < total; i++, x = (x * 73 + 41) & 0xff) b[i] = x;
  setL4Checksum(b, 0, total, TCP);
  const lo = Math.max(1, Math.ceil(r.payload / MAX_CUT));
  const mss = lo + Math.floor(r.mssPick * (r.payload + 8 - lo));
  return { bytes: b, mss };
});

/** TSO: the segments of the `len`-byte packet at `off` of `src`, each in its own buffer. */
function tso(src: Uint8Array, off: number, len: number, mss: number): Uint8Array[] | null {
  const p = new TsoPlan();
  if (!p.plan(src, off, len, mss)) return null;
  const out: Uint8Array[] = [];
  for (let i = 0; i < p.count; i++) {
    const dst = new Uint8Array(p.segmentLength(i) + 4);
    const n = writeTsoSegment(src, p, i, dst, words(dst), 0);
    out.push(dst.slice(0, n));
  }
  return out;
}

/** GRO as UdpToTun runs it over one receive batch: packets and rebuilt super-packets. */
function gro(pkts: Uint8Array[]): Super[] {
  const out: Super[] = [];
  let head: Uint8Array | null = null, parts: Uint8Array[] = [], segs = 0, total = 0, mss = 0;
  let next = 0;
  const flush = (psh: boolean) => {
    const h = head!;
    head = null;
    if (segs === 1) return void out.push({ bytes: h, mss: 0 });
    const buf = new Uint8Array(total + 4);
    buf.set(h);
    const vnet = new Uint8Array(VNET_HDR_LEN);
    finishSuperPacket(buf, words(buf), 0, total, mss, psh, vnet, 0);
    let at = h.length;
    for (const p of parts) buf.set(p, at), at += p.length;
    const v = readVnetHdr(vnet, 0, {} as VnetHdr);
    if (v.gsoType !== GSO_TCPV4 || v.gsoSize !== mss || v.csumStart !== 20 || v.csumOffset !== 16) {
      throw new Error(`virtio_net_hdr ${JSON.stringify(v)}`);
    }
    // What the kernel does with VNET_F_NEEDS_CSUM: complete the TCP checksum.
    if (!completeChecksum(buf, words(buf), 0, total, v.csumStart, v.csumOffset)) {
      throw new Error("completeChecksum refused a super-packet");
    }
    out.push({ bytes: buf.slice(0, total), mss });
  };
  for (const p of pkts) {
    const buf = new Uint8Array(p.length + 4);
    buf.set(p);
    const payload = coalescablePayload(buf, words(buf), 0, p.length);
    if (head !== null) {
      const both = new Uint8Array(head.length + 4 + buf.length);
      both.set(head);
      const at = (head.length + 3) & ~3;
      both.set(p, at);
      if (
        payload > 0 && payload <= mss && segs < MAX_SEGMENTS && total + payload <= COALESCE_MAX &&
        continuesFlow(both, 0, at, next)
      ) {
        parts.push(p.subarray(p.length - payload));
        segs++;
        total += payload;
        next = (next + payload) >>> 0;
        const psh = hasPsh(p, 0);
        if (payload < mss || psh) flush(psh);
        continue;
      }
      flush(false);
    }
    if (payload > 0 && !hasPsh(p, 0)) {
      head = p, parts = [], segs = 1, total = p.length, mss = payload;
      next = nextSeq(p, 0, payload);
      continue;
    }
    out.push({ bytes: p, mss: 0 });
  }
  if (head !== null) flush(false);
  return out;
}

function same(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** `p` at `off` in a 4-aligned buffer with `fill` around it. */
function place(p: Uint8Array, off: number, fill: number): Uint8Array {
  const b = new Uint8Array(off + p.length + 24).fill(fill);
  b.set(p, off);
  return b;
}

export const udpOffloadTarget: FuzzTarget = {
  name: "udp TSO/GRO",
  properties: [
    {
      name: "TSO then GRO gives the super-packet back (or super-packets that cut the same)",
      property: () =>
        fc.property(superPacket, ({ bytes, mss }) => {
          const segs = tso(bytes, 0, bytes.length, mss);
          if (!segs) throw new Error("TsoPlan refused a TCP super-packet");
          for (const s of segs) {
            if (!ipHeaderOk(s) || !l4ChecksumOk(s)) throw new Error("segment checksum");
          }
          const merged = gro(segs);
          if (segs.length <= MAX_SEGMENTS) {
            if (merged.length !== 1 || !same(merged[0].bytes, bytes)) {
              throw new Error(
                `${segs.length} segments merged into ${merged.length} packets, not the original`,
              );
            }
          }
          const again = merged.flatMap((m) =>
            m.mss ? tso(m.bytes, 0, m.bytes.length, m.mss)! : [m.bytes]
          );
          if (again.length !== segs.length || !again.every((s, i) => same(s, segs[i]))) {
            throw new Error("re-cutting the merged super-packets gives other segments");
          }
        }),
    },
    {
      name: "TSO of any bytes: valid segments made of the packet's bytes only",
      property: () =>
        fc.property(
          fc.oneof(
            fc.uint8Array({ minLength: 0, maxLength: 200 }),
            superPacket.map((s) => s.bytes.slice(0, 600)),
          ),
          fc.nat(7),
          fc.nat(0xffff),
          fc.nat(3),
          (p, off, mss0, corrupt) => {
            const q = p.slice();
            if (corrupt && q.length > 33) q[20 + 12] = (corrupt * 0x50) & 0xf0; // odd TCP header lengths
            const mss = mss0 === 0 ? 0 : Math.max(mss0, Math.ceil(q.length / MAX_CUT));
            const a = tso(place(q, off, 0), off, q.length, mss);
            const b = tso(place(q, off, 0xff), off, q.length, mss);
            if ((a === null) !== (b === null)) throw new Error("plan depends on bytes outside");
            if (!a || !b) return;
            let payload = 0;
            for (let i = 0; i < a.length; i++) {
              if (!same(a[i], b[i])) throw new Error(`segment ${i} depends on bytes outside`);
              if (!ipHeaderOk(a[i]) || !l4ChecksumOk(a[i])) {
                throw new Error(`segment ${i} checksum`);
              }
              const hl = ((a[i][0] & 15) << 2) + ((a[i][((a[i][0] & 15) << 2) + 12] >> 4) << 2);
              payload += a[i].length - hl;
            }
            const hl = ((q[0] & 15) << 2) + ((q[((q[0] & 15) << 2) + 12] >> 4) << 2);
            if (payload !== q.length - hl) {
              throw new Error(`payload ${payload} of ${q.length - hl}`);
            }
          },
        ),
    },
    {
      name: "coalescablePayload and completeChecksum stay inside the packet",
      property: () =>
        fc.property(
          fc.oneof(
            fc.uint8Array({ maxLength: 120 }),
            superPacket.map((s) => s.bytes.slice(0, 200)),
          ),
          fc.nat(7),
          fc.nat(0xffff),
          fc.nat(0xffff),
          (p, off, start, offset) => {
            const r = [0, 0xff].map((fill) => {
              const b = place(p, off, fill);
              const w = words(b);
              const n = coalescablePayload(b, w, off, p.length);
              const ok = completeChecksum(b, w, off, p.length, start % 128, offset % 128);
              return { n, ok, b, fill };
            });
            if (r[0].n !== r[1].n || r[0].ok !== r[1].ok) {
              throw new Error("depends on bytes outside");
            }
            if (r[0].n < 0 || r[0].n > Math.max(0, p.length - 40)) {
              throw new Error(
                `payload ${r[0].n}`,
              );
            }
            for (const { b, ok, fill } of r) {
              const at = (start % 128) + (offset % 128);
              for (let i = 0; i < b.length; i++) {
                const inField = ok && i >= off + at && i < off + at + 2;
                if (!inField && i >= off && i < off + p.length && b[i] !== p[i - off]) {
                  throw new Error(`completeChecksum wrote byte ${i - off}`);
                }
                if ((i < off || i >= off + p.length) && b[i] !== fill) {
                  throw new Error(`wrote outside the packet at ${i - off}`);
                }
              }
            }
          },
        ),
    },
    {
      name: "readVnetHdr(writeVnetHdr(h)) = h",
      property: () =>
        fc.property(
          fc.tuple(
            fc.nat(255),
            fc.nat(255),
            fc.nat(0xffff),
            fc.nat(0xffff),
            fc.nat(0xffff),
            fc.nat(0xffff),
          ),
          fc.nat(7),
          ([flags, gsoType, hdrLen, gsoSize, csumStart, csumOffset], off) => {
            const b = new Uint8Array(off + VNET_HDR_LEN);
            writeVnetHdr(b, off, flags, gsoType, hdrLen, gsoSize, csumStart, csumOffset);
            const h = readVnetHdr(b, off, {} as VnetHdr);
            const want = { flags, gsoType, hdrLen, gsoSize, csumStart, csumOffset };
            if (JSON.stringify(h) !== JSON.stringify(want)) throw new Error(JSON.stringify(h));
          },
        ),
    },
  ],
};
