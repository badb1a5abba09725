/**
 * The periodic reconcile's cost with many peers already programmed (issue #12): the vxlan and
 * host-gw backends read each kernel table once per reconcile and write nothing; entries removed
 * by hand are still restored, and a changed lease still gets its new entries (the per-lease
 * caches never hide a repair). The backends run against an in-memory kernel that counts reads.
 */
import assert from "node:assert/strict";
import { parseNetworkConfig } from "../../src/config/network.ts";
import type { Lease } from "../../src/lease/codec.ts";
import {
  DumpMemo,
  type Fdb,
  type Link,
  type Neigh,
  type Netlink,
  type Route,
  type TableRead,
} from "../../ffi/libnl/mod.ts";
import { HostGwBackend } from "../../src/backend/hostgw/backend.ts";
import { VxlanBackend } from "../../src/backend/vxlan/backend.ts";
import { formatIp } from "../../src/base/ipv4.ts";
import { extIface, VTEP_INDEX, vtepLink } from "../kit/vtep_fixture.ts";

const N = 250; // 198.19.1.0/24 … 198.19.250.0/24: inside the Network
const VTEP = VTEP_INDEX;
const ext = extIface("198.18.0.1");
const vtep = vtepLink(ext, "02:00:00:00:00:01");

/** A kernel table: every change (by the backend or by hand) is a new version of it. */
class Table<K, V> extends Map<K, V> {
  version = 0;
  override set(k: K, v: V): this {
    this.version++;
    return super.set(k, v);
  }
  override delete(k: K): boolean {
    this.version++;
    return super.delete(k);
  }
}

/**
 * An in-memory kernel: routes, one VTEP's neighbours and FDB; counts reads and writes. Like
 * Netlink with a DumpMemo, a listing hands back its last array while its table is unchanged.
 */
