/**
 * The two halves of a vxlan reconcile against the wanted entries of every peer: the stale-entry
 * sweep (at start and after every re-list: weft's routes, then FDB, then neighbour entries no
 * peer wants, on weft's own VTEPs only), then installing what is missing, per peer in flannel's
 * order. Both record failures per peer in a {@link PeerFailures} and never throw for one peer.
 *
 * @example
 * ```ts
 * const { removed, neighHave } = sweepStale(nl, want, vteps, ownedRoutes(), f);
 * const installed = installMissing(nl, want, vteps, ownedRoutes, neighHave, f);
 * ```
 */
import type { Netlink, Route } from "../../../ffi/libnl/mod.ts";
import type { Lease } from "../../lease/codec.ts";
import { diffRoutes, routeKey } from "../routes.ts";
import type { PeerFailures } from "../peer_errors.ts";
import type { Family } from "./device.ts";
import type { PeerEntries } from "./entries.ts";
import { deleteAll, installPeer } from "./program.ts";

/** Every entry wanted, with the peer lease it is for. */
export type Wanted = [Lease, PeerEntries][];

/** weft's VTEPs on this host: ifindex and the family it carries. */
export type Vteps = [number, Family][];

/**
 * Removes what no peer wants, stale first (routes, then FDB, then neighbours), so nothing points
 * at a removed entry; flanneld's exact routes are re-marked in place (`routes`: weft's routes as
 * routes.ts lists them). Returns how many routes it removed and the neighbour entries already
 * in place (`dev|ip|mac`), which {@link installMissing} then skips.
 */
export function sweepStale(
  nl: Netlink,
  want: Wanted,
  vteps: Vteps,
  routes: Route[],
  f: PeerFailures,
): { removed: number; neighHave: Set<string> } {
  const { del, adopt } = diffRoutes(want.map(([, e]) => e.route), routes);
  deleteAll(nl, del.map((route) => ({ route })), del.map((r) => r.dst), f);
  for (const r of adopt) f.run(r.dst, () => nl.routeReplace(r)); // re-mark in place
  const neighHave = new Set<string>();
  for (const [dev, family] of vteps) {
    const mine = want.filter(([, e]) => e.dev === dev);
    const fdbWant = new Set(
      mine.filter(([, e]) => e.fdb).map(([, e]) => `${e.fdb!.mac}|${e.fdb!.dst}`),
    );
    const fdbDel = nl.fdbList(dev)
      .filter((x) => x.self && x.dst && !fdbWant.has(`${x.mac}|${x.dst}`));
    deleteAll(
      nl,
      fdbDel.map((x) => ({ fdb: { dev, mac: x.mac, dst: x.dst! } })),
      fdbDel.map((x) => `fdb ${x.mac}`),
      f,
    );
    const neighWant = new Set(
      mine.filter(([, e]) => e.neigh).map(([, e]) => `${e.neigh!.ip}|${e.neigh!.mac}`),
    );
    const neighDel: string[] = [];
    for (const n of nl.neighList(dev, family)) {
      const k = `${n.ip}|${n.mac}`;
      if (family === 4 && !n.ip.includes(".")) continue;
      if (n.permanent && neighWant.has(k)) neighHave.add(`${dev}|${k}`);
      // Only permanent IPv6 entries are weft's: the kernel's own (router, link-local) stay.
      else if (family === 4 || n.permanent) neighDel.push(n.ip);
    }
    deleteAll(
      nl,
      neighDel.map((ip) => ({ neigh: { dev, ip } })),
      neighDel.map((ip) => `neigh ${ip}`),
      f,
    );
  }
  return { removed: del.length, neighHave };
}

/**
 * Installs what is missing, per peer in flannel's order. Replace is idempotent, but skipping
 * entries already present keeps a restart with 5000 peers cheap. Nothing wanted (every peer
 * gone): nothing to install, and no need to read the tables again (`routes` is not called).
 * Returns how many peers' entries it installed.
 */
export function installMissing(
  nl: Netlink,
  want: Wanted,
  vteps: Vteps,
  routes: () => Route[],
  neighHave: Set<string>,
  f: PeerFailures,
): number {
  const haveRoutes = new Set(want.length ? routes().map(routeKey) : []);
  const haveFdb = new Set<string>();
  for (const [dev] of want.length ? vteps : []) {
    for (const x of nl.fdbList(dev)) {
      if (x.self && x.dst) haveFdb.add(`${dev}|${x.mac}|${x.dst}`);
    }
  }
  let installed = 0;
  for (const [p, e] of want) {
    if (
      haveRoutes.has(routeKey(e.route)) &&
      (!e.fdb || haveFdb.has(`${e.dev}|${e.fdb.mac}|${e.fdb.dst}`)) &&
      (!e.neigh || neighHave.has(`${e.dev}|${e.neigh.ip}|${e.neigh.mac}`))
    ) continue;
    installed++;
    f.run(p.key, () => installPeer(nl, e));
  }
  return installed;
}
