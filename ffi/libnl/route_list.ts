/**
 * Listing routes (`ip route show`): the route table as one raw dump (dump.ts), each message read
 * into a {@link Route} as libnl read it before. Internal to ffi/libnl: callers use
 * `Netlink.routeList` (mod.ts).
 *
 * @example
 * ```ts
 * routeList(sock, { table: RT_TABLE_MAIN, family: 6 }); // [{ dst: "2001:db8:5::/64", gw, dev, … }]
 * ```
 */
import { AF_INET } from "../libc/udp.ts";
import { addrText, AF_INET6 } from "./nladdr.ts";
import {
  attrTable,
  bytesOrEach,
  type DumpMemo,
  dumpTable,
  forEachMessage,
  netOrder,
  RTM_GETROUTE,
  scanMessages,
  type TableRead,
  type Words,
  wordsOf,
} from "./dump.ts";
import { RT_TABLE_MAIN, RTN_UNICAST, RTNH_F_ONLINK } from "./constants.ts";
import type { NlSocket } from "./socket.ts";
import type { Route, RouteFilter } from "./route.ts";

const RTM_NEWROUTE = 24;
const RTA_DST = 1;
const RTA_OIF = 4;
const RTA_GATEWAY = 5;
const RTA_PRIORITY = 6;
const RTA_PREFSRC = 7;
const RTA_MULTIPATH = 9;
const RTA_TABLE = 15;
/** {@link attrTable}'s table, reused per message (RTA_TABLE is the highest type read). */
const attrs = new Int32Array(2 * (RTA_TABLE + 1));

/**
 * One route message of a raw dump (dump.ts) as a {@link Route}, read as libnl read it before:
 * table from RTA_TABLE (else the header's), the first nexthop of a multipath route, onlink from
 * the nexthop's flags; null when the {@link RouteFilter} rules it out.
 */
function parseRoute(v: DataView, off: number, len: number, f: RouteFilter): Route | null {
  const h = off + 16; // struct rtmsg
  const type = f.type ?? RTN_UNICAST;
  if (v.getUint8(h + 7) !== type) return null;
  const family = v.getUint8(h);
  const prefix = v.getUint8(h + 1);
  // Per attribute type t: payload offset a[2t] (-1: absent), length a[2t + 1].
  const a = attrTable(v, off, len, attrs);
  const table = a[2 * RTA_TABLE] >= 0 && a[2 * RTA_TABLE + 1] >= 4
    ? v.getUint32(a[2 * RTA_TABLE], true)
    : v.getUint8(h + 4);
  const dst = a[2 * RTA_DST] >= 0 ? addrText(v, a[2 * RTA_DST], a[2 * RTA_DST + 1]) : null;
  let gw = a[2 * RTA_GATEWAY] >= 0
    ? addrText(v, a[2 * RTA_GATEWAY], a[2 * RTA_GATEWAY + 1]) ?? undefined
    : undefined;
  const src = a[2 * RTA_PREFSRC] >= 0
    ? addrText(v, a[2 * RTA_PREFSRC], a[2 * RTA_PREFSRC + 1]) ?? undefined
    : undefined;
  let dev = a[2 * RTA_OIF] >= 0 && a[2 * RTA_OIF + 1] >= 4 ? v.getInt32(a[2 * RTA_OIF], true) : 0;
  const metric = a[2 * RTA_PRIORITY] >= 0 && a[2 * RTA_PRIORITY + 1] >= 4
    ? v.getUint32(a[2 * RTA_PRIORITY], true)
    : 0;
  let nhFlags = v.getUint32(h + 8, true) & 0xff;
  const mp = a[2 * RTA_MULTIPATH] >= 0 && a[2 * RTA_MULTIPATH + 1] >= 8 ? a[2 * RTA_MULTIPATH] : -1;
  const want = f.table ?? RT_TABLE_MAIN;
  if (want !== 0 && table !== want) return null;
  const text = `${dst ?? (family === AF_INET6 ? "::" : "0.0.0.0")}/${prefix}`;
  if (f.dst !== undefined && text !== f.dst) return null;
  if (mp >= 0) {
    // struct rtnexthop { u16 len; u8 flags; u8 hops; i32 ifindex; } then its attributes.
    const nlen = v.getUint16(mp, true);
    nhFlags = v.getUint8(mp + 2);
    dev = v.getInt32(mp + 4, true);
    gw = undefined;
    for (let at = mp + 8; at + 4 <= mp + nlen;) {
      const alen = v.getUint16(at, true);
      if (alen < 4) break;
      if ((v.getUint16(at + 2, true) & 0x3fff) === RTA_GATEWAY) {
        gw = addrText(v, at + 4, alen - 4) ?? undefined;
      }
      at += (alen + 3) & ~3;
    }
  }
  if (f.dev !== undefined && dev !== f.dev) return null;
  const r: Route = {
    dst: text,
    table,
    scope: v.getUint8(h + 6),
    protocol: v.getUint8(h + 5),
    onlink: (nhFlags & RTNH_F_ONLINK) !== 0,
  };
  if (src !== undefined) r.src = src;
  if (metric) r.metric = metric;
  if (dev > 0) r.dev = dev;
  if (gw !== undefined) r.gw = gw;
  if (type !== RTN_UNICAST) r.type = type;
  return r;
}

