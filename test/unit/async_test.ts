/** Waits of any length (issue #10, defect 3) with fake timers; settlesWithin with a real 20 ms. */
import assert from "node:assert/strict";
import { MAX_TIMER_MS, settlesWithin, sleep, type Timers } from "../../src/base/async.ts";

/** Fake timers that record each delay asked for and fire on the next macrotask. */
function fakeTimers() {
  const delays: number[] = [];
  const live = new Set<number>();
  let next = 1;
  const timers: Timers = {
    setTimeout(fn, ms) {
      delays.push(ms);
      const id = next++;
      live.add(id);
      queueMicrotask(() => {
        if (live.delete(id)) fn();
      });
      return id;
    },
    clearTimeout(id) {
      live.delete(id as number);
    },
  };
  return { timers, delays, live };
}

const DAY_MS = 86_400_000;

Deno.test("sleep: a 30-day wait is chained from timers of at most 2^31-1 ms", async () => {
  const f = fakeTimers();
  await sleep(30 * DAY_MS, undefined, f.timers);
  assert.ok(f.delays.length >= 2, `one timer for 30 days: ${f.delays}`);
  for (const d of f.delays) assert.ok(d >= 0 && d <= MAX_TIMER_MS, `timer of ${d} ms`);
  assert.equal(f.delays.reduce((a, b) => a + b, 0), 30 * DAY_MS);
  assert.equal(MAX_TIMER_MS, 2 ** 31 - 1);
});

Deno.test("sleep: short, zero and bad delays are one timer; abort clears the chain", async () => {
  const f = fakeTimers();
  await sleep(1500, undefined, f.timers);
  await sleep(0, undefined, f.timers);
  await sleep(-5, undefined, f.timers);
  await sleep(NaN, undefined, f.timers);
  assert.deepEqual(f.delays, [1500, 0, 0, 0]);
  // A wait that never ends by itself (timers that never fire) still ends on abort.
  const never: Timers = { setTimeout: () => 7, clearTimeout: (id) => f.live.add(id as number) };
  const ctl = new AbortController();
  const p = sleep(100 * DAY_MS, ctl.signal, never);
  ctl.abort();
  await p;
  assert.ok(f.live.has(7), "the pending timer was cleared");
});

Deno.test("settlesWithin: true when settled (either way) in time, false on timeout or abort", async () => {
  assert.equal(await settlesWithin(Promise.resolve(1), 1000), true);
  assert.equal(await settlesWithin(Promise.reject(new Error("x")), 1000), true);
  const never = new Promise(() => {});
  assert.equal(await settlesWithin(never, 20), false);
  const ctl = new AbortController();
  const late = settlesWithin(never, 60_000, ctl.signal);
  ctl.abort();
  assert.equal(await late, false);
  assert.equal(await settlesWithin(never, 60_000, AbortSignal.abort()), false);
});
