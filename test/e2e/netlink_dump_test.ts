/**
 * The raw kernel dumps (ffi/libnl/dump.ts) that routeList, neighList and fdbList read, against a
 * real kernel in a fresh namespace: what they list equals what `ip -N -j` and `bridge -j` show,
 * IPv4 and IPv6, weft-looking entries and an operator's (another table, a metric, a source, a
 * multipath route, blackholes, a reachable neighbour, an FDB default entry); and a DumpMemo hands
 * back the same array exactly while the table stands still, and tells which entries changed.
 *
 * This file is also the worker's module: `rpc` below is what the worker serves.
 */
import assert from "node:assert/strict";
import * as nl from "../../ffi/libnl/mod.ts";
import { type NsWorker, TestNetns } from "../kit/ns_worker.ts";
import { runOk, waitFor } from "../kit/proc.ts";

// ---------------------------------------------------------------- worker side (inside the netns)

const h = nl.netlink();
const memos = { route: new nl.DumpMemo<nl.Route>(), fdb: new nl.DumpMemo<nl.Fdb>() };
let lastRoutes: nl.TableRead<nl.Route> | null = null;
let lastFdb: nl.TableRead<nl.Fdb> | null = null;

/** What a memo says changed since the last call's array, as text per entry; null: unknown. */
type Change = { added: string[]; removed: string[] } | null;

/**
 * Lists through the memos; says whether each array is the previous call's, its length, and what
 * each memo says changed since.
 */
function memoLists(
  vx: number,
): {
  routesSame: boolean;
  fdbSame: boolean;
  routes: number;
  routeChange: Change;
  fdbChange: Change;
} {
  const routes = h.routeRead({ table: 0 }, memos.route);
  const fdb = h.fdbRead(vx, memos.fdb);
  const text = <T>(c: nl.TableChange<T> | null, f: (x: T) => string): Change =>
    c && { added: c.added.map(f), removed: c.removed.map(f) };
  const r = {
    routesSame: routes === lastRoutes,
    fdbSame: fdb === lastFdb,
    routes: routes.entries().length,
    routeChange: lastRoutes &&
      text(memos.route.changeSince(lastRoutes), (x) => `${x.dst} ${x.protocol}`),
    fdbChange: lastFdb && text(memos.fdb.changeSince(lastFdb), (x) => `${x.mac} ${x.dst}`),
  };
  const es = routes.entries();
  assert.ok(Object.isFrozen(es) && Object.isFrozen(es[0]), "memo results are frozen");
  assert.equal(routes.entries(), es, "a read parses once");
  lastRoutes = routes;
  lastFdb = fdb;
  return r;
}

/** Every device's neighbours (JSON has no undefined to pass as `dev`). */
function neighAll(family: 4 | 6): nl.Neigh[] {
  return h.neighList(undefined, family);
}

