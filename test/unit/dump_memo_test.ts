/**
 * DumpMemo (ffi/libnl/dump_memo.ts) over dumps made by test/kit/nl_bytes.ts: the same read while
 * a table's bytes stand still (small tables and ones large enough for libc's memcmp), a new read
 * and the entries that changed after a change, nothing parsed until asked, and an old read's
 * bytes refused once a newer read took the buffer.
 */
import assert from "node:assert/strict";
import { DumpMemo, type Route, routeBytesRead } from "../../ffi/libnl/mod.ts";
import { messages, routeMsg } from "../kit/nl_bytes.ts";

const F = { table: 254, family: 4 as const };
const table = (n: number, gw = (i: number) => `198.19.${i >> 8}.${i & 255}`) =>
  messages(
    ...Array.from({ length: n }, (_, i) =>
      routeMsg({
        dst: `198.19.${i >> 8}.${i & 255}/32`,
        gw: gw(i),
        dev: 7,
        onlink: true,
        protocol: 87,
      })),
  );

for (const n of [3, 400]) {
  Deno.test(`dump memo: ${n} routes (${table(n).length} bytes): same read while unchanged, the change after one`, () => {
    const memo = new DumpMemo<Route>();
    const a = routeBytesRead(table(n), F, memo);
    // A copy of the same bytes: another buffer, equal content.
    assert.equal(routeBytesRead(table(n).slice(), F, memo), a, "unchanged: the same read");
    assert.equal(a.entries().length, n);
    const b = routeBytesRead(
      table(n, (i) => i === 1 ? "198.18.0.9" : `198.19.${i >> 8}.${i & 255}`),
      F,
      memo,
    );
    assert.notEqual(b, a, "a changed gateway is a new read");
    const c = memo.changeSince(a);
    assert.deepEqual(
      [c?.added.map((r) => r.gw), c?.removed.map((r) => r.gw)],
      [["198.18.0.9"], ["198.19.0.1"]],
    );
    assert.deepEqual(memo.changeSince(b), { added: [], removed: [] });
    assert.throws(() => a.bytes(), /newer read/, "an old read's bytes are gone");
    assert.equal(b.entries().length, n);
  });
}

Deno.test("dump memo: random edits of 300 routes: the change is exactly the entries gone and come", () => {
  let x = 0x9e3779b9;
  const pick = (n: number) => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) % n;
  };
  const route = (i: number, gw: number) =>
    routeMsg({ dst: `198.19.${i >> 8}.${i & 255}/32`, gw: `198.18.0.${gw}`, dev: 7, protocol: 87 });
  const text = (r: Route) => `${r.dst} ${r.gw}`;
  for (let trial = 0; trial < 40; trial++) {
    // 300 routes, each "i gw"; then 1–6 edits: a gateway changed, a route gone, a route new.
    let rows = Array.from({ length: 300 }, (_, i) => [i, 1 + pick(200)]);
    const memo = new DumpMemo<Route>();
    const a = routeBytesRead(messages(...rows.map(([i, g]) => route(i, g))), F, memo);
    const before = new Set(a.entries().map(text));
    for (let e = 1 + pick(6); e > 0; e--) {
      const k = pick(rows.length);
      const kind = pick(3);
      if (kind === 0) rows[k] = [rows[k][0], 201 + pick(50)];
      else if (kind === 1) rows = rows.filter((_, j) => j !== k);
      else rows.splice(k, 0, [1000 + trial * 10 + e, 7]);
    }
    const b = routeBytesRead(messages(...rows.map(([i, g]) => route(i, g))), F, memo);
    const after = new Set(b.entries().map(text));
    const c = memo.changeSince(a);
    assert.ok(c, `trial ${trial}: the memo knows the change`);
    assert.deepEqual(
      [c.added.map(text).sort(), c.removed.map(text).sort()],
      [
        [...after].filter((t) => !before.has(t)).sort(),
        [...before].filter((t) => !after.has(t)).sort(),
      ],
      `trial ${trial}`,
    );
  }
});