class CountingNl {
  routes = new Table<string, Route>();
  neigh = new Table<string, string>(); // ip → mac
  fdb = new Table<string, string>(); // mac → dst
  reads: Record<string, number> = {};
  writes = 0;
  /**
   * How often a listed array (or a memo's list of changed entries) was walked (for…of): what a
   * diff does and a steady round not.
   */
  scans = 0;
  /** How many entries those walks went through: a full diff all of a table, an incremental few. */
  walked = 0;
  #memos = new WeakMap<object, { version: number; list: unknown[]; read: TableRead<unknown> }>();
  #read(t: string) {
    this.reads[t] = (this.reads[t] ?? 0) + 1;
  }
  /** `l`, its walks counted. */
  #counted<T>(l: T[]): T[] {
    const count = (entries: number) => entries ? this.walked++ : this.scans++;
    Object.defineProperty(l, Symbol.iterator, {
      value: function* (this: T[]) {
        count(0);
        for (let i = 0; i < this.length; i++) {
          count(1);
          yield this[i];
        }
      },
    });
    return l;
  }
  #memo<T>(memo: DumpMemo<T>, t: Table<unknown, unknown>, list: () => T[]): TableRead<T> {
    const hit = this.#memos.get(memo);
    if (hit && hit.version === t.version) return hit.read as TableRead<T>;
    const l = this.#counted(list());
    // What Netlink's dump does: the entries gone and come, matched by their content.
    const text = (a: unknown[]) => a.map((x) => JSON.stringify(x));
    const was = hit ? text(hit.list) : null;
    const now = text(l);
    const read = memo.keep(
      l,
      was && {
        added: this.#counted(l.filter((_, i) => !was.includes(now[i]))),
        removed: this.#counted((hit!.list as T[]).filter((_, i) => !now.includes(was[i]))),
      },
    );
    this.#memos.set(memo, { version: t.version, list: l, read: read as TableRead<unknown> });
    return read;
  }
  #routes(): Route[] {
    return [...this.routes.values()].map((r) => ({ table: 254, scope: 0, ...r }));
  }
  #fdb(dev: number): Fdb[] {
    return [...this.fdb].map(([mac, dst]) => ({
      dev,
      mac,
      dst,
      state: 0x80,
      flags: 2,
      permanent: true,
      self: true,
    }));
  }
  #neigh(dev: number): Neigh[] {
    return [...this.neigh].map(([ip, mac]) => ({
      dev,
      ip,
      mac,
      state: 0x80,
      flags: 0,
      permanent: true,
    }));
  }
  routeList(f: { family?: number; type?: number } = {}): Route[] {
    this.#read("routes");
    if (f.family === 6 || (f.type ?? 1) !== 1) return [];
    return this.#counted(this.#routes());
  }
  routeRead(f: { family?: number }, memo: DumpMemo<Route>): TableRead<Route> {
    this.#read("routes");
    return this.#memo(
      memo,
      f.family === 6 ? this.empty : this.routes,
      () => f.family === 6 ? [] : this.#routes(),
    );
  }
  /** The IPv6 tables: empty, never changed. */
  empty = new Table<string, never>();
  fdbList(dev: number): Fdb[] {
    this.#read("fdb");
    return this.#counted(this.#fdb(dev));
  }
  fdbRead(dev: number, memo: DumpMemo<Fdb>): TableRead<Fdb> {
    this.#read("fdb");
    return this.#memo(memo, this.fdb, () => this.#fdb(dev));
  }
  neighList(dev: number): Neigh[] {
    this.#read("neigh");
    return this.#counted(this.#neigh(dev));
  }
  neighRead(dev: number, _family: number, memo: DumpMemo<Neigh>): TableRead<Neigh> {
    this.#read("neigh");
    return this.#memo(memo, this.neigh, () => this.#neigh(dev));
  }
  routeReplace(r: Route): void {
    this.writes++;
    this.routes.set(r.dst, { ...r });
  }
  neighSet(e: { ip: string; mac: string }): void {
    this.writes++;
    this.neigh.set(e.ip, e.mac);
  }
  fdbSet(e: { mac: string; dst: string }): void {
    this.writes++;
    this.fdb.set(e.mac, e.dst);
  }
  deleteMany(reqs: ({ route: Route } | { neigh: { ip: string } } | { fdb: { mac: string } })[]) {
    return reqs.map((q) => {
      this.writes++;
      if ("route" in q) this.routes.delete(q.route.dst);
      else if ("neigh" in q) this.neigh.delete(q.neigh.ip);
      else this.fdb.delete(q.fdb.mac);
      return null;
    });
  }
  linkByName(name: string): Link | null {
    return name === vtep.name ? vtep : null;
  }
  linkByIndex(i: number): Link | null {
    return i === VTEP ? vtep : null;
  }
  addrList(): { cidr: string }[] {
    return [{ cidr: "198.19.0.0/32" }];
  }
  addrReplace(): void {}
  addrDel(): void {}
}

const mac = (i: number) =>
  `be:00:00:00:${(i >> 8).toString(16).padStart(2, "0")}:${
    (i & 255).toString(16).padStart(2, "0")
  }`;

function lease(i: number, type: "vxlan" | "host-gw", publicIP = formatIp(0xc6120000 + 10 + i)) {
  const ip = 0xc6130000 + i * 256; // 198.19.i.0/24
  return {
    key: `${formatIp(ip)}-24`,
    subnet: { ip, prefix: 24 },
    attrs: {
      publicIP,
      backendType: type,
      backendData: type === "vxlan" ? { VNI: 1, VtepMAC: mac(i) } : undefined,
    },
    expiresAt: null,
    revision: i + 1,
  } satisfies Lease;
}

