/**
 * Writes peers' entries ({@link PeerEntries}) into the kernel: one peer's in flannel's order
 * (neighbour, FDB, route), and removals batched in the reverse order, so no entry ever points at
 * one already removed. Failures are recorded per peer in a {@link PeerFailures}, never thrown, so
 * one bad peer never blocks the others.
 *
 * @example
 * ```ts
 * const f = new PeerFailures();
 * f.run(lease.key, () => installPeer(nl, entries));
 * removePeers(nl, [[gone.key, goneEntries]], f);
 * f.throwIfAny("programming vxlan entries");
 * ```
 */
import { type DeleteRequest, isNotFound, type Netlink } from "../../../ffi/libnl/mod.ts";
import { deletePeerRoutes } from "../routes.ts";
import type { PeerFailures } from "../peer_errors.ts";
import type { PeerEntries } from "./entries.ts";

/** Installs (replaces) one peer's entries, in flannel's order: neighbour, FDB, route. */
export function installPeer(nl: Netlink, e: PeerEntries): void {
  const dev = e.dev;
  if (e.neigh) nl.neighSet({ dev, ...e.neigh, permanent: true });
  if (e.fdb) nl.fdbSet({ dev, ...e.fdb });
  nl.routeReplace(e.route);
}

/**
 * Removes peers' entries, `[lease key, entries]`, in three batches: routes (ours, else
 * flanneld's exact one; routes.ts), then FDB, then neighbour entries, so nothing points at a
 * removed entry. An entry already gone is fine; a peer whose route (FDB entry) cannot be removed
 * keeps its FDB (and neighbour) entry, and the failure is recorded against its key.
 */
export function removePeers(nl: Netlink, items: [string, PeerEntries][], f: PeerFailures): void {
  const failed = (i: number, e: Error | null) => {
    if (e === null || isNotFound(e)) return false;
    f.add(items[i][0], e);
    return true;
  };
  const routeErrs = deletePeerRoutes(nl, items.map(([, e]) => e.route));
  const next = items.flatMap((_, i) => failed(i, routeErrs[i]) ? [] : [i]);
  const fdb = next.filter((i) => items[i][1].fdb);
  const fdbErrs = nl.deleteMany(
    fdb.map((i) => ({ fdb: { dev: items[i][1].dev, ...items[i][1].fdb! } })),
  );
  const bad = new Set(fdb.filter((i, j) => failed(i, fdbErrs[j])));
  const neigh = next.filter((i) => items[i][1].neigh && !bad.has(i));
  const neighErrs = nl.deleteMany(
    neigh.map((i) => ({ neigh: { dev: items[i][1].dev, ip: items[i][1].neigh!.ip } })),
  );
  neigh.forEach((i, j) => failed(i, neighErrs[j]));
}

/**
 * Deletes stale entries in one batch; each failure is recorded under its `names` entry (one
 * already gone is not a failure).
 */
export function deleteAll(
  nl: Netlink,
  reqs: DeleteRequest[],
  names: string[],
  f: PeerFailures,
): void {
  nl.deleteMany(reqs).forEach((e, i) => e && !isNotFound(e) && f.add(names[i], e));
}
