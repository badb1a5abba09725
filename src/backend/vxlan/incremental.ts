/**
 * The incremental vxlan reconcile (issue #12): after a round that found nothing to do (steady.ts),
 * its kernel tables held exactly its peers' entries of weft's. So when a few entries came or
 * went in the tables since (the memos tell which, by their bytes) and a few peers came, went or
 * changed, only entries sharing a destination, MAC or address with those can need a repair.
 * {@link narrow} returns that part of the problem — the wanted entries there and what the kernel
 * holds there (the settled peers' entries, less those gone, plus those come) — for
 * reconcile.ts's sweep and install, unchanged. Ownership is theirs, as in the full diff.
 *
 * @example
 * ```ts
 * const part = sinceSettled({ steady, peers, sigs, vteps, scope, routeMemos, vtepMemos, ... });
 * if (part) installMissing(nl, part.want, sweepStale(nl, part.want, vteps, part.routes,
 *   part.tables, f), f);
 * ```
 */
import type { Fdb, Neigh, Route, TableChange, TableRead } from "../../../ffi/libnl/mod.ts";
import type { RouteScope } from "../backend.ts";
import { mainRoutesChange, ownedAmong, type RouteMemos, type VtepDevices } from "../routes.ts";
import { sameRoute } from "../route_diff.ts";
import type { SteadyRounds } from "../steady.ts";
import type { VtepMemos, Vteps, VtepTables, Want } from "./reconcile.ts";

/** Per VTEP (as in {@link Vteps}), what changed in its FDB and neighbour tables. */
export interface VtepChanges {
  fdb: TableChange<Fdb>;
  neigh: TableChange<Neigh>;
}

/** The part of a reconcile that can need a repair. */
export interface Narrowed {
  want: Want[];
  /** weft's routes the kernel holds there. */
  routes: Route[];
  tables: VtepTables[];
}

/** A peer's wanted entries (wants.ts's cached per lease). */
export interface PeerWants {
  readonly wants: readonly Want[];
}

/** What {@link sinceSettled} looks at: the backend's state for this round. */
export interface RoundState {
  /** Settled with each peer's {@link PeerWants} as its item. */
  steady: SteadyRounds;
  /** Per peer, its wanted entries. */
  peers: readonly PeerWants[];
  /** Per peer, its text for the steady test (steady.ts). */
  sigs: readonly string[];
  vteps: Vteps;
  scope: RouteScope;
  routeMemos: RouteMemos;
  vtepMemos: VtepMemos;
  devices: VtepDevices;
}

/**
 * The part of this round that can need a repair since the last settled one, or null (diff it
 * all): no round settled, the memos cannot tell what changed, more than a tenth of the peers
 * changed, or the peers changed but no table did (an event this host never applied: worth a
 * full look). The tables must have been read through the memos this round.
 */
export function sinceSettled(r: RoundState): Narrowed | null {
  const was = r.steady.since<PeerWants>(r.sigs);
  const limit = Math.max(16, r.peers.length / 10);
  if (!was || was.gone.length + was.came.length > limit) return null;
  const nr = was.tables.length - 2 * r.vteps.length;
  const routes = mainRoutesChange(
    r.scope,
    r.routeMemos,
    was.tables.slice(0, nr) as TableRead<Route>[],
  );
  if (!routes) return null;
  const changes: VtepChanges[] = [];
  for (let i = 0; i < r.vteps.length; i++) {
    const fdb = r.vtepMemos[i].fdb.changeSince(was.tables[nr + 2 * i] as TableRead<Fdb>);
    const neigh = r.vtepMemos[i].neigh.changeSince(was.tables[nr + 2 * i + 1] as TableRead<Neigh>);
    if (!fdb || !neigh) return null;
    changes.push({ fdb, neigh });
  }
  let moved = routes.added.length + routes.removed.length;
  for (const c of changes) {
    moved += c.fdb.added.length + c.fdb.removed.length + c.neigh.added.length +
      c.neigh.removed.length;
  }
  if (moved === 0) return null;
  return narrow(
    was.gone,
    was.came,
    r.peers,
    { added: ownedAmong([routes.added], r.scope, r.devices), removed: routes.removed },
    r.vteps,
    changes,
    3 * limit,
  );
}

