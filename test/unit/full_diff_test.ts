/**
 * The full diff on the dumps' bytes (route_present.ts, vxlan/present.ts: wanted entries found by
 * their numbers, the rest parsed) decides exactly what the diff of every parsed entry decides:
 * the same deletions, re-marks and missing entries, over random kernel tables of weft's exact
 * entries, flanneld's, near misses (gateway, metric, table, protocol, state, flags) and an
 * operator's. Dumps are made by test/kit/nl_bytes.ts.
 */
import assert from "node:assert/strict";
import {
  type DeleteRequest,
  DumpMemo,
  fdbBytesRead,
  type Neigh,
  neighBytesRead,
  type Netlink,
  type Route,
  routeBytesRead,
} from "../../ffi/libnl/mod.ts";
import { parseCidr } from "../../src/base/ipv4.ts";
import { marked, ownedAmong } from "../../src/backend/routes.ts";
import { splitRoutes } from "../../src/backend/route_present.ts";
import { splitVteps } from "../../src/backend/vxlan/present.ts";
import { sweepStale, type Want } from "../../src/backend/vxlan/reconcile.ts";
import { PeerFailures } from "../../src/backend/peer_errors.ts";
import { messages, neighMsg, routeMsg } from "../kit/nl_bytes.ts";

const VTEP = 7;
const EXT = 2;
const scope = {
  network: parseCidr("198.19.0.0/16"),
  own: parseCidr("198.19.0.0/24"),
  ext: EXT,
  subnetLen: 24,
};
const devices = { vxlan: VTEP };
const ROUTES = { table: 254, family: 4 as const };

/** xorshift32: the same tables on every run. */
function rng(seed: number) {
  let x = seed;
  return (n: number) => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) % n;
  };
}

const mac = (i: number) => `02:00:00:00:00:${i.toString(16).padStart(2, "0")}`;
const sub = (i: number) => `198.19.${i}.0`;
const pub = (i: number) => `198.18.0.${10 + i}`;

function want(i: number, m = i, p = i): Want {
  return {
    key: `k${i}`,
    e: {
      dev: VTEP,
      neigh: { ip: sub(i), mac: mac(m) },
      fdb: { mac: mac(m), dst: pub(p) },
      route: marked({ dst: `${sub(i)}/24`, gw: sub(i), dev: VTEP, onlink: true }),
    },
  };
}

/** A kernel that records what the sweep asks of it. */
class RecordingNl {
  ops: string[] = [];
  deleteMany(reqs: DeleteRequest[]): (Error | null)[] {
    for (const r of reqs) this.ops.push(`del ${JSON.stringify(r)}`);
    return reqs.map(() => null);
  }
  routeReplace(r: Route): void {
    this.ops.push(`replace ${JSON.stringify(r)}`);
  }
}

interface Tables {
  routes: Uint8Array;
  fdb: Uint8Array;
  neigh: Uint8Array;
}

function randomCase(pick: (n: number) => number): { want: Want[]; t: Tables } {
  const want_: Want[] = [];
  const routes: Uint8Array[] = [
    routeMsg({ dst: "0.0.0.0/0", gw: "198.18.0.1", dev: EXT }),
    routeMsg({ dst: "198.18.0.0/24", dev: EXT, protocol: 2 }),
    routeMsg({ dst: "198.19.0.0/24", dev: 9, protocol: 2 }), // the CNI bridge
  ];
  const fdb: Uint8Array[] = [
    neighMsg({
      family: 7,
      dev: VTEP,
      mac: "00:00:00:00:00:00",
      ip: "198.18.0.99",
      state: 0x80,
      flags: 2,
    }),
  ];
  const neigh: Uint8Array[] = [];
  for (let i = 1; i <= 14; i++) {
    // Wanted by none, one or two peers (a second lease sharing the MAC and public IP).
    const w = pick(5);
    if (w > 0) want_.push(want(i));
    if (w === 4) want_.push(want(i + 100 > 250 ? i : i + 100, i, i));
    const route = { dst: `${sub(i)}/24`, gw: sub(i), dev: VTEP, onlink: true, protocol: 87 };
    const r = [
      null,
      route,
      { ...route, protocol: 3 }, // flanneld's
      { ...route, gw: sub(i + 1) },
      { ...route, metric: 50 },
      { ...route, table: 100 },
      { ...route, protocol: 4 }, // static: an operator's
      { ...route, onlink: false },
      { dst: `${sub(i)}/24`, gw: pub(i), dev: EXT, protocol: 87 }, // a stale host-gw one
    ][pick(9)];
    if (r) routes.push(routeMsg(r));
    const f = [
      null,
      { family: 7, dev: VTEP, mac: mac(i), ip: pub(i), state: 0x80, flags: 2 },
      { family: 7, dev: VTEP, mac: mac(i), ip: pub(i + 1), state: 0x80, flags: 2 },
      { family: 7, dev: VTEP, mac: mac(i), ip: pub(i), state: 0x80, flags: 0 }, // not self
      { family: 7, dev: VTEP, mac: mac(i), ip: "2001:db8::1", state: 0x80, flags: 2 },
      { family: 7, dev: VTEP, mac: mac(i), state: 0x80, flags: 2 }, // no dst
    ][pick(6)];
    if (f) fdb.push(neighMsg(f));
    const n = [
      null,
      { family: 2, dev: VTEP, ip: sub(i), mac: mac(i), state: 0x80 },
      { family: 2, dev: VTEP, ip: sub(i), mac: mac(i), state: 0x02 }, // reachable
      { family: 2, dev: VTEP, ip: sub(i), mac: mac(i + 1), state: 0x80 },
      { family: 2, dev: VTEP, ip: sub(i), state: 0x20 }, // failed: no MAC
    ][pick(5)];
    if (n) neigh.push(neighMsg(n));
  }
  return {
    want: want_,
    t: { routes: messages(...routes), fdb: messages(...fdb), neigh: messages(...neigh) },
  };
}