const ipText = (n: number) => [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join(".");
const macOf = (n: number) => n.toString(16).padStart(12, "0").replace(/(..)(?!$)/g, "$1:");

/**
 * Each table scanned (scanRoutes, scanFdb, scanNeigh) with every plain entry taken, as text per
 * entry (a plain one written from its numbers), beside the same read's entries as text: the two
 * must be the same entries. `plain`: how many were offered as numbers.
 */
function scans(vx: number, v6: number, u0: number): Record<string, {
  scanned: string[];
  entries: string[];
  plain: number;
}> {
  const rt = (r: nl.Route) =>
    [r.dst, r.gw, r.dev, !!r.onlink, r.protocol, r.metric ?? 0, r.src ?? "", r.type ?? 1].join(" ");
  const nt = (ip: string | null, mac: string | null, permanent: boolean) =>
    `${ip} ${mac} ${permanent}`;
  const out: ReturnType<typeof scans> = {};
  const routes = h.routeRead({ table: 0 }, new nl.DumpMemo());
  const r = { scanned: [] as string[], entries: routes.entries().map(rt), plain: 0 };
  nl.scanRoutes(routes, { table: 0 }, (p) => {
    r.plain++;
    r.scanned.push(
      [`${ipText(p.dst)}/${p.prefix}`, ipText(p.gw), p.dev, p.onlink, p.protocol, 0, "", 1]
        .join(" "),
    );
    return true;
  }, (x) => r.scanned.push(rt(x)));
  out.routes = r;
  for (const [name, dev] of [["fdb vx", vx], ["fdb v6", v6]] as const) {
    const read = h.fdbRead(dev, new nl.DumpMemo());
    const f = {
      scanned: [] as string[],
      entries: read.entries().filter((x) => x.self).map((x) => nt(x.dst, x.mac, true)),
      plain: 0,
    };
    nl.scanFdb(read, dev, (p) => {
      f.plain++;
      f.scanned.push(nt(ipText(p.ip), macOf(p.mac), true));
      return true;
    }, (x) => x.self && f.scanned.push(nt(x.dst, x.mac, true)));
    out[name] = f;
  }
  for (
    const [name, dev, fam] of [["neigh vx", vx, 4], ["neigh v6", v6, 6], [
      "neigh u0",
      u0,
      4,
    ]] as const
  ) {
    const read = h.neighRead(dev, fam, new nl.DumpMemo());
    const n = {
      scanned: [] as string[],
      entries: read.entries().map((x) => nt(x.ip, x.mac, x.permanent)),
      plain: 0,
    };
    nl.scanNeigh(read, dev, fam, (p) => {
      n.plain++;
      n.scanned.push(nt(ipText(p.ip), macOf(p.mac), true));
      return true;
    }, (x) => n.scanned.push(nt(x.ip, x.mac, x.permanent)));
    out[name] = n;
  }
  // An entry `plain` refuses is parsed and handed on: the scan then equals the entries again.
  const all: string[] = [];
  nl.scanRoutes(routes, { table: 0 }, () => false, (x) => all.push(rt(x)));
  out["routes, none taken"] = { scanned: all, entries: routes.entries().map(rt), plain: 0 };
  return out;
}

export const rpc = Object.assign(h, { memoLists, neighAll, scans });

// ---------------------------------------------------------------- test side

type J = Record<string, unknown>;

/** `ip -N -j` routes as {@link nl.Route}s (iproute2 omits the defaults: main, boot, unicast). */
function fromIp(e: J, index: Map<string, number>, v6: boolean): nl.Route & { type: number } {
  const nh = (e.nexthops as J[] | undefined)?.[0];
  let dst = String(e.dst);
  if (dst === "default") dst = v6 ? "::/0" : "0.0.0.0/0";
  else if (!dst.includes("/")) dst += v6 ? "/128" : "/32";
  const dev = (e.dev ?? nh?.dev) as string | undefined;
  const gw = (e.gateway ?? nh?.gateway) as string | undefined;
  const flags = (e.flags ?? nh?.flags ?? []) as string[];
  const r: nl.Route & { type: number } = {
    dst,
    type: Number(e.type ?? 1),
    table: Number(e.table ?? 254),
    scope: Number(e.scope ?? 0),
    protocol: Number(e.protocol ?? 3),
    onlink: flags.includes("onlink"),
  };
  if (e.prefsrc !== undefined) r.src = String(e.prefsrc);
  if (Number(e.metric ?? 0)) r.metric = Number(e.metric);
  if (dev !== undefined) r.dev = index.get(dev);
  if (gw !== undefined) r.gw = gw;
  return r;
}

const key = (x: unknown) => JSON.stringify(x, Object.keys(x as J).sort());
const sorted = <T>(xs: T[]) => xs.map(key).sort();

Deno.test("netlink dumps: routes, neighbours and FDB as ip and bridge show them", async () => {
  const ns = await TestNetns.create("wdmp");
  const id = ns.runId;
  const n = { u0: `u0${id}`, u1: `u1${id}`, vx: `vx${id}`, v6: `v6${id}` };
  const ip = (...a: string[]) => ns.ip(a);
  try {
    await ip("link", "add", n.u0, "type", "veth", "peer", "name", n.u1);
    await ip("addr", "add", "198.18.0.1/24", "dev", n.u0);
    await ip("addr", "add", "2001:db8:1::1/64", "dev", n.u0, "nodad");
    await ip("link", "set", n.u0, "up");
    await ip("link", "set", n.u1, "up");
    const vxlan = (name: string, local: string) =>
      ip(
        "link",
        "add",
        name,
        "type",
        "vxlan",
        "id",
        "1",
        "local",
        local,
        "dev",
        n.u0,
        "dstport",
        "8472",
        "nolearning",
      );
    await vxlan(n.vx, "198.18.0.1");
    await vxlan(n.v6, "2001:db8:1::1");
    await ip("link", "set", n.vx, "up");
    await ip("link", "set", n.v6, "up");
    // weft-looking entries, then an operator's and the kernel's own.
    for (let i = 0; i < 40; i++) {
      await ip(
        "route",
        "add",
        `198.19.${i}.0/24`,
        "via",
        `198.19.${i}.0`,
        "dev",
        n.vx,
        "onlink",
        "proto",
        "87",
      );
      await ip(
        "neigh",
        "add",
        `198.19.${i}.0`,
        "lladdr",
        `02:00:00:00:00:${i.toString(16).padStart(2, "0")}`,
        "dev",
        n.vx,
        "nud",
        "permanent",
      );
      await runOk([
        "bridge",
        "-n",
        ns.name,
        "fdb",
        "add",
        `02:00:00:00:00:${i.toString(16).padStart(2, "0")}`,
        "dev",
        n.vx,
        "dst",
        `198.18.0.${10 + i}`,
        "self",
        "permanent",
      ]);
    }
    await ip("route", "add", "198.19.200.0/24", "via", "198.18.0.2", "dev", n.u0, "metric", "50");
    await ip(
      "route",
      "add",
      "198.19.201.0/24",
      "via",
      "198.18.0.2",
      "dev",
      n.u0,
      "src",
      "198.18.0.1",
      "proto",
      "static",
    );
    await ip("route", "add", "198.19.202.0/24", "via", "198.18.0.2", "dev", n.u0, "table", "100");
    await ip(
      "route",
      "add",
      "198.19.203.0/24",
      "nexthop",
      "via",
      "198.18.0.3",
      "dev",
      n.u0,
      "nexthop",
      "via",
      "198.18.0.4",
      "dev",
      n.u0,
    );
    await ip("route", "add", "blackhole", "198.19.204.0/24");
    await ip("route", "add", "default", "via", "198.18.0.2", "dev", n.u0);
    await ip("-6", "route", "add", "2001:db8:5::/64", "via", "2001:db8:1::2", "dev", n.u0);
    await ip(
      "-6",
      "route",
      "add",
      "2001:db8:6::/64",
      "via",
      "2001:db8:6::",
      "dev",
      n.v6,
      "onlink",
      "proto",
      "87",
    );
    await ip(
      "-6",
      "route",
      "add",
      "2001:db8:7::/64",
      "via",
      "2001:db8:1::3",
      "dev",
      n.u0,
      "metric",
      "7",
      "table",
      "100",
    );
    await ip("-6", "route", "add", "blackhole", "2001:db8:8::/64");
    await ip(
      "-6",
      "neigh",
      "add",
      "2001:db8:6::",
      "lladdr",
      "02:00:00:00:01:01",
      "dev",
      n.v6,
      "nud",
      "permanent",
    );
    await ip(
      "neigh",
      "add",
      "198.18.0.9",
      "lladdr",
      "02:00:00:00:02:02",
      "dev",
      n.u0,
      "nud",
      "reachable",
    );
    await ip(
      "-6",
      "neigh",
      "add",
      "2001:db8:1::9",
      "lladdr",
      "02:00:00:00:02:03",
      "dev",
      n.u0,
      "nud",
      "stale",
    );
    await runOk([
      "bridge",
      "-n",
      ns.name,
      "fdb",
      "append",
      "00:00:00:00:00:00",
      "dev",
      n.vx,
      "dst",
      "198.18.0.99",
      "self",
      "permanent",
    ]);
    await runOk([
      "bridge",
      "-n",
      ns.name,
      "fdb",
      "add",
      "02:00:00:00:01:01",
      "dev",
      n.v6,
      "dst",
      "2001:db8:1::6",
      "self",
      "permanent",
    ]);

    const index = new Map(
      (await ns.ipJson<J[]>(["link", "show"])).map((l) => [String(l.ifname), Number(l.ifindex)]),
    );
    const vx = index.get(n.vx)!;
    const v6 = index.get(n.v6)!;
    const u0 = index.get(n.u0)!;
    const w: NsWorker = await ns.spawn(import.meta.url, "rpc");

    // Routes: every table, per type, both families.
    for (const family of [4, 6] as const) {
      const f = family === 6 ? ["-6"] : ["-4"];
      const shown = (JSON.parse(
        (await runOk(["ip", "-N", "-j", "-n", ns.name, ...f, "route", "show", "table", "all"]))
          .trim(),
      ) as J[]).map((e) => fromIp(e, index, family === 6));
      for (const type of [1, 6]) {
        const want = shown.filter((r) => r.type === type).map(({ type: t, ...r }) =>
          t === 1 ? r : { ...r, type: t }
        );
        const got = await w.call<nl.Route[]>("routeList", { table: 0, type, family });
        assert.deepEqual(sorted(got), sorted(want), `family ${family} type ${type}`);
        assert.ok(got.length > (type === 1 ? 2 : 0), `family ${family} type ${type}: some`);
      }
    }
    // The default filter (main, unicast) and a dev filter.
    const main = await w.call<nl.Route[]>("routeList", {});
    assert.ok(main.every((r) => r.table === 254) && main.some((r) => r.dst === "0.0.0.0/0"));
    assert.ok(!main.some((r) => r.dst === "198.19.202.0/24"));
    const mp = main.find((r) => r.dst === "198.19.203.0/24")!;
    assert.deepEqual([mp.gw, mp.dev], ["198.18.0.3", u0]);
    const onVx = await w.call<nl.Route[]>("routeList", { dev: vx });
    assert.equal(onVx.filter((r) => r.onlink && r.protocol === 87).length, 40);

    // Neighbours: of one device (the kernel filters), and of all.
    const neighOf = async (fam: string, dev?: string) =>
      (await ns.ipJson<J[]>([fam, "neigh", "show", ...(dev ? ["dev", dev] : []), "nud", "all"]))
        .map((e) => ({
          ip: String(e.dst),
          dev: dev ? index.get(dev) : index.get(String(e.dev)),
          mac: e.lladdr === undefined ? null : String(e.lladdr),
          permanent: (e.state as string[]).includes("PERMANENT"),
        }));
    const neighGot = async (dev: number | undefined, fam: 4 | 6) =>
      (await (dev === undefined
        ? w.call<nl.Neigh[]>("neighAll", fam)
        : w.call<nl.Neigh[]>("neighList", dev, fam))).map((x) => ({
          ip: x.ip,
          dev: x.dev,
          mac: x.mac,
          permanent: x.permanent,
        }));
    // The kernel adds neighbours of its own at any time (IPv6 multicast solicitations, probes):
    // the dump must equal what `ip` shows just before and just after it, both reads alike.
    const agree = async (what: string, dev: number | undefined, fam: 4 | 6, devName?: string) => {
      let last = "";
      try {
        await waitFor(what, async () => {
          const before = sorted(await neighOf(`-${fam}`, devName));
          const got = sorted(await neighGot(dev, fam));
          const after = sorted(await neighOf(`-${fam}`, devName));
          last = JSON.stringify({ got, ip: after });
          const same = (a: string[], b: string[]) => a.join("\n") === b.join("\n");
          return same(before, after) && same(got, after);
        }, { timeoutMs: 10_000, intervalMs: 200 });
      } catch (e) {
        throw new Error(`${(e as Error).message}; last reads: ${last}`);
      }
    };
    await agree("IPv4 neighbours of the VTEP", vx, 4, n.vx);
    assert.equal((await neighGot(vx, 4)).length, 40);
    await agree("IPv4 neighbours of the underlay", u0, 4, n.u0);
    await agree("every IPv4 neighbour", undefined, 4);
    await agree("IPv6 neighbours of the VTEP", v6, 6, n.v6);
    await agree("IPv6 neighbours of the underlay", u0, 6, n.u0);
    assert.ok((await neighGot(u0, 6)).some((x) => x.ip === "2001:db8:1::9" && !x.permanent));

    // FDB of each VTEP.
    for (const [name, dev] of [[n.vx, vx], [n.v6, v6]] as const) {
      const shown = (JSON.parse(
        (await runOk(["bridge", "-n", ns.name, "-j", "fdb", "show", "dev", name])).trim(),
      ) as J[]).map((e) => ({
        mac: String(e.mac),
        dst: e.dst === undefined ? null : String(e.dst),
        self: ((e.flags ?? []) as string[]).includes("self"),
        permanent: e.state === "permanent",
      }));
      const got = (await w.call<nl.Fdb[]>("fdbList", dev)).map((x) => ({
        mac: x.mac,
        dst: x.dst,
        self: x.self,
        permanent: x.permanent,
      }));
      assert.deepEqual(sorted(got), sorted(shown), `fdb of ${name}`);
    }
    assert.equal((await w.call<nl.Fdb[]>("fdbList", vx)).length, 41);

    // Scans: the same entries as the parsed reads; the plain ones as numbers. Plain IPv4 routes:
    // the 40 onlink ones and table 100's (not the metric, src, multipath or default routes).
    const sc = await w.call<ReturnType<typeof scans>>("scans", vx, v6, u0);
    for (const [name, x] of Object.entries(sc)) {
      assert.deepEqual(x.scanned.sort(), x.entries.sort(), `${name}: scanned = entries`);
    }
    assert.deepEqual(
      Object.fromEntries(Object.entries(sc).map(([k, x]) => [k, x.plain])),
      {
        routes: 41,
        "fdb vx": 41,
        "fdb v6": 0,
        "neigh vx": 40,
        "neigh v6": 0,
        "neigh u0": 0,
        "routes, none taken": 0,
      },
    );

    // DumpMemo: the same read while nothing changes, a new one after any change.
    const first = await w.call<{ routesSame: boolean; fdbSame: boolean }>("memoLists", vx);
    assert.deepEqual([first.routesSame, first.fdbSame], [false, false]);
    let m = await w.call<{ routesSame: boolean; fdbSame: boolean }>("memoLists", vx);
    assert.deepEqual([m.routesSame, m.fdbSame], [true, true]);
    const was5 = (await w.call<nl.Route[]>("routeList", { table: 254 }))
      .find((r) => r.dst === "198.19.5.0/24")!;
    await ip("route", "replace", "198.19.5.0/24", "via", "198.19.5.0", "dev", n.vx, "onlink");
    type Changes = { routesSame: boolean; fdbSame: boolean; routeChange: J; fdbChange: J };
    let c = await w.call<Changes>("memoLists", vx);
    assert.deepEqual([c.routesSame, c.fdbSame], [false, true], "a re-marked route is a change");
    // The memo tells which entries changed: the route as it was and as it is, nothing else.
    assert.deepEqual(c.routeChange, {
      added: ["198.19.5.0/24 3"],
      removed: [`198.19.5.0/24 ${was5.protocol}`],
    });
    assert.deepEqual(c.fdbChange, { added: [], removed: [] });
    const was05 = (await w.call<nl.Fdb[]>("fdbList", vx)).filter((x) =>
      x.mac === "02:00:00:00:00:05"
    );
    await runOk([
      "bridge",
      "-n",
      ns.name,
      "fdb",
      "replace",
      "02:00:00:00:00:05",
      "dev",
      n.vx,
      "dst",
      "198.18.0.200",
      "self",
      "permanent",
    ]);
    c = await w.call<Changes>("memoLists", vx);
    assert.deepEqual([c.routesSame, c.fdbSame], [true, false], "an FDB entry's new dst");
    assert.deepEqual(c.routeChange, { added: [], removed: [] });
    const now05 = (await w.call<nl.Fdb[]>("fdbList", vx)).filter((x) =>
      x.mac === "02:00:00:00:00:05"
    );
    const fdbText = (xs: nl.Fdb[]) => xs.map((x) => `${x.mac} ${x.dst}`);
    const [wasT, nowT] = [fdbText(was05), fdbText(now05)];
    assert.deepEqual(c.fdbChange, {
      added: nowT.filter((x) => !wasT.includes(x)),
      removed: wasT.filter((x) => !nowT.includes(x)),
    });
    assert.ok((c.fdbChange.added as string[]).includes("02:00:00:00:00:05 198.18.0.200"));
    m = await w.call("memoLists", vx);
    assert.deepEqual([m.routesSame, m.fdbSame], [true, true]);
    c = await w.call<Changes>("memoLists", vx);
    assert.deepEqual([c.routeChange, c.fdbChange], [{ added: [], removed: [] }, {
      added: [],
      removed: [],
    }]);
  } finally {
    await ns.destroy();
  }
});
