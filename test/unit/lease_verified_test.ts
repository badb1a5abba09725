/**
 * VerifiedSet: a list of what was written since, with the registry's count, brings the proven
 * set forward only when the count leaves no room for an unseen delete.
 */
import assert from "node:assert/strict";
import { type Decode, VerifiedSet } from "../../src/lease/verified.ts";
import type { Lease } from "../../src/lease/codec.ts";
import type { PeerList, RegistryLease } from "../../src/registry/contract/registry.ts";

const raw = (key: string, revision: number, value = "ok"): RegistryLease => ({
  key,
  value,
  revision,
  expiresAt: null,
});
/** Decodes "ok" values to a stand-in lease; anything else does not decode. */
const decode: Decode = (r) =>
  r.value === "ok" ? { key: r.key, revision: r.revision } as Lease : null;
const list = (leases: RegistryLease[], count: number, revision: number): PeerList => ({
  leases,
  count,
  revision,
});
const view = (v: VerifiedSet) =>
  [...v.set].map(([k, x]) => `${k}@${typeof x === "number" ? `bad${x}` : x.revision}`).sort();

Deno.test("verified set: writes since, counted, bring it forward; undecodable keys count too", () => {
  const v = VerifiedSet.of([raw("a", 1), raw("b", 2), raw("x", 3, "{garbage")], 3, decode);
  // a rewritten, c new: 3 known + 1 new = 4 leases.
  assert.ok(v.advance(list([raw("a", 4), raw("c", 5)], 4, 5), decode));
  assert.equal(v.revision, 5);
  assert.deepEqual(view(v), ["a@4", "b@2", "c@5", "x@bad3"]);
  // Nothing written since: the count alone proves the set.
  assert.ok(v.advance(list([], 4, 9), decode));
  assert.equal(v.revision, 9);
});

Deno.test("verified set: a count short of what it knows (a delete) leaves it for a full list", () => {
  const v = VerifiedSet.of([raw("a", 1), raw("b", 2)], 2, decode);
  // b deleted and c created: a list since shows c only, and 2 leases; a, b, c would be 3.
  assert.equal(v.advance(list([raw("c", 4)], 2, 4), decode), false);
  assert.deepEqual(view(v), ["a@1", "b@2"]);
  assert.equal(v.revision, 2);
  // A delete and a re-create of the same key: the re-create is a write since, so it is seen.
  assert.ok(v.advance(list([raw("b", 6)], 2, 6), decode));
  assert.deepEqual(view(v), ["a@1", "b@6"]);
});
