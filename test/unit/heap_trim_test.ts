import assert from "node:assert/strict";
import { HeapTrim } from "../../src/agent/heap_trim.ts";
import { releaseFreeHeap } from "../../ffi/libc/heap.ts";
import { ExpiryCache } from "../../src/registry/etcd/expiry.ts";
import type { Etcd3 } from "etcd3";

Deno.test("heap trim: two trims after each burst, none while idle, failures swallowed", () => {
  const t = new HeapTrim();
  let calls = 0;
  const release = () => calls++;
  t.tick(release);
  assert.equal(calls, 0, "no burst yet: idle ticks never trim");
  t.burst();
  t.tick(release);
  t.tick(release);
  t.tick(release);
  assert.equal(calls, 2, "a burst gives the next two ticks a trim");
  t.burst();
  t.tick(() => {
    throw new Error("no glibc");
  });
  assert.equal(t.trims, 3);
});

Deno.test("heap trim: releaseFreeHeap gives freed malloc pages back (glibc)", () => {
  assert.equal(typeof releaseFreeHeap(), "boolean");
});

Deno.test("etcd expiry cache: prune drops expiries no longer trusted", () => {
  const c = new ExpiryCache(null as unknown as Etcd3, (fn) => fn());
  const now = Date.now();
  c.granted("1", now - 60_000, 3600); // looked up a minute ago: trusted 30 s only
  c.granted("2", now, 3600);
  assert.equal(c.size, 2);
  c.prune(now);
  assert.equal(c.size, 1);
  assert.ok(c.cached(["2"]).has("2"));
});
