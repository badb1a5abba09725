/**
 * SteadyRounds (src/backend/steady.ts): which peers came and went since the settled round, with
 * the peers in the watcher's order (a few added at the end or removed in the middle) or another.
 */
import assert from "node:assert/strict";
import { SteadyRounds } from "../../src/backend/steady.ts";

const texts = (n: number) => Array.from({ length: n }, (_, i) => `p${i}>e${i}`);

Deno.test("steady rounds: holds and since find what came and went, in any order", () => {
  const s = new SteadyRounds();
  const had = texts(50);
  const tables = [[1], [2]];
  s.settle(had, tables, had.map((t) => ({ t })));
  assert.ok(s.holds([...had], tables), "the same texts, new array");
  assert.ok(s.holds([...had].reverse(), tables), "the same texts in another order");
  assert.ok(!s.holds(had, [[1], [2]]), "another table array");
  assert.ok(!s.holds([...had.slice(0, 49), "p49>changed"], tables), "a changed last peer");

  // One added at the end, one removed in the middle, one changed near the start.
  const now = [...had];
  now[3] = "p3>changed";
  now.splice(20, 1);
  now.push("p50>e50");
  const c = s.since<{ t: string }>(now)!;
  assert.deepEqual(c.came.map((i) => now[i]), ["p3>changed", "p50>e50"]);
  assert.deepEqual(c.gone.map((x) => x.t).sort(), ["p20>e20", "p3>e3"]);
  assert.equal(c.tables, tables);

  // Another order altogether: the same answer.
  const shuffled = [...now].reverse();
  const d = s.since<{ t: string }>(shuffled)!;
  assert.deepEqual(d.came.map((i) => shuffled[i]).sort(), ["p3>changed", "p50>e50"]);
  assert.deepEqual(d.gone.map((x) => x.t).sort(), ["p20>e20", "p3>e3"]);

  assert.deepEqual(s.since(had), { tables, gone: [], came: [] });
  s.reset();
  assert.equal(s.since(had), null);
});