/** The sweep's decisions, by the bytes path (`bytes`) or over every parsed entry. */
function decide(want: Want[], t: Tables, bytes: boolean) {
  const rr = routeBytesRead(t.routes, ROUTES, new DumpMemo<Route>());
  const fr = fdbBytesRead(t.fdb, VTEP, new DumpMemo());
  const nr = neighBytesRead(t.neigh, VTEP, 4, new DumpMemo<Neigh>());
  const nl = new RecordingNl();
  const f = new PeerFailures();
  const vteps: [number, 4][] = [[VTEP, 4]];
  let found = 0;
  let rest = 0;
  let s;
  if (bytes) {
    const r = splitRoutes([rr], [ROUTES], want.map((w) => w.e.route));
    const v = splitVteps([{ fdb: fr, neigh: nr }], vteps, want);
    found = [...r.present, ...v.fdbHave, ...v.neighHave].filter(Boolean).length;
    rest = r.rest.length + v.tables[0].fdb.length + v.tables[0].neigh.length;
    const owned = ownedAmong([r.rest], scope, devices);
    s = sweepStale(nl as unknown as Netlink, want, vteps, owned, v.tables, f, {
      route: r.present,
      fdb: v.fdbHave,
      neigh: v.neighHave,
    });
  } else {
    const owned = ownedAmong([rr.entries()], scope, devices);
    const tables = [{ fdb: fr.entries(), neigh: nr.entries() }];
    s = sweepStale(nl as unknown as Netlink, want, vteps, owned, tables, f);
  }
  return {
    decided: {
      ops: nl.ops.sort(),
      removed: s.removed,
      changed: s.changed,
      routeMissing: want.flatMap((w, i) => s.routeMissing.has(w.e.route) ? [i] : []),
      fdbHave: [...s.fdbHave],
      neighHave: [...s.neighHave],
    },
    found,
    rest,
  };
}

Deno.test("full diff on bytes: the same decisions as the diff of every parsed entry", () => {
  const pick = rng(0x2545f491);
  let found = 0;
  let entries = 0;
  for (let trial = 0; trial < 300; trial++) {
    const { want, t } = randomCase(pick);
    const a = decide(want, t, true);
    const b = decide(want, t, false);
    assert.deepEqual(a.decided, b.decided, `trial ${trial}`);
    found += a.found;
    entries += a.found + a.rest;
  }
  // The bytes path did its work: many entries found by number, not parsed.
  assert.ok(found > entries / 10, `found ${found} of ${entries}`);
});

Deno.test("full diff on bytes: exact entries are found, near misses are parsed for the sweep", () => {
  const w = [want(1), want(2), want(3)];
  const route = (i: number) => ({ dst: `${sub(i)}/24`, gw: sub(i), dev: VTEP, onlink: true });
  const t: Tables = {
    routes: messages(
      routeMsg({ ...route(1), protocol: 87 }),
      routeMsg({ ...route(2), protocol: 3 }), // flanneld's: re-marked
      routeMsg({ ...route(3), protocol: 87, metric: 5 }), // not weft's shape: left alone
    ),
    fdb: messages(
      neighMsg({ family: 7, dev: VTEP, mac: mac(1), ip: pub(1), state: 0x80, flags: 2 }),
      neighMsg({ family: 7, dev: VTEP, mac: mac(2), ip: pub(9), state: 0x80, flags: 2 }),
    ),
    neigh: messages(
      neighMsg({ family: 2, dev: VTEP, ip: sub(1), mac: mac(1), state: 0x80 }),
      neighMsg({ family: 2, dev: VTEP, ip: sub(2), mac: mac(2), state: 0x02 }),
    ),
  };
  const r = splitRoutes(
    [routeBytesRead(t.routes, ROUTES, new DumpMemo())],
    [ROUTES],
    w.map((x) => x.e.route),
  );
  assert.deepEqual([...r.present], [1, 0, 0]);
  assert.deepEqual(r.rest.map((x) => `${x.dst} ${x.protocol} ${x.metric ?? 0}`), [
    "198.19.2.0/24 3 0",
    "198.19.3.0/24 87 5",
  ]);
  const v = splitVteps(
    [{
      fdb: fdbBytesRead(t.fdb, VTEP, new DumpMemo()),
      neigh: neighBytesRead(t.neigh, VTEP, 4, new DumpMemo()),
    }],
    [[VTEP, 4]],
    w,
  );
  assert.deepEqual([...v.fdbHave], [1, 0, 0]);
  assert.deepEqual([...v.neighHave], [1, 0, 0]);
  assert.deepEqual(v.tables[0].fdb.map((x) => `${x.mac} ${x.dst}`), [`${mac(2)} ${pub(9)}`]);
  assert.deepEqual(v.tables[0].neigh.map((x) => `${x.ip} ${x.permanent}`), [`${sub(2)} false`]);
  const d = decide(w, t, true).decided;
  assert.deepEqual(d.routeMissing, [2]);
  assert.equal(d.removed, 0);
  assert.ok(d.ops.some((o) => o.startsWith("replace") && o.includes(sub(2))), "re-marked");
  assert.ok(d.ops.some((o) => o.startsWith("del") && o.includes(pub(9))), "stale FDB deleted");
});
