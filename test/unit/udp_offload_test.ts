/**
 * Unit tests of the udp backend's TUN offloads (src/backend/udp/offload.ts) on packets crafted
 * byte by byte: the fast one's-complement sum against a plain RFC 1071 reference, completion of
 * partial checksums, TSO segmentation of TCP super-packets, the GRO-like coalescing rules, the
 * super-packet header for the kernel, and the virtio_net_hdr codec. All checksums are verified
 * with the reference below, independently of the module. Deterministic (seeded PRNG), no I/O.
 */
import assert from "node:assert/strict";
import {
  coalescablePayload,
  completeChecksum,
  continuesFlow,
  finishSuperPacket,
  GSO_ECN,
  GSO_TCPV4,
  hasPsh,
  nextSeq,
  readVnetHdr,
  TsoPlan,
  VNET_F_NEEDS_CSUM,
  VNET_HDR_LEN,
  type VnetHdr,
  writeTsoSegment,
  writeVnetHdr,
} from "../../src/backend/udp/offload.ts";
import { ipv4Length } from "../../src/backend/udp/packet.ts";
import {
  fold,
  headerChecksumOk,
  internetChecksum,
  pseudoSum,
  sum16,
  words,
} from "../../src/backend/udp/checksum.ts";
import {
  ACK,
  CWR,
  ECE,
  FIN,
  l4ChecksumOk,
  prng,
  PSH,
  randomBytes,
  refFold,
  refPseudo,
  refSum,
  RST,
  setIpChecksum,
  setL4Checksum,
  SYN,
  TCP,
  u16,
  u32,
  UDP,
  URG,
  writeIpv4Header,
} from "../kit/packets.ts";

const SRC = [198, 19, 1, 2];
const DST = [198, 19, 2, 3];
/** NOP, NOP, timestamp (kind 8, length 10, TSval, TSecr): 12 bytes, TCP header of 32. */
const TS_OPTS = [1, 1, 8, 10, 0x01, 0x02, 0x03, 0x04, 0x0a, 0x0b, 0x0c, 0x0d];
/** Slot size of the output arenas: every slot starts 4-byte aligned. */
const SLOT = 2048;

interface Spec {
  src?: number[];
  dst?: number[];
  sport?: number;
  dport?: number;
  seq?: number;
  ack?: number;
  flags?: number;
  window?: number;
  urgent?: number;
  tos?: number;
  ttl?: number;
  id?: number;
  /** Flags and fragment offset word: 0x4000 = DF (default), 0x2000 = MF, low 13 bits offset. */
  frag?: number;
  proto?: number;
  ipOpts?: number[];
  tcpOpts?: number[];
  payload?: Uint8Array;
  /** "full": correct TCP checksum (default); "partial": folded pseudo-header sum (TSO input). */
  csum?: "full" | "partial";
}

/** Writes a TCP/IPv4 packet at `off` with a correct IP header checksum; returns its length. */
function tcpPacket(b: Uint8Array, off: number, s: Spec = {}): number {
  const ipOpts = s.ipOpts ?? [];
  const tcpOpts = s.tcpOpts ?? TS_OPTS;
  const payload = s.payload ?? new Uint8Array(0);
  const ihl = 20 + ipOpts.length;
  const thl = 20 + tcpOpts.length;
  const total = ihl + thl + payload.length;
  b.fill(0, off, off + total);
  writeIpv4Header(b, off, {
    total,
    proto: s.proto ?? TCP,
    src: s.src ?? SRC,
    dst: s.dst ?? DST,
    tos: s.tos,
    id: s.id ?? 0x1234,
    frag: s.frag,
    ttl: s.ttl,
    options: ipOpts,
  });
  const t = off + ihl;
  const sport = s.sport ?? 40000;
  const dport = s.dport ?? 8080;
  b[t] = sport >> 8;
  b[t + 1] = sport & 0xff;
  b[t + 2] = dport >> 8;
  b[t + 3] = dport & 0xff;
  const seq = s.seq ?? 1000;
  const ack = s.ack ?? 0x55667788;
  for (let i = 0; i < 4; i++) {
    b[t + 4 + i] = (seq >>> (24 - 8 * i)) & 0xff;
    b[t + 8 + i] = (ack >>> (24 - 8 * i)) & 0xff;
  }
  b[t + 12] = (thl >> 2) << 4;
  b[t + 13] = s.flags ?? ACK;
  const win = s.window ?? 0x1f6a;
  b[t + 14] = win >> 8;
  b[t + 15] = win & 0xff;
  const urg = s.urgent ?? 0;
  b[t + 18] = urg >> 8;
  b[t + 19] = urg & 0xff;
  b.set(tcpOpts, t + 20);
  b.set(payload, t + thl);
  if ((s.csum ?? "full") === "full") {
    setL4Checksum(b, off, total, TCP);
  } else {
    const p = refPseudo(b, off, TCP, total - ihl);
    b[t + 16] = p >> 8;
    b[t + 17] = p & 0xff;
  }
  return total;
}

/** A UDP/IPv4 packet at off with a correct IP checksum and a zero UDP checksum. */
function udpPacket(b: Uint8Array, off: number, payload: Uint8Array): number {
  const total = 28 + payload.length;
  b.fill(0, off, off + total);
  writeIpv4Header(b, off, { total, proto: UDP, src: SRC, dst: DST });
  const u = off + 20;
  b[u] = 0x1f;
  b[u + 1] = 0x90; // 8080
  b[u + 2] = 0x21;
  b[u + 3] = 0x18; // 8472
  b[u + 4] = (total - 20) >> 8;
  b[u + 5] = (total - 20) & 0xff;
  b.set(payload, u + 8);
  return total;
}

