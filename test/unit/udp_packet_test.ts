/**
 * Unit tests of the udp backend's packet handling on crafted IPv4 packets: validation, TTL
 * decrement with incremental checksum, the ICMP net-unreachable rules and format, and the peer
 * table and the forwarder's metrics publishing. No I/O.
 */
import assert from "node:assert/strict";
import {
  BadPacket,
  buildNetUnreachable,
  decrementTtl,
  destination,
  ipv4Length,
  MAX_UNREACHABLE_LEN,
  source,
} from "../../src/backend/udp/packet.ts";
import { headerChecksumOk, internetChecksum } from "../../src/backend/udp/checksum.ts";
import { peerEntries, PeerTable } from "../../src/backend/udp/peers.ts";
import { parseCidr, parseIp } from "../../src/base/ipv4.ts";
import { ForwarderMetrics } from "../../src/backend/udp/metrics.ts";
import type { ForwarderCounters } from "../../src/backend/udp/counters.ts";
import { metrics } from "../../src/base/metrics.ts";
import { ipBytes, UDP, writeIpv4Header } from "../kit/packets.ts";

interface Spec {
  ttl?: number;
  proto?: number;
  src?: string;
  dst?: string;
  ihl?: number;
  /** Flags and fragment offset word (e.g. 0x2000 = MF, 0x0001 = offset 8 bytes). */
  frag?: number;
  payload?: number[];
  id?: number;
}

/** A well-formed IPv4 packet with a correct header checksum. */
function packet(s: Spec = {}): Uint8Array<ArrayBuffer> {
  const ihl = s.ihl ?? 5;
  const payload = s.payload ?? [8, 0, 0xf7, 0xff, 0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef];
  const total = ihl * 4 + payload.length;
  const b = new Uint8Array(total);
  writeIpv4Header(b, 0, {
    total,
    proto: s.proto ?? UDP,
    src: ipBytes(parseIp(s.src ?? "198.19.1.5")),
    dst: ipBytes(parseIp(s.dst ?? "198.19.2.7")),
    id: s.id ?? 0x1234,
    frag: s.frag,
    ttl: s.ttl,
    options: new Array(ihl * 4 - 20).fill(1), // NOP options
  });
  b.set(payload, ihl * 4);
  return b;
}

Deno.test("ipv4Length accepts a valid packet and returns its total length", () => {
  const p = packet();
  assert.equal(ipv4Length(p, 0, p.length), p.length);
  // Trailing bytes beyond the total length are not part of the packet.
  const padded = new Uint8Array(p.length + 10);
  padded.set(p);
  assert.equal(ipv4Length(padded, 0, padded.length), p.length);
  // Works at an offset inside a larger arena.
  const arena = new Uint8Array(4096);
  arena.set(p, 2048);
  assert.equal(ipv4Length(arena, 2048, p.length), p.length);
  assert.equal(destination(arena, 2048), parseIp("198.19.2.7"));
  assert.equal(source(arena, 2048), parseIp("198.19.1.5"));
});

Deno.test("ipv4Length rejects short, non-IPv4, bad IHL and bad total length", () => {
  const p = packet();
  assert.equal(ipv4Length(p, 0, 19), BadPacket.TOO_SHORT);
  const v6 = packet();
  v6[0] = 0x65;
  assert.equal(ipv4Length(v6, 0, v6.length), BadPacket.NOT_IPV4);
  const ihl4 = packet();
  ihl4[0] = 0x44;
  assert.equal(ipv4Length(ihl4, 0, ihl4.length), BadPacket.BAD_IHL);
  // IHL 15 = 60 header bytes, more than the 32 bytes present.
  const ihlBig = packet();
  ihlBig[0] = 0x4f;
  assert.equal(ipv4Length(ihlBig, 0, ihlBig.length), BadPacket.BAD_IHL);
  const beyond = packet();
  new DataView(beyond.buffer).setUint16(2, beyond.length + 1);
  assert.equal(ipv4Length(beyond, 0, beyond.length), BadPacket.BAD_TOTAL_LENGTH);
  const belowHeader = packet();
  new DataView(belowHeader.buffer).setUint16(2, 19);
  assert.equal(ipv4Length(belowHeader, 0, belowHeader.length), BadPacket.BAD_TOTAL_LENGTH);
  // A packet read truncated (buffer shorter than its total length).
  assert.equal(ipv4Length(p, 0, p.length - 1), BadPacket.BAD_TOTAL_LENGTH);
});