/** A backend on `nl`, prepared and started (its own lease 0), that has reconciled nothing. */
async function started(type: "vxlan" | "host-gw", nl: CountingNl) {
  const cfg = parseNetworkConfig(
    JSON.stringify({ Network: "198.19.0.0/16", SubnetLen: 24, Backend: { Type: type } }),
  );
  const b = type === "vxlan"
    ? new VxlanBackend(nl as unknown as Netlink)
    : new HostGwBackend(nl as unknown as Netlink);
  await b.prepare({ config: cfg, ext, previous: null });
  await b.start(lease(0, type, ext.publicIP));
  return b;
}

async function programmed(type: "vxlan" | "host-gw") {
  const nl = new CountingNl();
  const b = await started(type, nl);
  const peers = Array.from({ length: N }, (_, i) => lease(i + 1, type));
  await b.reconcile(peers);
  assert.equal(nl.routes.size, N, `${type}: the first reconcile programs every peer`);
  return { nl, b, peers };
}

for (const type of ["vxlan", "host-gw"] as const) {
  Deno.test(`reconcile cost (${type}): ${N} programmed peers, each table read once, nothing written`, async () => {
    const { nl, b, peers } = await programmed(type);
    nl.reads = {};
    nl.writes = 0;
    nl.walked = 0;
    await b.reconcile(peers);
    const want = type === "vxlan" ? { routes: 1, fdb: 1, neigh: 1 } : { routes: 1 };
    assert.deepEqual(nl.reads, want, `${type}: kernel tables read per periodic reconcile`);
    assert.equal(nl.writes, 0, `${type}: a reconcile with nothing to repair wrote to the kernel`);
    // The start's round read the tables again after programming and settled: the first
    // periodic round is steady (no entry walked), not a full diff.
    assert.equal(nl.walked, 0, `${type}: the first periodic round diffed ${nl.walked} entries`);
  });

  Deno.test(`reconcile cost (${type}): entries removed by hand and changed leases are still reconciled`, async () => {
    const { nl, b, peers } = await programmed(type);
    const gone = peers[7];
    nl.routes.delete(`${formatIp(gone.subnet.ip)}/24`);
    if (type === "vxlan") {
      nl.neigh.delete(formatIp(peers[8].subnet.ip));
      nl.fdb.delete(mac(10)); // peers[9]
    }
    // The same lease key with a new public IP: a new lease object from the watcher.
    const moved = { ...peers[20], attrs: { ...peers[20].attrs, publicIP: "198.18.200.1" } };
    const next = peers.map((p) => p === peers[20] ? moved : p);
    await b.reconcile(next);
    const dst = (l: Lease) => `${formatIp(l.subnet.ip)}/24`;
    assert.ok(nl.routes.has(dst(gone)), `${type}: a route removed by hand was not restored`);
    if (type === "vxlan") {
      assert.equal(nl.neigh.get(formatIp(peers[8].subnet.ip)), mac(9), "neighbour not restored");
      assert.equal(nl.fdb.get(mac(10)), peers[9].attrs.publicIP, "FDB entry not restored");
      assert.equal(nl.fdb.get(mac(21)), "198.18.200.1", "a changed lease kept its old FDB entry");
    } else {
      assert.equal(nl.routes.get(dst(moved))?.gw, "198.18.200.1", "a changed lease kept its route");
    }
  });
}