function newVnet(): VnetHdr {
  return { flags: 0, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 0, csumOffset: 0 };
}

// ---------------------------------------------------------------------------------------------
// sum16 and fold

Deno.test("sum16 equals the RFC 1071 reference for random lengths at every offset 0..7", () => {
  const data = randomBytes(3000 + 16, 0xc0ffee);
  const w = words(data);
  const r = prng(7);
  const lengths = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 15, 16, 17, 2999, 3000];
  for (let i = 0; i < 150; i++) lengths.push(Math.floor(r() * 3001));
  let odd = 0;
  for (const len of lengths) {
    if (len & 1) odd++;
    for (let off = 0; off < 8; off++) {
      assert.equal(sum16(data, w, off, len), refSum(data, off, len), `len ${len} off ${off}`);
    }
  }
  assert.ok(odd > 20, "odd lengths must be covered");
  // It agrees with internetChecksum too (sum16 is the uncomplemented sum).
  for (let off = 0; off < 8; off++) {
    assert.equal(sum16(data, w, off, 1501), ~internetChecksum(data, off, 1501) & 0xffff);
  }
});

Deno.test("sum16 on a buffer that is a 4-aligned view into a larger ArrayBuffer", () => {
  const big = randomBytes(4096, 99);
  const view = big.subarray(12, 12 + 3000);
  const w = words(view);
  for (let off = 0; off < 8; off++) {
    for (const len of [0, 1, 3, 64, 1499, 2992 - off]) {
      assert.equal(sum16(view, w, off, len), refSum(view, off, len), `len ${len} off ${off}`);
    }
  }
  assert.throws(() => words(big.subarray(2)), RangeError);
});

Deno.test("sum16 over 64 KiB of 0xff and of random bytes (large 32-bit accumulations)", () => {
  const ff = new Uint8Array(65536).fill(0xff);
  const wf = words(ff);
  for (let off = 0; off < 8; off++) {
    assert.equal(sum16(ff, wf, off, 65535 - off), refSum(ff, off, 65535 - off));
    assert.equal(sum16(ff, wf, off, 65528), 0xffff);
  }
  const rnd = randomBytes(65536, 4242);
  const wr = words(rnd);
  for (let off = 0; off < 8; off++) {
    assert.equal(sum16(rnd, wr, off, 65535 - off), refSum(rnd, off, 65535 - off));
  }
  // All zeros sum to 0 (not 0xffff).
  const z = new Uint8Array(64);
  assert.equal(sum16(z, words(z), 3, 50), 0);
});

Deno.test("fold reduces sums up to 2^53 modulo 0xffff into 1..0xffff", () => {
  assert.equal(fold(0), 0);
  assert.equal(fold(1), 1);
  assert.equal(fold(0xffff), 0xffff);
  assert.equal(fold(0x10000), 1);
  assert.equal(fold(0x1fffe), 0xffff);
  assert.equal(fold(0x1ffff), 1);
  assert.equal(fold(0xffffffff), 0xffff);
  assert.equal(fold(0x100000000), 1);
  assert.equal(fold(2 ** 53 - 1), refMod(2n ** 53n - 1n));
  assert.equal(fold(2 ** 52), refMod(2n ** 52n));
  const r = prng(31337);
  for (let i = 0; i < 2000; i++) {
    const hi = Math.floor(r() * 2 ** 21);
    const lo = Math.floor(r() * 2 ** 32);
    const v = hi * 2 ** 32 + lo;
    assert.equal(fold(v), refMod(BigInt(hi) * 2n ** 32n + BigInt(lo)), `fold(${v})`);
  }
  function refMod(v: bigint): number {
    if (v === 0n) return 0;
    const m = Number(v % 0xffffn);
    return m === 0 ? 0xffff : m;
  }
});

// ---------------------------------------------------------------------------------------------
// completeChecksum

Deno.test("completeChecksum completes a CHECKSUM_PARTIAL TCP packet", () => {
  for (const [plen, seed] of [[0, 1], [1, 2], [1000, 3], [1447, 4]]) {
    const b = new Uint8Array(2048);
    const len = tcpPacket(b, 0, { payload: randomBytes(plen, seed), csum: "partial" });
    // The kernel leaves the folded, uncomplemented pseudo-header sum in the field.
    const ps = fold(pseudoSum(b, 0, TCP, len - 20));
    assert.equal(ps, refPseudo(b, 0, TCP, len - 20));
    assert.equal(u16(b, 36), ps);
    assert.ok(!l4ChecksumOk(b, 0, len));
    assert.equal(completeChecksum(b, words(b), 0, len, 20, 16), true);
    assert.ok(l4ChecksumOk(b, 0, len), `payload ${plen}`);
    // The same as a full computation.
    const ref = b.slice(0, len);
    setL4Checksum(ref, 0, len);
    assert.deepEqual(b.subarray(0, len), ref);
  }
});

Deno.test("completeChecksum completes a UDP packet, at an unaligned offset too", () => {
  for (const off of [0, 10, 13]) {
    for (const plen of [0, 1, 33, 1200]) {
      const b = new Uint8Array(2048);
      const len = udpPacket(b, off, randomBytes(plen, plen + off));
      const ps = fold(pseudoSum(b, off, UDP, len - 20));
      b[off + 26] = ps >> 8;
      b[off + 27] = ps & 0xff;
      assert.equal(completeChecksum(b, words(b), off, len, 20, 6), true);
      assert.ok(l4ChecksumOk(b, off, len, UDP), `off ${off} payload ${plen}`);
    }
  }
});