Deno.test("decrementTtl: TTL 1 and 0 are dropped untouched, TTL 2 becomes 1 with a valid checksum", () => {
  for (const ttl of [0, 1]) {
    const p = packet({ ttl });
    const before = p.slice();
    assert.equal(decrementTtl(p, 0), false);
    assert.deepEqual(p, before);
  }
  const p = packet({ ttl: 2 });
  assert.equal(decrementTtl(p, 0), true);
  assert.equal(p[8], 1);
  assert.ok(headerChecksumOk(p, 0));
  const expect = p.slice();
  expect[10] = expect[11] = 0;
  const full = internetChecksum(expect, 0, 20);
  assert.equal((p[10] << 8) | p[11], full);
});

Deno.test("decrementTtl's incremental checksum equals a full recompute on many headers", () => {
  // Deterministic pseudo-random headers, including ones whose checksum is 0x0000 or near it.
  let seed = 12345;
  const rnd = () => (seed = (seed * 1103515245 + 12345) >>> 0) >>> 16;
  let checked = 0, nearZero = 0;
  for (let i = 0; i < 20000; i++) {
    const p = packet({
      ttl: 2 + (rnd() % 254),
      proto: rnd() & 255,
      id: rnd() & 0xffff,
      src: `198.19.${rnd() & 255}.${rnd() & 255}`,
      dst: `198.19.${rnd() & 255}.${rnd() & 255}`,
    });
    if (((p[10] << 8) | p[11]) < 0x0200) nearZero++;
    assert.ok(decrementTtl(p, 0));
    const copy = p.slice();
    copy[10] = copy[11] = 0;
    assert.equal((p[10] << 8) | p[11], internetChecksum(copy, 0, 20), `header ${i}`);
    checked++;
  }
  assert.equal(checked, 20000);
  assert.ok(nearZero > 0, "the sample should include checksums near zero");
  // The one's-complement edge cases: checksum 0x0000 before, and exactly 0x0000 after.
  let before0 = 0, after0 = 0;
  for (let id = 0; id <= 0xffff && (before0 === 0 || after0 === 0); id++) {
    const p = packet({ ttl: 7, id });
    const hc = (p[10] << 8) | p[11];
    assert.ok(decrementTtl(p, 0));
    const copy = p.slice();
    copy[10] = copy[11] = 0;
    const full = internetChecksum(copy, 0, 20);
    if (hc === 0) before0++;
    if (full === 0) after0++;
    if (hc === 0 || full === 0) assert.equal((p[10] << 8) | p[11], full, `id ${id}`);
  }
  assert.ok(before0 > 0 && after0 > 0, "both edge cases were reached");
});

Deno.test("net-unreachable: correct ICMP type 3 code 0 with valid checksums and quote", () => {
  const orig = packet({ ttl: 9, proto: 6, payload: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12] });
  const out = new Uint8Array(MAX_UNREACHABLE_LEN);
  const n = buildNetUnreachable(orig, 0, orig.length, out, 0);
  assert.equal(n, 20 + 8 + 20 + 8);
  assert.equal(ipv4Length(out, 0, n), n);
  assert.ok(headerChecksumOk(out, 0), "IP header checksum");
  assert.equal(internetChecksum(out, 20, n - 20), 0, "ICMP checksum");
  assert.equal(out[9], 1, "protocol ICMP");
  assert.equal(out[8], 64, "TTL of the generated message");
  assert.equal(source(out, 0), parseIp("198.19.2.7"), "from the unreachable destination");
  assert.equal(destination(out, 0), parseIp("198.19.1.5"), "back to the sender");
  assert.equal(out[20], 3);
  assert.equal(out[21], 0);
  assert.deepEqual(out.subarray(28, n), orig.subarray(0, 28), "original header + 8 bytes");
});

