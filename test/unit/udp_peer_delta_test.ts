/**
 * The udp peer table's single changes (issue #12: a peer event must not resend or rebuild the
 * whole table): `update` removes and adds only the entries given, and a public IP stays a member
 * while any subnet still names it.
 */
import assert from "node:assert/strict";
import { parseIp } from "../../src/base/ipv4.ts";
import { type PeerEntry, PeerTable } from "../../src/backend/udp/peers.ts";

const e = (net: string, ip: string): PeerEntry => ({ net: parseIp(net), ip: parseIp(ip) });

Deno.test("udp peer table: update applies one change in place, removals first", () => {
  const t = new PeerTable(29);
  const all = Array.from(
    { length: 2000 },
    (_, i) => e(`198.19.${i >> 5}.${(i & 31) * 8}`, `198.18.8.1`),
  );
  t.replace([...all, e("198.19.100.0", "198.18.0.7")]);
  assert.equal(t.size, 2001);
  // 2000 subnets name 198.18.8.1: it stays a member until the last one goes.
  t.update(all.slice(0, 1999), []);
  assert.ok(t.isMember(parseIp("198.18.8.1")));
  t.update([all[1999]], []);
  assert.ok(!t.isMember(parseIp("198.18.8.1")));
  assert.equal(t.size, 1);
  // A changed lease: the old entry leaves, the new one (same subnet, new IP) comes in.
  t.update([e("198.19.100.0", "198.18.0.7")], [e("198.19.100.0", "198.18.0.9")]);
  assert.equal(t.lookup(parseIp("198.19.100.5")), parseIp("198.18.0.9"));
  assert.ok(!t.isMember(parseIp("198.18.0.7")));
  assert.ok(t.isMember(parseIp("198.18.0.9")));
  // An addition over a present subnet replaces it (its old IP released).
  t.update([], [e("198.19.100.0", "198.18.0.10")]);
  assert.ok(!t.isMember(parseIp("198.18.0.9")));
  assert.equal(t.lookup(parseIp("198.19.100.1")), parseIp("198.18.0.10"));
  // Removing an absent subnet changes nothing.
  t.update([e("198.19.200.0", "198.18.0.10")], []);
  assert.equal(t.size, 1);
  assert.ok(t.isMember(parseIp("198.18.0.10")));
});