Deno.test("completeChecksum sends a computed UDP checksum of 0 as 0xffff, TCP's stays 0", () => {
  // Tune the last two payload bytes so the whole sum is 0xffff, i.e. the checksum is 0.
  const tune = (b: Uint8Array, off: number, len: number, proto: number, field: number) => {
    b[off + len - 2] = b[off + len - 1] = 0;
    const ps = fold(pseudoSum(b, off, proto, len - 20));
    b[off + field] = ps >> 8;
    b[off + field + 1] = ps & 0xff;
    const s = refSum(b, off + 20, len - 20);
    const y = 0xffff - s; // s + y = 0xffff
    b[off + len - 2] = y >> 8;
    b[off + len - 1] = y & 0xff;
    assert.equal(refSum(b, off + 20, len - 20), 0xffff);
  };
  const u = new Uint8Array(256);
  const ulen = udpPacket(u, 0, randomBytes(40, 5));
  tune(u, 0, ulen, UDP, 26);
  assert.equal(completeChecksum(u, words(u), 0, ulen, 20, 6), true);
  assert.equal(u16(u, 26), 0xffff);
  assert.ok(l4ChecksumOk(u, 0, ulen, UDP));

  const t = new Uint8Array(256);
  const tlen = tcpPacket(t, 0, { payload: randomBytes(40, 6), csum: "partial" });
  tune(t, 0, tlen, TCP, 36);
  assert.equal(completeChecksum(t, words(t), 0, tlen, 20, 16), true);
  assert.equal(u16(t, 36), 0);
  assert.ok(l4ChecksumOk(t, 0, tlen));
});

Deno.test("completeChecksum refuses offsets outside the packet and leaves it untouched", () => {
  const b = new Uint8Array(256);
  const len = tcpPacket(b, 4, { payload: randomBytes(10, 8), csum: "partial" });
  const before = b.slice();
  const w = words(b);
  for (
    const [start, offset] of [
      [len, 0], // start at the end
      [len + 5, 0],
      [20, len - 20 - 1], // field would end one byte beyond the packet
      [20, len - 20],
      [len - 1, 0],
      [0, len],
    ]
  ) {
    assert.equal(completeChecksum(b, w, 4, len, start, offset), false, `${start}/${offset}`);
    assert.deepEqual(b, before);
  }
  // The field as the very last two bytes fits.
  assert.equal(completeChecksum(b, w, 4, len, 20, len - 22), true);
});

// ---------------------------------------------------------------------------------------------
// TSO: TsoPlan and writeTsoSegment

interface TsoCase {
  payload: number;
  mss: number;
  flags: number;
  seq: number;
  id?: number;
  ipOpts?: number[];
  tcpOpts?: number[];
}

/** Builds the super-packet behind a virtio_net_hdr, cuts it, and checks every segment. */
function checkTso(c: TsoCase, seed: number) {
  const payload = randomBytes(c.payload, seed);
  const ipOpts = c.ipOpts ?? [];
  const tcpOpts = c.tcpOpts ?? TS_OPTS;
  const ihl = 20 + ipOpts.length;
  const hl = ihl + 20 + tcpOpts.length;
  const id = c.id ?? 0x1234;
  const src = new Uint8Array(VNET_HDR_LEN + 65536);
  const total = tcpPacket(src, VNET_HDR_LEN, {
    seq: c.seq,
    id,
    flags: c.flags,
    ipOpts,
    tcpOpts,
    payload,
    csum: "partial",
    tos: 0x02,
    ttl: 63,
  });
  const ecn = (c.flags & CWR) !== 0 ? GSO_ECN : 0;
  writeVnetHdr(src, 0, VNET_F_NEEDS_CSUM, GSO_TCPV4 | ecn, hl, c.mss, ihl, 16);
  const n = VNET_HDR_LEN + total;
  const v = readVnetHdr(src, 0, newVnet());
  assert.equal(v.gsoType & ~GSO_ECN, GSO_TCPV4);

  const srcBefore = src.slice();
  const p = new TsoPlan();
  assert.equal(p.plan(src, VNET_HDR_LEN, n - VNET_HDR_LEN, v.gsoSize), true);
  const count = Math.ceil(c.payload / c.mss);
  assert.equal(p.count, count);
  assert.equal(p.hl, hl);
  assert.equal(p.ipHl, ihl);
  assert.equal(p.payload, c.payload);
  assert.equal(p.mss, c.mss);
  assert.equal(p.id, id);
  assert.equal(p.seq, c.seq >>> 0);

  const out = new Uint8Array(SLOT * count).fill(0xa5);
  const ow = words(out);
  const lens: number[] = [];
  for (let i = 0; i < count; i++) lens.push(writeTsoSegment(src, p, i, out, ow, SLOT * i));
  assert.deepEqual(src, srcBefore, "the super-packet is not modified");

  const joined = new Uint8Array(c.payload);
  let at = 0;
  const s0 = VNET_HDR_LEN;
  const t0 = s0 + ihl;
  for (let i = 0; i < count; i++) {
    const o = SLOT * i;
    const t = o + ihl;
    const seg = Math.min(c.mss, c.payload - i * c.mss);
    const msg = `segment ${i}/${count} (mss ${c.mss}, payload ${c.payload})`;
    assert.equal(lens[i], hl + seg, msg);
    assert.equal(p.segmentLength(i), hl + seg, msg);
    assert.equal(ipv4Length(out, o, SLOT), hl + seg, msg);
    assert.equal(u16(out, o + 4), (id + i) & 0xffff, msg);
    assert.ok(headerChecksumOk(out, o), msg);
    assert.ok(l4ChecksumOk(out, o, hl + seg), msg);
    assert.equal(u32(out, t + 4), (c.seq + i * c.mss) % 2 ** 32, msg);
    let flags = c.flags;
    if (i !== count - 1) flags &= ~(FIN | PSH);
    if (i !== 0) flags &= ~CWR;
    assert.equal(out[t + 13], flags, msg);
    // Everything else of the headers is copied: version/IHL, TOS, DF/TTL/proto, addresses, IP
    // options, ports, ack, data offset, window, urgent pointer and TCP options.
    assert.deepEqual(out.subarray(o, o + 2), src.subarray(s0, s0 + 2), msg);
    assert.deepEqual(out.subarray(o + 6, o + 10), src.subarray(s0 + 6, s0 + 10), msg);
    assert.deepEqual(out.subarray(o + 12, o + ihl), src.subarray(s0 + 12, s0 + ihl), msg);
    assert.deepEqual(out.subarray(t, t + 4), src.subarray(t0, t0 + 4), msg);
    assert.deepEqual(out.subarray(t + 8, t + 13), src.subarray(t0 + 8, t0 + 13), msg);
    assert.deepEqual(out.subarray(t + 14, t + 16), src.subarray(t0 + 14, t0 + 16), msg);
    assert.deepEqual(out.subarray(t + 18, o + hl), src.subarray(t0 + 18, s0 + hl), msg);
    assert.deepEqual([...out.subarray(o + ihl + 20, o + hl)], tcpOpts, msg);
    joined.set(out.subarray(o + hl, o + hl + seg), at);
    at += seg;
    // Nothing written beyond the segment.
    if (hl + seg < SLOT) assert.equal(out[o + hl + seg], 0xa5, msg);
  }
  assert.equal(at, c.payload);
  assert.deepEqual(joined, payload);
  return { out, count, hl };
}