for (const type of ["vxlan", "host-gw"] as const) {
  Deno.test(`steady reconcile (${type}): unchanged peers and tables are not diffed; a change is repaired`, async () => {
    const { nl, b, peers } = await programmed(type);
    await b.reconcile(peers); // finds nothing to do: the steady round
    nl.reads = {};
    nl.scans = 0;
    await b.reconcile([...peers].reverse()); // the same leases, in another order
    const want = type === "vxlan" ? { routes: 1, fdb: 1, neigh: 1 } : { routes: 1 };
    assert.deepEqual(nl.reads, want, `${type}: a steady round still reads every table once`);
    assert.equal(nl.scans, 0, `${type}: the steady round walked a table (diffed)`);
    // A renewed lease: a new object with a new expiry and revision, the same entries.
    const renewed = peers.map((p, i) => i === 5 ? { ...p, expiresAt: 99, revision: 9999 } : p);
    await b.reconcile(renewed);
    assert.equal(nl.scans, 0, `${type}: a renewal made the round diff`);
    // A change of a table: the next round diffs and repairs.
    const dst = `${formatIp(peers[3].subnet.ip)}/24`;
    nl.routes.delete(dst);
    await b.reconcile(peers);
    assert.ok(nl.scans > 0 && nl.routes.has(dst), `${type}: a removed route was not restored`);
    // A lease that changed what it wants (another public IP): diffed and reprogrammed.
    await b.reconcile(peers); // steady again
    nl.scans = 0;
    const moved = peers.map((p, i) =>
      i === 6 ? { ...p, attrs: { ...p.attrs, publicIP: "198.18.201.1" } } : p
    );
    await b.reconcile(moved);
    assert.ok(nl.scans > 0, `${type}: a changed lease did not make the round diff`);
    if (type === "vxlan") assert.equal(nl.fdb.get(mac(7)), "198.18.201.1");
    else assert.equal(nl.routes.get(`${formatIp(peers[6].subnet.ip)}/24`)?.gw, "198.18.201.1");
    if (type === "vxlan") {
      nl.fdb.set(mac(5), "198.18.100.100"); // peers[4]'s, pointed elsewhere
      await b.reconcile(peers);
      assert.equal(nl.fdb.get(mac(5)), peers[4].attrs.publicIP, "a changed FDB entry not fixed");
    }
    // A peer gone from the set: diffed, its entries removed.
    await b.reconcile(peers.slice(1));
    assert.ok(!nl.routes.has(`${formatIp(peers[0].subnet.ip)}/24`), `${type}: stale route kept`);
  });
}

for (const type of ["vxlan", "host-gw"] as const) {
  Deno.test(`incremental reconcile (${type}): after a settled round, only what changed is diffed`, async () => {
    const { nl, b, peers } = await programmed(type);
    await b.reconcile(peers); // settles
    const dst = (l: Lease) => `${formatIp(l.subnet.ip)}/24`;
    const extra = lease(N + 1, type);
    // Events applied between rounds: a peer added, a peer removed.
    await b.apply([{ type: "added", lease: extra }, { type: "removed", lease: peers[0] }]);
    const now = [...peers.slice(1), extra];
    // Broken by hand: a peer's route removed, a foreign route added (left alone), a stale route
    // of weft's (marked, no peer wants it) added (removed); vxlan: an FDB entry pointed elsewhere.
    nl.routes.delete(dst(peers[3]));
    const dev = type === "vxlan" ? VTEP : ext.index;
    const via = (gw: string) =>
      type === "vxlan" ? { gw: gw.replace(/\/24$/, ""), onlink: true } : { gw };
    nl.routeReplace({ dst: "198.19.251.0/24", dev, ...via("198.19.251.0/24"), protocol: 4 });
    nl.routeReplace({ dst: "198.19.252.0/24", dev, ...via("198.19.252.0/24"), protocol: 87 });
    if (type === "vxlan") nl.fdb.set(mac(6), "198.18.100.100"); // peers[5]'s
    // The reference: a backend that never reconciled, on a copy of this kernel: a full diff.
    const full = { nl: new CountingNl() };
    for (const t of ["routes", "fdb", "neigh"] as const) {
      const [from, to] = [nl[t] as Map<string, unknown>, full.nl[t] as Map<string, unknown>];
      for (const [k, v] of from) to.set(k, typeof v === "object" ? { ...v } : v);
    }
    const ref = await started(type, full.nl);
    full.nl.walked = 0;
    await ref.reconcile(now);
    assert.ok(full.nl.walked >= N, "the full diff walked less than the table");
    nl.walked = 0;
    await b.reconcile(now);
    for (const t of ["routes", "fdb", "neigh"] as const) {
      const sorted = (m: Map<string, unknown>) => new Map([...m].sort());
      assert.deepEqual(
        sorted(nl[t] as Map<string, unknown>),
        sorted(full.nl[t] as Map<string, unknown>),
        `${type}: the incremental round left another ${t} table than the full diff`,
      );
    }
    assert.ok(nl.routes.has(dst(peers[3])), "a route removed by hand was not restored");
    assert.ok(nl.routes.has("198.19.251.0/24"), "a foreign route was touched");
    assert.ok(!nl.routes.has("198.19.252.0/24"), "a stale route of weft's was kept");
    assert.ok(nl.routes.has(dst(extra)) && !nl.routes.has(dst(peers[0])), "events not kept");
    if (type === "vxlan") assert.equal(nl.fdb.get(mac(6)), peers[5].attrs.publicIP);
    // The changed entries: 2 peers' by the events, a few by hand (each walked at most twice).
    assert.ok(
      nl.walked <= 20,
      `${type}: the round after a few changes walked ${nl.walked} entries`,
    );
    // Repaired: the next round diffs in full once, then settles.
    await b.reconcile(now);
    nl.scans = 0;
    await b.reconcile(now);
    assert.equal(nl.scans, 0, `${type}: no steady round after the repair`);
    if (type === "vxlan") {
      // An incremental round with nothing to repair keeps the FDB users' counts right: a peer
      // removed after it loses its FDB entry.
      const more = lease(N + 2, type);
      await b.apply([{ type: "added", lease: more }]);
      nl.walked = 0;
      await b.reconcile([...now, more]);
      assert.ok(nl.walked <= 20, `an event's round walked ${nl.walked} entries`);
      await b.apply([{ type: "removed", lease: peers[1] }]);
      assert.ok(!nl.fdb.has(mac(2)), "a removed peer's FDB entry was kept (miscounted users)");
      assert.ok(nl.fdb.has(mac(3)) && nl.fdb.has(mac(N + 1)), "another peer's FDB entry went");
    }
  });
}

