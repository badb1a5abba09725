/**
 * `routeRead`, `fdbRead` and `neighRead` for a test's in-memory Netlink that only lists: each
 * call is a new read of a copy of what it lists, with no change known, so every reconcile
 * through it diffs in full (as before any round settled).
 *
 * @example
 * ```ts
 * const nl = withReads(new FakeNl());
 * new VxlanBackend(nl as unknown as Netlink);
 * ```
 */
import type { DumpMemo, Fdb, Neigh, Route, TableRead } from "../../ffi/libnl/mod.ts";

/** What a fake lists. */
export interface Lists {
  routeList(f?: { table?: number; type?: number; family?: number }): Route[];
  fdbList(dev: number): Fdb[];
  neighList(dev?: number, family?: 4 | 6): Neigh[];
}

export function withReads<T extends Lists>(nl: T): T & {
  routeRead(f: { family?: number }, memo: DumpMemo<Route>): TableRead<Route>;
  fdbRead(dev: number, memo: DumpMemo<Fdb>): TableRead<Fdb>;
  neighRead(dev: number, family: 4 | 6, memo: DumpMemo<Neigh>): TableRead<Neigh>;
} {
  const copy = <X>(xs: X[]) => xs.map((x) => ({ ...x }));
  return Object.assign(nl, {
    routeRead: (f: { family?: number }, memo: DumpMemo<Route>) =>
      memo.keep(copy(nl.routeList(f)), null),
    fdbRead: (dev: number, memo: DumpMemo<Fdb>) => memo.keep(copy(nl.fdbList(dev)), null),
    neighRead: (dev: number, family: 4 | 6, memo: DumpMemo<Neigh>) =>
      memo.keep(copy(nl.neighList(dev, family)), null),
  });
}