Deno.test("TSO: 5000 bytes at mss 1388 with seq wrap-around, ACK|PSH|FIN, with and without CWR", () => {
  for (const flags of [ACK | PSH | FIN, ACK | PSH | FIN | CWR, ACK | PSH | FIN | CWR | ECE]) {
    // The second segment's sequence number wraps past 2^32.
    const { count } = checkTso({ payload: 5000, mss: 1388, flags, seq: 2 ** 32 - 2000 }, 11);
    assert.equal(count, 4);
  }
});

Deno.test("TSO: an mss that divides the payload exactly, and one larger than the payload", () => {
  assert.equal(checkTso({ payload: 5000, mss: 1000, flags: ACK | PSH | FIN, seq: 7 }, 12).count, 5);
  assert.equal(
    checkTso({ payload: 5000, mss: 1250, flags: ACK | CWR, seq: 0xffffffff }, 13).count,
    4,
  );
  // One segment: it is both the first and the last (keeps FIN, PSH and CWR).
  assert.equal(
    checkTso({ payload: 900, mss: 1388, flags: ACK | PSH | FIN | CWR, seq: 1 }, 14).count,
    1,
  );
  assert.equal(checkTso({ payload: 1388, mss: 1388, flags: ACK | PSH, seq: 2 ** 31 }, 15).count, 1);
});

Deno.test("TSO: the largest super-packet, IP options, no TCP options, odd mss, id wrap", () => {
  assert.equal(
    checkTso({ payload: 65535 - 52, mss: 1448, flags: ACK | PSH, seq: 2 ** 32 - 1 }, 16).count,
    46,
  );
  checkTso({ payload: 3001, mss: 1337, flags: ACK | PSH, seq: 5, ipOpts: [1, 1, 1, 0] }, 17);
  checkTso({ payload: 4000, mss: 999, flags: ACK, seq: 12345, tcpOpts: [], id: 0xfffe }, 18);
  checkTso({ payload: 10, mss: 1, flags: ACK | PSH | FIN, seq: 2 ** 32 - 5, id: 0xffff }, 19);
});

Deno.test("TsoPlan.plan refuses non-TCP, non-IPv4, truncated headers, no payload and mss 0", () => {
  const b = new Uint8Array(4096);
  const payload = randomBytes(100, 20);
  const base = () => tcpPacket(b, 0, { payload, csum: "partial" }); // 20 + 32 + 100 = 152
  const p = new TsoPlan();
  let len = base();
  assert.equal(p.plan(b, 0, len, 1388), true, "control");
  assert.equal(p.count, 1);

  len = base();
  b[9] = UDP;
  assert.equal(p.plan(b, 0, len, 1388), false, "UDP");
  len = base();
  b[9] = 1;
  assert.equal(p.plan(b, 0, len, 1388), false, "ICMP");
  len = base();
  b[0] = 0x65;
  assert.equal(p.plan(b, 0, len, 1388), false, "IPv6 version");
  len = base();
  b[0] = 0x44;
  assert.equal(p.plan(b, 0, len, 1388), false, "IHL 4");
  len = base();
  b[0] = 0x4f; // 60-byte IP header: the TCP header would end beyond the packet... almost
  assert.equal(p.plan(b, 0, 60 + 19, 1388), false, "IHL 15 with a truncated TCP header");
  len = base();
  b[32] = 0x40; // TCP data offset 4
  assert.equal(p.plan(b, 0, len, 1388), false, "TCP data offset 4");
  len = base();
  assert.equal(p.plan(b, 0, 39, 1388), false, "shorter than 40 bytes");
  assert.equal(p.plan(b, 0, 51, 1388), false, "TCP options cut off");
  assert.equal(p.plan(b, 0, 52, 1388), false, "headers only, no payload");
  assert.equal(p.plan(b, 0, 53, 1388), true, "one payload byte");
  assert.equal(p.payload, 1);
  b[32] = 0xf0; // TCP header of 60 bytes in a packet of 79
  assert.equal(p.plan(b, 0, 79, 1388), false, "TCP header beyond the packet");
  assert.equal(p.plan(b, 0, 80, 1388), false, "TCP header of 60, no payload");
  len = base();
  assert.equal(p.plan(b, 0, len, 0), false, "mss 0");
  assert.equal(p.plan(b, 0, len, -1), false, "mss -1");
  // A packet without TCP options, 40 header bytes, no payload.
  const l40 = tcpPacket(b, 0, { tcpOpts: [] });
  assert.equal(l40, 40);
  assert.equal(p.plan(b, 0, l40, 1388), false, "40 bytes, no payload");
});

