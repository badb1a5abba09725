import assert from "node:assert/strict";
import { HeapTrim } from "../../src/agent/heap_trim.ts";
import { releaseFreeHeap } from "../../ffi/libc/heap.ts";
import { waitFor } from "../kit/proc.ts";
import { ExpiryCache } from "../../src/registry/etcd/expiry.ts";
import type { Etcd3 } from "etcd3";

Deno.test("heap trim: one GC and two trims after each burst, none while idle, failures swallowed", () => {
  let trims = 0;
  let gcs = 0;
  let heap = 16 << 20;
  const t = new HeapTrim(() => trims++, () => gcs++, () => heap, null);
  heap = 64 << 20;
  t.tick();
  assert.deepEqual([gcs, trims], [0, 0], "no burst yet: idle ticks do nothing");
  t.burst();
  t.tick();
  assert.deepEqual([gcs, trims], [1, 1], "the first tick after a burst collects and trims");
  t.tick();
  t.tick();
  assert.deepEqual([gcs, trims], [1, 2], "the second trims only; then nothing until a burst");
  heap = 16 << 20;
  const failing = new HeapTrim(
    () => {
      throw new Error("no glibc");
    },
    () => {},
    () => heap,
    null,
  );
  heap = 64 << 20;
  failing.burst();
  failing.tick();
  failing.tick();
  failing.tick();
  assert.deepEqual(failing.counts, { trims: 2, collects: 1 });
});

Deno.test("heap trim: the GC runs again only once the heap grew 4 MiB since the last one", () => {
  let heap = 16 << 20;
  let gcs = 0;
  const t = new HeapTrim(
    () => {},
    () => {
      gcs++;
      heap = 18 << 20; // what the GC left
    },
    () => heap,
    null,
  );
  heap = 18 << 20;
  t.burst();
  t.tick();
  assert.equal(gcs, 0, "a burst that grew the heap 2 MiB since the start: trim only");
  heap = 30 << 20;
  t.burst();
  t.tick();
  assert.equal(gcs, 1, "14 MiB since the start: collect");
  heap = 20 << 20;
  t.burst();
  t.tick();
  assert.equal(gcs, 1, "2 MiB of growth: trim only");
  heap = 23 << 20;
  t.burst();
  t.tick();
  assert.equal(gcs, 2, "5 MiB of growth: collect");
});

Deno.test("heap trim: the first collect and trim come SETTLE_MS after a burst, not at the next tick", async () => {
  let trims = 0;
  let gcs = 0;
  let heap = 16 << 20;
  const t = new HeapTrim(() => trims++, () => gcs++, () => heap, 20);
  heap = 64 << 20;
  t.burst();
  assert.deepEqual([gcs, trims], [0, 0], "nothing runs inside burst()");
  await waitFor("the settle trim", () => trims === 1, { timeoutMs: 5000, intervalMs: 5 });
  assert.deepEqual([gcs, trims], [1, 1], "collected and trimmed without a tick");
  t.tick();
  t.tick();
  assert.deepEqual([gcs, trims], [1, 2], "the next tick trims once more; then nothing");
});

Deno.test("heap trim: the first burst's settle trim collects whatever the growth (startup garbage)", async () => {
  let trims = 0;
  let gcs = 0;
  const heap = 16 << 20; // never grows: only the startup rule collects
  const t = new HeapTrim(() => trims++, () => gcs++, () => heap, 20);
  t.burst();
  await waitFor("the first settle trim", () => trims === 1, { timeoutMs: 5000, intervalMs: 5 });
  assert.deepEqual([gcs, trims], [1, 1], "the first burst's settle trim collects");
  t.tick();
  t.burst();
  await waitFor("the second settle trim", () => trims === 3, { timeoutMs: 5000, intervalMs: 5 });
  assert.deepEqual([gcs, trims], [1, 3], "a later burst without growth only trims");
  t.tick();
  assert.deepEqual([gcs, trims], [1, 4], "ticks never collect without growth");
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
