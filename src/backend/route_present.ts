/**
 * The first half of a full route diff with thousands of peers, done on the dump's bytes: which
 * wanted routes the kernel already holds exactly as weft makes them (marked, plain IPv4), found
 * by their numbers without parsing those routes; every other route of the tables is parsed and
 * left to the diff (routes.ts's ownership, route_diff.ts's {@link diffRoutes}), which then sees a
 * few routes where it saw thousands. The wanted routes found present are those diffRoutes would
 * neither add, re-mark nor delete.
 *
 * @example
 * ```ts
 * const { present, rest } = splitRoutes(reads, filters, wantRoutes);
 * diffRoutes(wantRoutes.filter((_, i) => !present[i]), ownedAmong([rest], scope, devices));
 * ```
 */
import {
  type PlainRoute,
  type Route,
  type RouteFilter,
  RT_TABLE_MAIN,
  RTN_UNICAST,
  scanRoutes,
  type TableRead,
} from "../../ffi/libnl/mod.ts";
import { RTPROT_WEFT } from "./routes.ts";
import { quickCidr, quickIp } from "./route_text.ts";
import { NumIndex } from "./num_index.ts";

/** A wanted route's numbers; null: no plain route can match it. */
interface Key {
  dst: number;
  prefix: number;
  gw: number;
}

/** The index of each full diff, rebuilt in place (num_index.ts says why). */
const index = new NumIndex();

/** Per wanted route object (wants are cached per lease): made once, not per full diff. */
const keyCache = new WeakMap<Route, Key | null>();

/**
 * Per wanted route, whether the tables (`reads`, each read with `filters[i]`) hold it exactly:
 * marked with weft's protocol, same destination, gateway, device and onlink flag, table main,
 * unicast, metric 0, no preferred source. `rest`: every route of the tables not found so.
 */
export function splitRoutes(
  reads: readonly TableRead<Route>[],
  filters: readonly RouteFilter[],
  want: readonly Route[],
): { present: Uint8Array; rest: Route[] } {
  const present = new Uint8Array(want.length);
  const prefix = new Uint8Array(want.length);
  const gw = new Float64Array(want.length);
  const dst = new Float64Array(want.length);
  for (let i = 0; i < want.length; i++) {
    const k = keyOf(want[i]);
    dst[i] = k ? k.dst : -1;
    if (k) prefix[i] = k.prefix, gw[i] = k.gw;
  }
  const ix = index.build(dst);
  const rest: Route[] = [];
  const plain = (r: PlainRoute) => {
    if (r.protocol !== RTPROT_WEFT) return false;
    let found = false;
    for (let i = ix.first(r.dst); i >= 0; i = ix.next(i)) {
      if (prefix[i] !== r.prefix || gw[i] !== r.gw || want[i].dev !== r.dev) continue;
      if (!want[i].onlink !== !r.onlink) continue;
      present[i] = 1;
      found = true;
    }
    return found;
  };
  reads.forEach((read, i) => scanRoutes(read, filters[i], plain, (r) => rest.push(r)));
  return { present, rest };
}

/** `w`'s numbers (cached), or null when no plain route can match it. */
function keyOf(w: Route): Key | null {
  let k = keyCache.get(w);
  if (k !== undefined) return k;
  k = null;
  if (
    w.protocol === RTPROT_WEFT && (w.table ?? RT_TABLE_MAIN) === RT_TABLE_MAIN && !w.metric &&
    w.src === undefined && (w.type ?? RTN_UNICAST) === RTN_UNICAST && w.gw !== undefined &&
    w.dev !== undefined
  ) {
    // Spelled as the kernel spells them (as weft's own wanted routes are), or never matched here:
    // an IPv6 or oddly written gateway is left to the diff of parsed routes.
    const dst = quickCidr(w.dst);
    const gw = quickIp(w.gw, w.gw.length);
    if (dst && gw >= 0) k = { dst: dst.ip, prefix: dst.prefix, gw };
  }
  keyCache.set(w, k);
  return k;
}
