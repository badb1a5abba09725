/**
 * The diff between the routes leases justify and weft's routes in the kernel (routes.ts says
 * which are weft's), compared by {@link routeKey} without building keys: with 5000 peers it runs
 * on every full reconcile of vxlan and host-gw.
 *
 * @example
 * ```ts
 * const { del, add, adopt } = diffRoutes(want, ownedAmong(mainRoutes(nl, scope), scope, devs));
 * ```
 */
import type { Route } from "../../ffi/libnl/mod.ts";
import { RTPROT_WEFT } from "./routes.ts";

/** Identity of a route for diffing (table main); the protocol is not part of it. */
export function routeKey(r: Route): string {
  return `${r.dst}|${r.gw ?? ""}|${r.dev ?? ""}|${r.onlink ? 1 : 0}`;
}

/** Whether two routes have the same {@link routeKey}, without building either key. */
export function sameRoute(a: Route, b: Route): boolean {
  return a.dst === b.dst && (a.gw ?? "") === (b.gw ?? "") && a.dev === b.dev &&
    !a.onlink === !b.onlink;
}

/**
 * Indexes of `items` by a string of each (`keyOf`), duplicates chained: `first.get(k)`, then
 * `next[i]` until -1 (`keyOf` null: not indexed). For diffs against a kernel dump: a lookup by a
 * field the dump already has (a destination, a MAC, an address) instead of a key string built
 * per entry.
 */
export class Index<T> {
  readonly first = new Map<string, number>();
  readonly next: Int32Array;
  constructor(items: readonly T[], keyOf: (t: T, i: number) => string | null | undefined) {
    this.next = new Int32Array(items.length).fill(-1);
    for (let i = items.length - 1; i >= 0; i--) {
      const k = keyOf(items[i], i);
      if (k === null || k === undefined) continue;
      const f = this.first.get(k);
      if (f !== undefined) this.next[i] = f;
      this.first.set(k, i);
    }
  }
}

/**
 * What to delete, install and re-mark so the kernel holds exactly `want` of the owned routes
 * `have` (compared by {@link routeKey}): `adopt` are wanted routes present without weft's mark
 * (flanneld's), to be replaced in place with `want`'s marked route. `add` and `adopt` hold
 * `want`'s own route objects. Builds no key strings: with 5000 peers this runs on every periodic
 * reconciliation.
 */
export function diffRoutes(
  want: Route[],
  have: Route[],
): { del: Route[]; add: Route[]; adopt: Route[] } {
  const ix = new Index(want, (r) => r.dst);
  // Per wanted route: the protocol of the (last) route present with its key, or -1.
  const present = new Int32Array(want.length).fill(-1);
  const del: Route[] = [];
  for (const h of have) {
    let matched = false;
    for (let i = ix.first.get(h.dst) ?? -1; i >= 0; i = ix.next[i]) {
      if (!sameRoute(want[i], h)) continue;
      matched = true;
      present[i] = h.protocol ?? 0;
    }
    if (!matched) del.push(h);
  }
  const add: Route[] = [];
  const adopt: Route[] = [];
  want.forEach((r, i) => {
    if (present[i] < 0) add.push(r);
    else if (present[i] !== RTPROT_WEFT) adopt.push(r);
  });
  return { del, add, adopt };
}
