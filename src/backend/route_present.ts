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
import { ipOf, quickCidr } from "./route_text.ts";

/** Wanted routes by destination number, duplicates chained (as route_diff.ts's Index). */
interface Keys {
  first: Map<number, number>;
  next: Int32Array;
  prefix: Uint8Array;
  gw: Float64Array;
}

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
  const k = keys(want);
  const rest: Route[] = [];
  const plain = (r: PlainRoute) => {
    if (r.protocol !== RTPROT_WEFT) return false;
    let found = false;
    for (let i = k.first.get(r.dst) ?? -1; i >= 0; i = k.next[i]) {
      const w = want[i];
      if (k.prefix[i] !== r.prefix || k.gw[i] !== r.gw || w.dev !== r.dev) continue;
      if (!w.onlink !== !r.onlink) continue;
      present[i] = 1;
      found = true;
    }
    return found;
  };
  reads.forEach((read, i) => scanRoutes(read, filters[i], plain, (r) => rest.push(r)));
  return { present, rest };
}

/** The wanted routes a plain route can match, keyed by their numbers (others have no key). */
function keys(want: readonly Route[]): Keys {
  const k: Keys = {
    first: new Map(),
    next: new Int32Array(want.length).fill(-1),
    prefix: new Uint8Array(want.length),
    gw: new Float64Array(want.length),
  };
  for (let i = want.length - 1; i >= 0; i--) {
    const w = want[i];
    if (
      w.protocol !== RTPROT_WEFT || (w.table ?? RT_TABLE_MAIN) !== RT_TABLE_MAIN || w.metric ||
      w.src !== undefined || (w.type ?? RTN_UNICAST) !== RTN_UNICAST || w.gw === undefined ||
      w.dev === undefined
    ) continue;
    const dst = quickCidr(w.dst);
    const gw = dst && ipOf4(w.gw);
    if (!dst || gw === null) continue;
    k.prefix[i] = dst.prefix;
    k.gw[i] = gw;
    const f = k.first.get(dst.ip);
    if (f !== undefined) k.next[i] = f;
    k.first.set(dst.ip, i);
  }
  return k;
}

/** `text` as an IPv4 number; null when it is none (an IPv6 gateway). */
function ipOf4(text: string): number | null {
  if (text.includes(":")) return null;
  try {
    return ipOf(text);
  } catch {
    return null;
  }
}