/**
 * The part of the reconcile of `peers` that can need a repair, or null when it is not small
 * (more than `limit` wanted entries): diff it all. `gone`: the settled round's peers whose
 * entries are not wanted now (gone or changed); `came`: indexes into `peers` of those whose
 * entries are new; every other peer wants what it wanted in the settled round, which the kernel
 * then held. `routes`: weft's routes come and gone.
 */
export function narrow(
  gone: readonly PeerWants[],
  came: readonly number[],
  peers: readonly PeerWants[],
  routes: { added: readonly Route[]; removed: readonly Route[] },
  vteps: Vteps,
  changes: VtepChanges[],
  limit: number,
): Narrowed | null {
  // Keyed by the field alone (not the device): taking in more than needed is safe.
  const dsts = new Set<string>();
  const macs = new Set<string>();
  const ips = new Set<string>();
  const touch = (w: Want) => {
    dsts.add(w.e.route.dst);
    if (w.e.fdb) macs.add(w.e.fdb.mac);
    if (w.e.neigh) ips.add(w.e.neigh.ip);
  };
  for (const r of routes.added) dsts.add(r.dst);
  for (const r of routes.removed) dsts.add(r.dst);
  for (const c of changes) {
    for (const x of c.fdb.added) macs.add(x.mac);
    for (const x of c.fdb.removed) macs.add(x.mac);
    for (const n of c.neigh.added) ips.add(n.ip);
    for (const n of c.neigh.removed) ips.add(n.ip);
  }
  for (const p of gone) for (const w of p.wants) touch(w);
  for (const i of came) for (const w of peers[i].wants) touch(w);
  const hit = (w: Want) =>
    dsts.has(w.e.route.dst) || (w.e.fdb !== undefined && macs.has(w.e.fdb.mac)) ||
    (w.e.neigh !== undefined && ips.has(w.e.neigh.ip));
  // Until no wanted entry adds a key: every peer sharing a key with one taken in is taken in.
  let want: Want[] = [];
  /** Per entry of `want`, whether its peer wanted it in the settled round too. */
  let kept: boolean[] = [];
  const isNew = new Set(came);
  for (let size = -1; size !== dsts.size + macs.size + ips.size;) {
    size = dsts.size + macs.size + ips.size;
    want = [];
    kept = [];
    for (let i = 0; i < peers.length; i++) {
      for (const w of peers[i].wants) {
        if (!hit(w)) continue;
        want.push(w);
        kept.push(!isNew.has(i));
        touch(w);
      }
    }
    if (want.length > limit) return null;
  }
  // What the kernel held there when settled: the settled peers' entries, as they are installed:
  // those of the peers that still want them, and those of the peers gone.
  const settled = want.filter((_, i) => kept[i]);
  for (const p of gone) for (const w of p.wants) if (hit(w)) settled.push(w);
  const had: Route[] = [];
  const tables = vteps.map(() => ({ fdb: [] as Fdb[], neigh: [] as Neigh[] }));
  const slot = new Map(vteps.map(([dev], i) => [dev, i]));
  for (const { e } of settled) {
    if (dsts.has(e.route.dst)) had.push(e.route);
    const t = tables[slot.get(e.dev) ?? -1];
    if (!t) continue;
    if (e.fdb && macs.has(e.fdb.mac)) {
      t.fdb.push({ dev: e.dev, ...e.fdb, state: 0x80, flags: 2, permanent: true, self: true });
    }
    if (e.neigh && ips.has(e.neigh.ip)) {
      t.neigh.push({ dev: e.dev, ...e.neigh, state: 0x80, flags: 0, permanent: true });
    }
  }
  // Less what went, plus what came.
  const now = had.filter((r) => !routes.removed.some((x) => sameRoute(x, r)));
  now.push(...routes.added);
  const narrowed = tables.map((t, i) => {
    const c = changes[i];
    const fdb = t.fdb.filter((x) =>
      !c.fdb.removed.some((y) => y.self && y.mac === x.mac && y.dst === x.dst)
    );
    const neigh = t.neigh.filter((n) =>
      !c.neigh.removed.some((y) => y.permanent && y.ip === n.ip && y.mac === n.mac)
    );
    return { fdb: [...fdb, ...c.fdb.added], neigh: [...neigh, ...c.neigh.added] };
  });
  return { want, routes: now, tables: narrowed };
}