for (const type of ["vxlan", "host-gw"] as const) {
  Deno.test(`re-listed leases (${type}): new objects wanting the same build no entries; a changed one does`, async () => {
    const { nl, b, peers } = await programmed(type);
    await b.reconcile(peers); // settles
    // Count every entry computation (the backends' own calls go through the instance).
    let made = 0;
    if (b instanceof VxlanBackend) {
      const entriesFor = b.entriesFor.bind(b);
      b.entriesFor = (l: Lease) => (made++, entriesFor(l));
    } else {
      const routesFor = b.routesFor.bind(b);
      b.routesFor = (l: Lease) => (made++, routesFor(l));
    }
    // A full re-list decodes every lease anew: equal leases, new objects.
    const relisted = peers.map((p) => structuredClone(p));
    nl.scans = 0;
    await b.reconcile(relisted);
    assert.equal(made, 0, `${type}: ${made} entry computations for ${N} re-listed, equal leases`);
    assert.equal(nl.scans, 0, `${type}: re-listed, equal leases made the round diff`);
    // A new object that wants something else: its entries are made and programmed.
    const moved = relisted.map((p, i) => {
      if (i !== 4) return structuredClone(p);
      const c = structuredClone(p);
      if (type === "vxlan") c.attrs.backendData = { VNI: 1, VtepMAC: "be:00:00:00:77:77" };
      else c.attrs.publicIP = "198.18.202.1";
      return c;
    });
    await b.reconcile(moved);
    assert.ok(made > 0, `${type}: a changed lease's entries were not made`);
    if (type === "vxlan") {
      assert.equal(nl.fdb.get("be:00:00:00:77:77"), peers[4].attrs.publicIP, "new MAC not set");
      assert.ok(!nl.fdb.has(mac(5)), "the old MAC's FDB entry was kept");
    } else {
      assert.equal(nl.routes.get(`${formatIp(peers[4].subnet.ip)}/24`)?.gw, "198.18.202.1");
    }
  });
}