/** The routes of a raw dump that match the {@link RouteFilter}. */
function parseRoutes(b: Uint8Array, f: RouteFilter): Route[] {
  const out: Route[] = [];
  forEachMessage(b, (v, off, len) => {
    if (v.getUint16(off + 4, true) !== RTM_NEWROUTE) return;
    const r = parseRoute(v, off, len, f);
    if (r) out.push(r);
  });
  return out;
}

function dumpRoutes(sock: NlSocket, f: RouteFilter): Uint8Array {
  return dumpTable(sock, "routeList", f, "", {
    type: RTM_GETROUTE,
    family: f.family === 6 ? AF_INET6 : AF_INET,
  });
}

/** IPv4 (or, with `family: 6`, IPv6) routes that match the {@link RouteFilter}. */
export function routeList(sock: NlSocket, f: RouteFilter = {}): Route[] {
  return parseRoutes(dumpRoutes(sock, f), f);
}

/**
 * {@link routeList} as a {@link TableRead} of `memo`: the very read of its last call when the
 * table did not change; its entries parsed only when asked ({@link scanRoutes} parses fewer).
 */
export function routeRead(sock: NlSocket, f: RouteFilter, memo: DumpMemo<Route>): TableRead<Route> {
  return routeBytesRead(dumpRoutes(sock, f), f, memo);
}

/** {@link routeRead} of a dump already made (`bytes`: dump.ts's canonical messages). */
export function routeBytesRead(
  bytes: Uint8Array,
  f: RouteFilter,
  memo: DumpMemo<Route>,
): TableRead<Route> {
  return memo.take(bytes, (b) => parseRoutes(b, f));
}

/**
 * A plain IPv4 route as numbers (one object, reused per route: read it in the callback only).
 * Plain: unicast, one nexthop with a gateway and a device, no metric, no preferred source.
 */
export interface PlainRoute {
  /** Destination and gateway as 32-bit numbers (198.19.0.0 is 0xc6130000). */
  dst: number;
  prefix: number;
  gw: number;
  dev: number;
  onlink: boolean;
  protocol: number;
}

const plainRoute: PlainRoute = { dst: 0, prefix: 0, gw: 0, dev: 0, onlink: false, protocol: 0 };

/**
 * Each route of `read` that `f` lets through, with as little parsing as it takes: a plain IPv4
 * one ({@link PlainRoute}) is offered to `plain` as numbers first; the routes `plain` does not
 * take (it returns false), and every other route, are parsed and handed to `other`. The same
 * routes as `read.entries()` (a read made of a list: all to `other`). A diff of 5000 routes
 * that it knows thus makes no object or string per route.
 */
export function scanRoutes(
  read: TableRead<Route>,
  f: RouteFilter,
  plain: (r: PlainRoute) => boolean,
  other: (r: Route) => void,
): void {
  const b = bytesOrEach(read, other);
  if (!b) return;
  // Filters plainRoute does not check (by destination, by device): parse every route.
  const quick = f.dst === undefined && f.dev === undefined &&
    (f.type ?? RTN_UNICAST) === RTN_UNICAST;
  const table = f.table ?? RT_TABLE_MAIN;
  scanMessages(
    b,
    RTM_NEWROUTE,
    quick ? wordsOf(b) : null,
    (w, off, len) => asPlain(w, off, len, table) && plain(plainRoute),
    (v, off, len) => {
      const r = parseRoute(v, off, len, f);
      if (r) other(r);
    },
  );
}

/** Whether the route at `off` is a plain IPv4 route of `table`; if so, fills {@link plainRoute}. */
function asPlain(w: Words, off: number, len: number, table: number): boolean {
  const { u8, u16, u32 } = w;
  const h = off + 16;
  if (u8[h] !== AF_INET || u8[h + 7] !== RTN_UNICAST) return false;
  let t = u8[h + 4];
  let dst = -1;
  let gw = -1;
  let dev = 0;
  // As attrTable reads them: a repeated attribute counts as its last.
  for (let at = h + 12; at + 4 <= off + len;) {
    const alen = u16[at >> 1];
    if (alen < 4 || at + alen > off + len) break;
    const type = u16[(at + 2) >> 1] & 0x3fff;
    const p = (at + 4) >> 2;
    if (type === RTA_DST) dst = alen === 8 ? netOrder(u32[p]) : -2;
    else if (type === RTA_GATEWAY) gw = alen === 8 ? netOrder(u32[p]) : -2;
    else if (type === RTA_OIF) dev = alen >= 8 ? u32[p] | 0 : 0;
    else if (type === RTA_TABLE) t = alen >= 8 ? u32[p] : u8[h + 4];
    else if (type === RTA_PRIORITY && (alen < 8 || u32[p] !== 0)) return false;
    else if (type === RTA_PREFSRC || type === RTA_MULTIPATH) return false;
    at += (alen + 3) & ~3;
  }
  if ((table !== 0 && t !== table) || dst < 0 || gw < 0 || dev <= 0) return false;
  plainRoute.dst = dst;
  plainRoute.prefix = u8[h + 1];
  plainRoute.gw = gw;
  plainRoute.dev = dev;
  plainRoute.onlink = (u8[h + 8] & RTNH_F_ONLINK) !== 0;
  plainRoute.protocol = u8[h + 5];
  return true;
}
