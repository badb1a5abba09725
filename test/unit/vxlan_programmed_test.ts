/**
 * ProgrammedPeers (src/backend/vxlan/programmed.ts): the programmed vxlan peers and how many
 * name each FDB entry, kept by +1/−1 through events and in-place takes.
 */
import assert from "node:assert/strict";
import type { Lease } from "../../src/lease/codec.ts";
import type { PeerEntries } from "../../src/backend/vxlan/entries.ts";
import { ProgrammedPeers } from "../../src/backend/vxlan/programmed.ts";

const lease = (i: number, mac: string): Lease => ({
  key: `198.19.${i}.0-24`,
  subnet: { ip: 0xc6130000 + i * 256, prefix: 24 },
  attrs: { publicIP: `198.18.0.${i}`, backendType: "vxlan", backendData: { VtepMAC: mac } },
  expiresAt: null,
  revision: i,
});
const entries = (l: Lease): PeerEntries[] => [{
  dev: 7,
  fdb: { mac: (l.attrs.backendData as { VtepMAC: string }).VtepMAC, dst: l.attrs.publicIP },
  route: { dst: `${l.key}` },
}];
const fdbOf = (mac: string) => entries(lease(0, mac))[0];

Deno.test("programmed vxlan peers: FDB users follow events and in-place takes", () => {
  let looked = 0;
  const p = new ProgrammedPeers((l) => (looked++, entries(l)));
  const a = lease(1, "be:00:00:00:00:01");
  const b = lease(2, "be:00:00:00:00:02");
  const stale = lease(3, "be:00:00:00:00:01"); // names a's VTEP
  p.take([a, b, stale]);
  assert.equal(p.size, 3);
  p.remove(stale.key);
  assert.ok(p.sharedFdb(fdbOf("be:00:00:00:00:01")), "a still names the shared MAC");
  p.set(stale);

  // The same peers, one renewed (a new object): only it is recounted.
  looked = 0;
  const b2 = { ...b, revision: 99 };
  p.take([a, b2, stale]);
  assert.equal(looked, 2, "a take recounted more than the changed lease (old and new)");
  assert.equal(p.get(b.key), b2);

  // A peer the round no longer lists goes, and with it its count.
  p.take([a, b2]);
  assert.equal(p.size, 2);
  assert.equal(p.get(stale.key), undefined);
  p.remove(a.key);
  assert.ok(!p.sharedFdb(fdbOf("be:00:00:00:00:01")), "no peer names the MAC any more");
  assert.ok(p.sharedFdb(fdbOf("be:00:00:00:00:02")));

  // fresh: everything counted anew.
  looked = 0;
  p.take([a, b2], true);
  assert.equal(looked, 2);
  assert.ok(p.sharedFdb(fdbOf("be:00:00:00:00:01")));
});