Deno.test("net-unreachable quotes IP options and short payloads whole", () => {
  const withOpts = packet({ ihl: 6 });
  const out = new Uint8Array(MAX_UNREACHABLE_LEN);
  const n = buildNetUnreachable(withOpts, 0, withOpts.length, out, 0);
  assert.equal(n, 28 + 24 + 8);
  assert.equal(internetChecksum(out, 20, n - 20), 0);
  const short = packet({ payload: [1, 2, 3] });
  const m = buildNetUnreachable(short, 0, short.length, out, 0);
  assert.equal(m, 28 + 23);
  assert.equal(internetChecksum(out, 20, m - 20), 0, "odd-length ICMP checksum");
  assert.ok(headerChecksumOk(out, 0));
});

Deno.test("net-unreachable is never sent for ICMP errors, non-first fragments or bad addresses", () => {
  const out = new Uint8Array(MAX_UNREACHABLE_LEN);
  const none = (p: Uint8Array) => buildNetUnreachable(p, 0, p.length, out, 0);
  // ICMP errors (here: a time exceeded quoting something) never get an error back.
  assert.equal(
    none(packet({ proto: 1, payload: [11, 0, 0xf4, 0xff, 0, 0, 0, 0] })),
    0,
    "ICMP error",
  );
  assert.equal(
    none(packet({ proto: 1, payload: [3, 1, 0xfc, 0xfe, 0, 0, 0, 0] })),
    0,
    "ICMP unreach",
  );
  assert.equal(none(packet({ proto: 1, payload: [] })), 0, "ICMP without a header");
  // An echo request (ping) is a query: answered, so ping shows "Destination Net Unreachable".
  assert.ok(none(packet({ proto: 1, payload: [8, 0, 0xf7, 0xff, 0, 0, 0, 0] })) > 0, "echo");
  assert.equal(none(packet({ frag: 0x0001 })), 0, "non-first fragment");
  assert.equal(none(packet({ frag: 0x2010 })), 0, "middle fragment (MF + offset)");
  assert.ok(none(packet({ frag: 0x2000 })) > 0, "first fragment (MF, offset 0) gets one");
  assert.equal(none(packet({ src: "0.0.0.0" })), 0, "unspecified source");
  assert.equal(none(packet({ dst: "224.0.0.5" })), 0, "multicast destination");
  assert.equal(none(packet({ dst: "255.255.255.255" })), 0, "broadcast destination");
});

