/** The KV reaper's expiry index: what is due, with renewals, deletes and out-of-order changes. */
import assert from "node:assert/strict";
import { ExpiryIndex } from "../../src/registry/kv/reaper.ts";

Deno.test("expiry index: due in expiry order; a renewal or delete drops the old expiry", () => {
  const idx = new ExpiryIndex();
  idx.put("a", 300, 1);
  idx.put("b", 100, 2);
  idx.put("c", 200, 3);
  idx.put("r", null, 4); // a reservation never expires
  idx.put("c", 900, 5); // renewed: its old expiry (200) is stale
  idx.delete("a", 6);
  assert.deepEqual(idx.due(50), []);
  assert.deepEqual(idx.due(350), ["b"]);
  assert.deepEqual(idx.due(350), []);
  assert.deepEqual(idx.due(1000), ["c"]);
  assert.equal(idx.size, 2); // b and c stay until a reap confirms them (reapDue)
});

Deno.test("expiry index: an older change never overrides a newer one", () => {
  const idx = new ExpiryIndex();
  idx.put("k", 500, 10);
  idx.put("k", 100, 7); // replayed from the log after a newer scan
  idx.delete("k", 8);
  assert.deepEqual(idx.due(200), []);
  assert.deepEqual(idx.due(600), ["k"]);
  idx.reset([{ key: "x", expiresAt: 50, revision: 1 }, { key: "y", expiresAt: null, revision: 2 }]);
  assert.equal(idx.size, 1);
  assert.deepEqual(idx.due(60), ["x"]);
});
