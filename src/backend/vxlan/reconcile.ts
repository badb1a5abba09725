/**
 * The two halves of a vxlan reconcile against the wanted entries of every peer: the stale-entry
 * sweep (at start and after every re-list: weft's routes, then FDB, then neighbour entries no
 * peer wants, on weft's own VTEPs only), then installing what is missing, per peer in flannel's
 * order. Both record failures per peer in a {@link PeerFailures} and never throw for one peer.
 *
 * @example
 * ```ts
 * const swept = sweepStale(nl, want, vteps, ownedRoutes(), [{ fdb, neigh }], f);
 * const installed = installMissing(nl, want, swept, f);
 * ```
 */
import {
  DumpMemo,
  type Fdb,
  type Neigh,
  type Netlink,
  type Route,
} from "../../../ffi/libnl/mod.ts";
import type { VtepReads } from "./present.ts";
import { diffRoutes, Index } from "../route_diff.ts";
import type { PeerFailures } from "../peer_errors.ts";
import type { Family } from "./device.ts";
import type { PeerEntries } from "./entries.ts";
import { deleteAll, installPeer } from "./program.ts";

/** A wanted entry set and the lease key failures are recorded against. */
export interface Want {
  key: string;
  e: PeerEntries;
}

/** weft's VTEPs on this host: ifindex and the family it carries. */
export type Vteps = [number, Family][];

/** A VTEP's FDB and neighbour entries: all, or those a full diff did not find wanted (present.ts). */
export interface VtepTables {
  fdb: readonly Fdb[];
  neigh: readonly Neigh[];
}

/** Per VTEP (IPv4 first), the memos its tables are read through (steady.ts). */
export type VtepMemos = { fdb: DumpMemo<Fdb>; neigh: DumpMemo<Neigh> }[];

export function vtepMemos(): VtepMemos {
  return [0, 1].map(() => ({ fdb: new DumpMemo<Fdb>(), neigh: new DumpMemo<Neigh>() }));
}

/** Each VTEP's FDB and neighbour tables, read through its memos. */
export function readVteps(nl: Netlink, vteps: Vteps, memos: VtepMemos): VtepReads[] {
  return vteps.map(([dev, family], i) => ({
    fdb: nl.fdbRead(dev, memos[i].fdb),
    neigh: nl.neighRead(dev, family, memos[i].neigh),
  }));
}

/**
 * Per wanted entry, what a full diff already found in the kernel exactly as wanted
 * (route_present.ts, present.ts): the sweep is then handed only the other entries.
 */
export interface Found {
  route: Uint8Array;
  fdb: Uint8Array;
  neigh: Uint8Array;
}

/** What the sweep found already in place, per index into the wanted list. */
export interface Swept {
  /** Routes removed. */
  removed: number;
  /** Entries removed or re-marked, of every kind: 0 when the sweep left the kernel as it was. */
  changed: number;
  /** The wanted routes the kernel does not hold. */
  routeMissing: Set<Route>;
  fdbHave: Uint8Array;
  neighHave: Uint8Array;
}

/**
 * Removes what no peer wants, stale first (routes, then FDB, then neighbours), so nothing points
 * at a removed entry; flanneld's exact routes are re-marked in place (`routes`: weft's routes as
 * routes.ts lists them; `tables`: per VTEP, its FDB and neighbour entries). Each table is read
 * once, by the caller:
 * after the deletions the kernel holds what it held less what they removed, none of it wanted,
 * so {@link installMissing} needs no second read. The kernel's entries are looked up by the
 * field the dump has (destination, MAC, address): no key string per entry. With `found` (a
 * full diff's), `routes` and `tables` hold only the entries not found: a wanted entry found is
 * the only one of its kind, so the others are matched against the entries not found alone.
 */
export function sweepStale(
  nl: Netlink,
  want: Want[],
  vteps: Vteps,
  routes: Route[],
  tables: VtepTables[],
  f: PeerFailures,
  found?: Found,
): Swept {
  const wantRoutes: Route[] = [];
  for (let i = 0; i < want.length; i++) if (!found?.route[i]) wantRoutes.push(want[i].e.route);
  const { del, add, adopt } = diffRoutes(wantRoutes, routes);
  deleteAll(nl, del.map((route) => ({ route })), del.map((r) => r.dst), f);
  for (const r of adopt) f.run(r.dst, () => nl.routeReplace(r)); // re-mark in place
  const fdbHave = found ? found.fdb.slice() : new Uint8Array(want.length);
  const neighHave = found ? found.neigh.slice() : new Uint8Array(want.length);
  const byMac = new Index(want, (w, i) => fdbHave[i] ? null : w.e.fdb?.mac);
  const byIp = new Index(want, (w, i) => neighHave[i] ? null : w.e.neigh?.ip);
  let changed = del.length + adopt.length;
  for (const [v, [dev, family]] of vteps.entries()) {
    const fdbDel: { mac: string; dst: string }[] = [];
    for (const x of tables[v].fdb) {
      if (!x.self || !x.dst) continue;
      let wanted = false;
      for (let i = byMac.first.get(x.mac) ?? -1; i >= 0; i = byMac.next[i]) {
        const e = want[i].e;
        if (e.dev !== dev || e.fdb!.dst !== x.dst) continue;
        wanted = true;
        fdbHave[i] = 1;
      }
      if (!wanted) fdbDel.push({ mac: x.mac, dst: x.dst });
    }
    deleteAll(
      nl,
      fdbDel.map((x) => ({ fdb: { dev, ...x } })),
      fdbDel.map((x) => `fdb ${x.mac}`),
      f,
    );
    const neighDel: string[] = [];
    for (const n of tables[v].neigh) {
      if (family === 4 && !n.ip.includes(".")) continue;
      let wanted = false;
      for (let i = byIp.first.get(n.ip) ?? -1; n.permanent && i >= 0; i = byIp.next[i]) {
        const e = want[i].e;
        if (e.dev !== dev || e.neigh!.mac !== n.mac) continue;
        wanted = true;
        neighHave[i] = 1;
      }
      // Only permanent IPv6 entries are weft's: the kernel's own (router, link-local) stay.
      if (!wanted && (family === 4 || n.permanent)) neighDel.push(n.ip);
    }
    deleteAll(
      nl,
      neighDel.map((ip) => ({ neigh: { dev, ip } })),
      neighDel.map((ip) => `neigh ${ip}`),
      f,
    );
    changed += fdbDel.length + neighDel.length;
  }
  return { removed: del.length, changed, routeMissing: new Set(add), fdbHave, neighHave };
}

/**
 * Installs what is missing (as the sweep found it), per peer in flannel's order. Replace is
 * idempotent, but skipping entries already present keeps a restart with 5000 peers cheap.
 * Returns how many peers' entries it installed.
 */
export function installMissing(nl: Netlink, want: Want[], have: Swept, f: PeerFailures): number {
  let installed = 0;
  want.forEach((w, i) => {
    const e = w.e;
    if (
      !have.routeMissing.has(e.route) && (!e.fdb || have.fdbHave[i]) &&
      (!e.neigh || have.neighHave[i])
    ) return;
    installed++;
    f.run(w.key, () => installPeer(nl, e));
  });
  return installed;
}