// ---------------------------------------------------------------------------------------------
// Coalescing

/** Segments (ACK ... ACK|PSH) of a 5000-byte super-packet at mss 1388, one per SLOT. */
function segments(seq = 2 ** 32 - 2000, flags = ACK | PSH, seed = 21) {
  const { out, count, hl } = checkTso({ payload: 5000, mss: 1388, flags, seq }, seed);
  return { arena: out, w: words(out), count, hl };
}

/** A copy of the segment at slot i into its own (aligned) buffer, mutated, checksums fixed. */
function variant(
  arena: Uint8Array,
  i: number,
  mutate: (b: Uint8Array, len: number) => number | void,
  fixTcp = true,
): { b: Uint8Array; len: number } {
  let len = ipv4Length(arena, SLOT * i, SLOT);
  const b = new Uint8Array(SLOT);
  b.set(arena.subarray(SLOT * i, SLOT * i + len));
  len = mutate(b, len) ?? len;
  setIpChecksum(b, 0);
  if (fixTcp) setL4Checksum(b, 0, len);
  return { b, len };
}

Deno.test("coalescablePayload accepts valid ACK and ACK|PSH segments", () => {
  const { arena, w, count } = segments();
  const expect = [1388, 1388, 1388, 836];
  for (let i = 0; i < count; i++) {
    const len = ipv4Length(arena, SLOT * i, SLOT);
    assert.equal(coalescablePayload(arena, w, SLOT * i, len), expect[i], `segment ${i}`);
  }
  assert.equal(hasPsh(arena, SLOT * 3), true);
  for (let i = 0; i < 3; i++) assert.equal(hasPsh(arena, SLOT * i), false);
  // A fixed-up control variant: PSH added and checksum recomputed is still accepted.
  const ok = variant(arena, 0, (b) => void (b[33] = ACK | PSH));
  assert.equal(coalescablePayload(ok.b, words(ok.b), 0, ok.len), 1388);
  assert.equal(hasPsh(ok.b, 0), true);
  // Minimal: no TCP options, a single payload byte (41 bytes).
  const m = new Uint8Array(64);
  const mlen = tcpPacket(m, 0, { tcpOpts: [], payload: new Uint8Array([0x42]) });
  assert.equal(mlen, 41);
  assert.equal(coalescablePayload(m, words(m), 0, mlen), 1);
  // At an unaligned offset too.
  const u = new Uint8Array(2048);
  const ulen = tcpPacket(u, 7, { payload: randomBytes(999, 22) });
  assert.equal(coalescablePayload(u, words(u), 7, ulen), 999);
});

Deno.test("coalescablePayload refuses a bad TCP checksum", () => {
  const { arena } = segments();
  for (const at of [52, 53, 700, 1439]) {
    const v = variant(arena, 0, (b) => void (b[at] ^= 0x01), false);
    assert.equal(coalescablePayload(v.b, words(v.b), 0, v.len), 0, `flipped byte ${at}`);
  }
  // A header byte (window) flipped without fixing the checksum.
  const h = variant(arena, 1, (b) => void (b[35] ^= 0x80), false);
  assert.equal(coalescablePayload(h.b, words(h.b), 0, h.len), 0);
  // A length shorter than the packet (the checksum no longer covers what was summed).
  const s = variant(arena, 1, () => {});
  assert.equal(coalescablePayload(s.b, words(s.b), 0, s.len - 1), 0);
});

Deno.test("coalescablePayload refuses SYN, FIN, RST, URG, CWR, ECE and flags without ACK", () => {
  const { arena } = segments();
  const cases: [string, number][] = [
    ["SYN", ACK | SYN],
    ["FIN", ACK | FIN],
    ["FIN|PSH", ACK | FIN | PSH],
    ["RST", ACK | RST],
    ["URG", ACK | URG],
    ["CWR", ACK | CWR],
    ["ECE", ACK | ECE],
    ["no ACK", 0],
    ["PSH only", PSH],
    ["SYN only", SYN],
  ];
  for (const [name, flags] of cases) {
    // Checksum recomputed: the flags alone must be the reason.
    const v = variant(arena, 0, (b) => void (b[33] = flags));
    assert.ok(l4ChecksumOk(v.b, 0, v.len));
    assert.equal(coalescablePayload(v.b, words(v.b), 0, v.len), 0, name);
  }
});