Deno.test("peer table: O(1) subnet lookup, members, replace, and bad peers rejected", () => {
  const t = new PeerTable(24);
  t.replace(peerEntries([
    { subnet: parseCidr("198.19.2.0/24"), publicIP: "198.18.0.2" },
    { subnet: parseCidr("198.19.3.0/24"), publicIP: "198.18.0.3" },
  ], 24));
  assert.equal(t.size, 2);
  assert.equal(t.lookup(parseIp("198.19.2.0")), parseIp("198.18.0.2"));
  assert.equal(t.lookup(parseIp("198.19.2.255")), parseIp("198.18.0.2"));
  assert.equal(t.lookup(parseIp("198.19.3.9")), parseIp("198.18.0.3"));
  assert.equal(t.lookup(parseIp("198.19.4.1")), -1);
  assert.equal(t.lookup(parseIp("255.255.255.255")), -1);
  assert.ok(t.isMember(parseIp("198.18.0.3")));
  assert.ok(!t.isMember(parseIp("198.18.0.9")));
  t.replace(peerEntries([{ subnet: parseCidr("198.19.3.0/24"), publicIP: "198.18.0.4" }], 24));
  assert.equal(t.lookup(parseIp("198.19.2.1")), -1, "removed peer");
  assert.equal(t.lookup(parseIp("198.19.3.1")), parseIp("198.18.0.4"), "moved peer");
  assert.ok(!t.isMember(parseIp("198.18.0.3")));
  assert.throws(
    () => peerEntries([{ subnet: parseCidr("198.19.2.0/25"), publicIP: "198.18.0.2" }], 24),
    /198\.19\.2\.0\/25.*SubnetLen is 24/,
  );
  assert.throws(
    () => peerEntries([{ subnet: parseCidr("198.19.2.0/24"), publicIP: "fc00::1" }], 24),
    /"fc00::1", which is not IPv4/,
  );
  // SubnetLen 30 (the largest flannel allows) and 32 still key correctly.
  const t30 = new PeerTable(30);
  t30.replace([{ net: parseIp("198.19.0.4"), ip: parseIp("198.18.0.2") }]);
  assert.equal(t30.lookup(parseIp("198.19.0.7")), parseIp("198.18.0.2"));
  assert.equal(t30.lookup(parseIp("198.19.0.8")), -1);
  const t32 = new PeerTable(32);
  t32.replace([{ net: parseIp("198.19.0.4"), ip: parseIp("198.18.0.2") }]);
  assert.equal(t32.lookup(parseIp("198.19.0.4")), parseIp("198.18.0.2"));
  assert.equal(t32.lookup(parseIp("198.19.0.5")), -1);
});

Deno.test("forwarder metrics: sync adds counter growth and survives a counter reset", () => {
  const snap = (tx: number, noRoute: number): ForwarderCounters => ({
    txPackets: tx,
    txBytes: tx * 100,
    rxPackets: 0,
    rxBytes: 0,
    tunReadPackets: tx,
    udpReadPackets: 0,
    icmpUnreachableSent: noRoute,
    drops: {
      no_route: noRoute,
      not_member: 0,
      malformed: 0,
      not_ipv4: 0,
      bad_checksum: 2 * noRoute,
      ttl: 0,
      send_error: 0,
      tun_write_error: 0,
    },
    batches: { tx: 1, rx: 0 },
    gso: { messages: 0, active: true },
    gro: true,
    tunOffload: {
      active: true,
      tsoPackets: tx,
      tsoSegments: 2 * tx,
      coalescedPackets: 0,
      coalescedSegments: 0,
    },
    lastErrno: { send: 0, tunWrite: 0 },
  });
  const tx = metrics.counter("weft_udp_tx_packets_total", "");
  const tso = metrics.counter("weft_udp_tun_tso_segments_total", "");
  const drops = metrics.counter("weft_udp_dropped_packets_total", "");
  const tx0 = tx.get(), tso0 = tso.get(), nr0 = drops.get({ reason: "no_route" });
  const bs0 = drops.get({ reason: "bad_checksum" });
  let cur = snap(10, 1);
  const m = new ForwarderMetrics(() => cur);
  m.sync();
  assert.equal(tx.get() - tx0, 10);
  cur = snap(25, 3);
  m.sync();
  assert.equal(tx.get() - tx0, 25);
  assert.equal(tso.get() - tso0, 50);
  assert.equal(metrics.gauge("weft_udp_tun_offload", "").get(), 1);
  assert.equal(drops.get({ reason: "no_route" }) - nr0, 3);
  assert.equal(drops.get({ reason: "bad_checksum" }) - bs0, 6);
  cur = snap(4, 0); // a new forwarder counting from 0
  m.sync();
  assert.equal(tx.get() - tx0, 29);
  assert.match(metrics.render(), /weft_udp_dropped_packets_total\{reason="no_route"\} \d+/);
});