Deno.test("coalescablePayload refuses IP options, fragments, non-TCP, no payload", () => {
  const b = new Uint8Array(2048);
  const w = words(b);
  const payload = randomBytes(500, 23);
  let len = tcpPacket(b, 0, { payload, ipOpts: [1, 1, 1, 0] });
  assert.ok(l4ChecksumOk(b, 0, len));
  assert.equal(coalescablePayload(b, w, 0, len), 0, "IHL 6");
  // An IHL-6 packet that would pass every other check if TCP were (wrongly) read at byte 20:
  // the option words sum to 0xfffb (cancelling the 4 extra pseudo-header length bytes), and the
  // ack number's first bytes sit where that reading finds the data offset (0x80) and ACK (0x10).
  len = tcpPacket(b, 0, { payload, ipOpts: [0x01, 0x01, 0xfe, 0xfa], ack: 0x80100000 });
  assert.ok(l4ChecksumOk(b, 0, len));
  assert.equal(refFold(refPseudo(b, 0, TCP, len - 20) + refSum(b, 20, len - 20)), 0xffff);
  assert.equal(b[33], ACK);
  assert.equal(coalescablePayload(b, w, 0, len), 0, "IHL 6 (crafted)");

  for (
    const [name, frag] of [["MF", 0x2000], ["DF|MF", 0x6000], ["offset 8", 0x0001], [
      "offset high bits",
      0x1f00,
    ], ["MF and offset", 0x2100]] as [string, number][]
  ) {
    len = tcpPacket(b, 0, { payload, frag });
    assert.equal(coalescablePayload(b, w, 0, len), 0, name);
  }
  // Without DF, GRO would also need consecutive IP ids (re-segmenting renumbers them): not merged.
  len = tcpPacket(b, 0, { payload, frag: 0x0000 });
  assert.equal(coalescablePayload(b, w, 0, len), 0, "no DF");
  len = tcpPacket(b, 0, { payload, frag: 0x4000 });
  assert.equal(coalescablePayload(b, w, 0, len), 500, "DF only");

  for (const proto of [UDP, 1, 0]) {
    // Protocol byte changed, everything else (including the TCP-style checksum) left valid.
    len = tcpPacket(b, 0, { payload });
    b[9] = proto;
    setIpChecksum(b, 0);
    assert.equal(coalescablePayload(b, w, 0, len), 0, `protocol ${proto}`);
  }
  len = tcpPacket(b, 0, { payload: new Uint8Array(0) });
  assert.equal(len, 52);
  assert.ok(l4ChecksumOk(b, 0, len));
  assert.equal(coalescablePayload(b, w, 0, len), 0, "no payload (with options)");
  len = tcpPacket(b, 0, { payload: new Uint8Array(0), tcpOpts: [] });
  assert.equal(coalescablePayload(b, w, 0, len), 0, "no payload (40 bytes)");
  // TCP data offset below 5 (checksum fixed).
  len = tcpPacket(b, 0, { payload, tcpOpts: [] });
  b[32] = 0x40;
  setL4Checksum(b, 0, len);
  assert.equal(coalescablePayload(b, w, 0, len), 0, "data offset 4");
  // A data offset beyond the packet.
  len = tcpPacket(b, 0, { payload: new Uint8Array(3), tcpOpts: [] });
  b[32] = 0xf0;
  setL4Checksum(b, 0, len);
  assert.equal(coalescablePayload(b, w, 0, len), 0, "data offset beyond the packet");
  // Not IPv4.
  len = tcpPacket(b, 0, { payload });
  b[0] = 0x65;
  assert.equal(coalescablePayload(b, w, 0, len), 0, "version 6");
});

Deno.test("continuesFlow accepts the next in-sequence segment of the same flow", () => {
  const { arena, count } = segments();
  let expect = nextSeq(arena, 0, 1388);
  for (let i = 1; i < count; i++) {
    // IP id and checksums differ from the head's; that does not matter.
    assert.notEqual(u16(arena, SLOT * i + 4), u16(arena, 4));
    assert.equal(continuesFlow(arena, 0, SLOT * i, expect), true, `segment ${i}`);
    const len = ipv4Length(arena, SLOT * i, SLOT);
    expect = nextSeq(arena, SLOT * i, coalescablePayload(arena, words(arena), SLOT * i, len));
    assert.equal(len - 52, i === count - 1 ? 836 : 1388);
  }
  // Out of order: segment 2 does not follow the head directly.
  assert.equal(continuesFlow(arena, 0, SLOT * 2, nextSeq(arena, 0, 1388)), false);
  // The wrong expected seq.
  assert.equal(continuesFlow(arena, 0, SLOT, nextSeq(arena, 0, 1387)), false);
});

Deno.test("continuesFlow refuses any difference in addresses, ports, IP or TCP fields", () => {
  const { arena } = segments();
  const head = new Uint8Array(2 * SLOT);
  head.set(arena.subarray(0, SLOT));
  const expect = nextSeq(head, 0, 1388);
  const tryNext = (mutate: (b: Uint8Array) => void) => {
    const b = head.slice();
    b.set(arena.subarray(SLOT, 2 * SLOT), SLOT);
    mutate(b.subarray(SLOT));
    return continuesFlow(b, 0, SLOT, expect);
  };
  assert.equal(tryNext(() => {}), true, "control");
  assert.equal(tryNext((b) => void (b[4] ^= 0xff)), true, "IP id is not compared");
  assert.equal(tryNext((b) => void (b[33] |= PSH)), true, "PSH is not compared");
  assert.equal(tryNext((b) => void (b[36] ^= 0xff)), true, "TCP checksum is not compared");

  const cases: [string, (b: Uint8Array) => void][] = [
    ["source address", (b) => b[15]++],
    ["source address (first byte)", (b) => b[12]++],
    ["destination address", (b) => b[19]++],
    ["destination address (second byte)", (b) => b[17]++],
    ["source port", (b) => b[21]++],
    ["source port (high)", (b) => b[20]++],
    ["destination port", (b) => b[23]++],
    ["TOS", (b) => void (b[1] ^= 0x01)],
    ["TTL", (b) => b[8]--],
    ["DF cleared", (b) => void (b[6] &= ~0x40)],
    ["ack number (low byte)", (b) => b[31]++],
    ["ack number (high byte)", (b) => b[28]++],
    ["window (low)", (b) => b[35]++],
    ["window (high)", (b) => b[34]++],
    ["urgent pointer", (b) => b[39]++],
    ["TSval", (b) => b[47]++],
    ["TSecr", (b) => b[48]++],
    ["header length", (b) => void (b[32] = 0x70)],
    ["seq + 1", (b) => b[27]++],
    ["seq - 1", (b) => b[27]--],
  ];
  for (const [name, mutate] of cases) assert.equal(tryNext(mutate), false, name);
});

Deno.test("nextSeq wraps at 2^32", () => {
  const b = new Uint8Array(128);
  tcpPacket(b, 0, { seq: 0xffffff00, payload: new Uint8Array(4) });
  assert.equal(nextSeq(b, 0, 0x200), 0x100);
  assert.equal(nextSeq(b, 0, 0x100), 0);
  assert.equal(nextSeq(b, 0, 0xff), 0xffffffff);
  assert.equal(nextSeq(b, 0, 0), 0xffffff00);
  tcpPacket(b, 4, { seq: 0x80000000 });
  assert.equal(nextSeq(b, 4, 10), 0x8000000a);
  // Along a TSO train crossing the wrap, nextSeq of one segment is the seq of the next.
  const { arena, count } = segments(2 ** 32 - 1400);
  for (let i = 0; i + 1 < count; i++) {
    assert.equal(nextSeq(arena, SLOT * i, 1388), u32(arena, SLOT * (i + 1) + 24));
  }
});

// ---------------------------------------------------------------------------------------------
// Super-packets for the kernel

/** Checks the super-packet at off (vnet header at vOff) as the kernel would see it. */
function checkSuperPacket(
  sp: Uint8Array,
  vOff: number,
  off: number,
  total: number,
  mss: number,
  hl: number,
  pshExpected: boolean,
) {
  assert.equal(ipv4Length(sp, off, total), total);
  assert.ok(headerChecksumOk(sp, off));
  const v = readVnetHdr(sp, vOff, newVnet());
  assert.deepEqual(v, {
    flags: VNET_F_NEEDS_CSUM,
    gsoType: GSO_TCPV4,
    hdrLen: hl,
    gsoSize: mss,
    csumStart: 20,
    csumOffset: 16,
  });
  // The checksum field holds the folded, uncomplemented pseudo-header sum.
  assert.equal(u16(sp, off + 36), refPseudo(sp, off, TCP, total - 20));
  assert.equal((sp[off + 33] & PSH) !== 0, pshExpected);
  assert.equal(completeChecksum(sp, words(sp), off, total, v.csumStart, v.csumOffset), true);
  assert.ok(l4ChecksumOk(sp, off, total), "TCP checksum after completion");
}

Deno.test("finishSuperPacket: head finished in place, then head + payloads concatenated", () => {
  // Segments without PSH anywhere, so PSH comes only from finishSuperPacket.
  const { arena, count, hl } = segments(123456, ACK, 24);
  for (const psh of [true, false]) {
    const a = arena.slice();
    const aw = words(a);
    const lens: number[] = [];
    for (let i = 0; i < count; i++) {
      lens.push(coalescablePayload(a, aw, SLOT * i, ipv4Length(a, SLOT * i, SLOT)));
    }
    const total = hl + lens.reduce((x, y) => x + y, 0);
    assert.equal(total, hl + 5000);
    const vnet = new Uint8Array(VNET_HDR_LEN);
    finishSuperPacket(a, aw, 0, total, 1388, psh, vnet, 0);
    // writev(vnet, head packet, payload 1, payload 2, ...)
    const sp = new Uint8Array(VNET_HDR_LEN + total + 2);
    sp.set(vnet, 0);
    sp.set(a.subarray(0, hl + lens[0]), VNET_HDR_LEN);
    let at = VNET_HDR_LEN + hl + lens[0];
    for (let i = 1; i < count; i++) {
      sp.set(a.subarray(SLOT * i + hl, SLOT * i + hl + lens[i]), at);
      at += lens[i];
    }
    assert.equal(at, VNET_HDR_LEN + total);
    checkSuperPacket(sp, 0, VNET_HDR_LEN, total, 1388, hl, psh);
  }
});

Deno.test("finishSuperPacket on an already concatenated buffer (vnet header in front)", () => {
  const { arena, count, hl } = segments(2 ** 32 - 3000, ACK | PSH, 25);
  const sp = new Uint8Array(VNET_HDR_LEN + 65536);
  const len0 = ipv4Length(arena, 0, SLOT);
  sp.set(arena.subarray(0, len0), VNET_HDR_LEN);
  let at = VNET_HDR_LEN + len0;
  for (let i = 1; i < count; i++) {
    const len = ipv4Length(arena, SLOT * i, SLOT);
    sp.set(arena.subarray(SLOT * i + hl, SLOT * i + len), at);
    at += len - hl;
  }
  const total = at - VNET_HDR_LEN;
  finishSuperPacket(sp, words(sp), VNET_HDR_LEN, total, 1388, hasPsh(arena, SLOT * 3), sp, 0);
  checkSuperPacket(sp, 0, VNET_HDR_LEN, total, 1388, hl, true);
});

Deno.test("round trip: writeTsoSegment then coalescing rebuilds the original super-packet", () => {
  const cases: [number, number, number, number[]][] = [
    [5000, 1388, 2 ** 32 - 2500, TS_OPTS],
    [5000, 1000, 0xfffffff0, TS_OPTS],
    [65535 - 40, 1460, 99, []],
    [7777, 536, 2 ** 31 - 1, TS_OPTS],
    [700, 1388, 4, TS_OPTS],
  ];
  let seed = 30;
  for (const [plen, mss, seq, tcpOpts] of cases) {
    const msg = `payload ${plen} mss ${mss}`;
    const payload = randomBytes(plen, seed++);
    const orig = new Uint8Array(65536);
    const total = tcpPacket(orig, 0, { payload, seq, tcpOpts, flags: ACK | PSH, id: 0xfff0 });
    assert.ok(l4ChecksumOk(orig, 0, total));
    // The kernel's TSO input: the checksum field holds the pseudo-header sum.
    const tso = orig.slice();
    const ps = refPseudo(tso, 0, TCP, total - 20);
    tso[36] = ps >> 8;
    tso[37] = ps & 0xff;
    const p = new TsoPlan();
    assert.ok(p.plan(tso, 0, total, mss), msg);
    const arena = new Uint8Array(SLOT * p.count);
    const aw = words(arena);
    for (let i = 0; i < p.count; i++) writeTsoSegment(tso, p, i, arena, aw, SLOT * i);

    // Coalesce as the receive path would.
    const hl = p.hl;
    const vnet = new Uint8Array(VNET_HDR_LEN);
    const first = coalescablePayload(arena, aw, 0, ipv4Length(arena, 0, SLOT));
    assert.equal(first, Math.min(mss, plen), msg);
    let expect = nextSeq(arena, 0, first);
    let sum = hl + first;
    let psh = hasPsh(arena, 0);
    const parts: Uint8Array[] = [arena.subarray(0, hl + first)];
    for (let i = 1; i < p.count; i++) {
      const o = SLOT * i;
      const n = coalescablePayload(arena, aw, o, ipv4Length(arena, o, SLOT));
      assert.ok(n > 0, `${msg}: segment ${i} coalescable`);
      assert.ok(continuesFlow(arena, 0, o, expect), `${msg}: segment ${i} continues`);
      assert.ok(sum + n <= 65535);
      parts.push(arena.subarray(o + hl, o + hl + n));
      expect = nextSeq(arena, o, n);
      sum += n;
      psh = hasPsh(arena, o);
    }
    assert.equal(sum, total, msg);
    finishSuperPacket(arena, aw, 0, sum, first, psh, vnet, 0);
    const sp = new Uint8Array(VNET_HDR_LEN + sum);
    sp.set(vnet);
    let at = VNET_HDR_LEN;
    for (const part of parts) {
      sp.set(part, at);
      at += part.length;
    }
    const v = readVnetHdr(sp, 0, newVnet());
    assert.equal(v.gsoSize, Math.min(mss, plen), msg);
    assert.equal(v.hdrLen, hl, msg);
    assert.ok(completeChecksum(sp, words(sp), VNET_HDR_LEN, sum, v.csumStart, v.csumOffset));
    assert.deepEqual(sp.subarray(VNET_HDR_LEN + hl), payload, `${msg}: payload`);
    // Byte for byte the original (IP id of the first, PSH restored, full checksums).
    assert.deepEqual(sp.subarray(VNET_HDR_LEN), orig.subarray(0, total), `${msg}: packet`);
  }
});

// ---------------------------------------------------------------------------------------------
// virtio_net_hdr

Deno.test("readVnetHdr/writeVnetHdr round trip little-endian values above 255", () => {
  const b = new Uint8Array(32).fill(0xee);
  writeVnetHdr(b, 3, VNET_F_NEEDS_CSUM, GSO_TCPV4 | GSO_ECN, 0x1234, 0xabcd, 0x0102, 0xfffe);
  assert.deepEqual(
    [...b.subarray(3, 3 + VNET_HDR_LEN)],
    [0x01, 0x81, 0x34, 0x12, 0xcd, 0xab, 0x02, 0x01, 0xfe, 0xff],
  );
  assert.equal(b[2], 0xee, "nothing written before");
  assert.equal(b[3 + VNET_HDR_LEN], 0xee, "nothing written after");
  const out = newVnet();
  const r = readVnetHdr(b, 3, out);
  assert.equal(r, out, "reads into the object given");
  assert.deepEqual(r, {
    flags: 1,
    gsoType: 0x81,
    hdrLen: 0x1234,
    gsoSize: 0xabcd,
    csumStart: 0x0102,
    csumOffset: 0xfffe,
  });
  const rnd = prng(77);
  for (let i = 0; i < 200; i++) {
    const f = [0, 1, 2, 3, 4, 5].map((k) => Math.floor(rnd() * (k < 2 ? 256 : 65536)));
    writeVnetHdr(b, 0, f[0], f[1], f[2], f[3], f[4], f[5]);
    assert.deepEqual(readVnetHdr(b, 0, out), {
      flags: f[0],
      gsoType: f[1],
      hdrLen: f[2],
      gsoSize: f[3],
      csumStart: f[4],
      csumOffset: f[5],
    });
    assert.equal(b[2] | (b[3] << 8), f[2]);
    assert.equal(b[8] | (b[9] << 8), f[5]);
  }
});
