/**
 * IPv4 and IPv6 routes (rtnl_route): add, replace, delete (listing: route_list.ts), and the kernel's route lookup
 * for a destination (`ip route get`). A route's family is its destination's (`2001:db8:1:5::/64`
 * is IPv6); its gateway and source must be of the same family. Internal to ffi/libnl: callers use the `Netlink` methods of the
 * same names (mod.ts), which pass their socket in.
 *
 * @example
 * ```ts
 * routeReplace(sock, { dst: "198.19.5.0/24", gw: "198.19.5.0", dev: 12, onlink: true });
 * routeGet(sock, "198.18.0.3"); // { dev: 2, src: "198.18.0.2", gw: null }
 * ```
 */
import { formatCidr, parseCidr, parseIp } from "../../src/base/ipv4.ts";
import { formatCidr6, parseCidr6, parseIp6 } from "../../src/base/ipv6.ts";
import { checkIp, ipAddr, readCidr, readIp, withAddr } from "./nladdr.ts";
import { PTR_OUT, takePtr } from "./mem.ts";
import { NLE_FAILURE, NLE_OBJ_NOTFOUND } from "./errors.ts";
import type { NlSocket } from "./socket.ts";
import {
  NLM_F_CREATE,
  NLM_F_EXCL,
  NLM_F_REPLACE,
  RT_SCOPE_NOWHERE,
  RT_TABLE_MAIN,
  RTN_BLACKHOLE,
  RTN_UNICAST,
  RTNH_F_ONLINK,
  RTPROT_BOOT,
} from "./constants.ts";
import { libs } from "./symbols.ts";
import { checkIndex } from "./validate.ts";

type Ptr = NonNullable<Deno.PointerValue>;

const ENETUNREACH = 101;

/**
 * An IPv4 or IPv6 route. On input, omitted fields take iproute2's defaults. The kernel stores an
 * IPv6 route added with metric 0 at metric 1024 (iproute2's default), and lists it so.
 */
export interface Route {
  /** Destination CIDR (network address), "0.0.0.0/0" (or "::/0") for the default route. */
  dst: string;
  /** Gateway address. */
  gw?: string;
  /** Output interface ifindex. */
  dev?: number;
  /** RTNH_F_ONLINK: use `gw` even though no local subnet covers it (flannel's vxlan routes). */
  onlink?: boolean;
  /** Routing table; default main (254). */
  table?: number;
  /** Route scope; default: universe with a gateway, link without (as iproute2). */
  scope?: number;
  /** Route protocol; default boot (3) when adding, any when deleting. */
  protocol?: number;
  /** Preferred source address. */
  src?: string;
  /** Route priority (metric); default 0. */
  metric?: number;
  /** Route type: RTN_UNICAST (default) or RTN_BLACKHOLE (no gateway or device). */
  type?: number;
}

/**
 * Which routes {@link routeList} returns: one type (default unicast; blackhole routes with
 * `type: RTN_BLACKHOLE`) in one table (default main; `table: 0` for all tables), optionally only
 * those whose first nexthop uses `dev`.
 */
export interface RouteFilter {
  table?: number;
  dev?: number;
  type?: number;
  /** 4 (default) or 6: which family's routes (`ip -6 route show`). */
  family?: 4 | 6;
  /**
   * Only routes to exactly this destination, as the kernel writes it ("198.19.5.0/24"); the
   * kernel cannot filter a dump by destination, so the whole table is read and parsed.
   */
  dst?: string;
}

/** Result of {@link routeGet}: how the kernel would send to a destination. */
export interface RouteLookup {
  dev: number;
  src: string | null;
  gw: string | null;
}

/** Renders a route like iproute2 does, for error messages. */
export function describeRoute(r: Route): string {
  const parts = r.type === RTN_BLACKHOLE ? ["blackhole", r.dst] : [r.dst];
  if (r.gw !== undefined) parts.push(`via ${r.gw}`);
  if (r.dev !== undefined) parts.push(`dev ${r.dev}`);
  if (r.onlink) parts.push("onlink");
  if (r.table !== undefined && r.table !== RT_TABLE_MAIN) parts.push(`table ${r.table}`);
  if (r.src !== undefined) parts.push(`src ${r.src}`);
  if (r.protocol !== undefined) parts.push(`proto ${r.protocol}`);
  if (r.scope !== undefined) parts.push(`scope ${r.scope}`);
  if (r.metric !== undefined) parts.push(`metric ${r.metric}`);
  return parts.join(" ");
}

function checkU(v: number | undefined, max: number, what: string): void {
  if (v !== undefined && (!Number.isInteger(v) || v < 0 || v > max)) {
    throw new RangeError(`route ${what} ${v} is out of range (0..${max})`);
  }
}

/**
 * Validates every field up front, so nothing is allocated for a request that cannot be sent;
 * returns the destination's network address and prefix (also batch.ts's).
 */
export function validateRoute(r: Route): { ip: string; prefix: number } {
  const v6 = r.dst.includes(":");
  // Throws on host bits, naming the network meant; a gateway or source of the other family too.
  const net = v6 ? parseCidr6(r.dst) : parseCidr(r.dst);
  const addr = v6 ? parseIp6 : parseIp;
  if (r.gw !== undefined) addr(r.gw);
  if (r.src !== undefined) addr(r.src);
  if (r.dev !== undefined) checkIndex(r.dev, "route dev");
  checkU(r.table, 0xffffffff, "table");
  checkU(r.scope, 255, "scope");
  checkU(r.protocol, 255, "protocol");
  checkU(r.metric, 0xffffffff, "metric");
  if (r.type !== undefined && r.type !== RTN_UNICAST && r.type !== RTN_BLACKHOLE) {
    throw new RangeError(`route type ${r.type} is not supported (unicast 1 or blackhole 6)`);
  }
  if (r.type === RTN_BLACKHOLE && (r.gw !== undefined || r.dev !== undefined)) {
    throw new RangeError(`route ${r.dst}: a blackhole route has no gateway or device`);
  }
  if (r.gw === undefined && r.dev === undefined && r.onlink) {
    throw new RangeError(`route ${r.dst}: onlink needs a gateway and a device`);
  }
  const text = v6 ? formatCidr6(net as { ip: bigint; prefix: number }) : formatCidr(
    net as { ip: number; prefix: number },
  );
  return { ip: text.slice(0, text.lastIndexOf("/")), prefix: net.prefix };
}

/** Builds a libnl route object; the caller owns it (rtnl_route_put). */
function build(sock: NlSocket, op: string, r: Route, forDelete: boolean): Ptr {
  const { ip, prefix } = validateRoute(r);
  const { rt } = libs();
  const route = rt.rtnl_route_alloc();
  if (!route) throw new Error("netlink: rtnl_route_alloc returned NULL");
  try {
    // Setting an address checks it against the route's family; a failure is a libnl code too.
    const set = (rc: number) => {
      if (rc < 0) throw sock.localError(op, r, describeRoute(r), rc);
    };
    set(withAddr(ipAddr(ip, prefix), (a) => rt.rtnl_route_set_dst(route, a)));
    rt.rtnl_route_set_table(route, r.table ?? RT_TABLE_MAIN);
    // libnl defaults to protocol "static"; iproute2 and flannel use "boot". For deletes, 0 and
    // scope "nowhere" are the kernel's wildcards, so a route matches whoever created it.
    rt.rtnl_route_set_protocol(route, r.protocol ?? (forDelete ? 0 : RTPROT_BOOT));
    if (r.scope !== undefined) rt.rtnl_route_set_scope(route, r.scope);
    else if (forDelete) rt.rtnl_route_set_scope(route, RT_SCOPE_NOWHERE);
    if (r.src !== undefined) {
      set(withAddr(ipAddr(r.src), (a) => rt.rtnl_route_set_pref_src(route, a)));
    }
    if (r.metric !== undefined) rt.rtnl_route_set_priority(route, r.metric);
    if (r.type !== undefined) set(rt.rtnl_route_set_type(route, r.type));
    if (r.gw !== undefined || r.dev !== undefined) {
      const nh = rt.rtnl_route_nh_alloc();
      if (!nh) throw new Error("netlink: rtnl_route_nh_alloc returned NULL");
      if (r.dev !== undefined) rt.rtnl_route_nh_set_ifindex(nh, r.dev);
      if (r.gw !== undefined) withAddr(ipAddr(r.gw), (a) => rt.rtnl_route_nh_set_gateway(nh, a));
      if (r.onlink) rt.rtnl_route_nh_set_flags(nh, RTNH_F_ONLINK);
      rt.rtnl_route_add_nexthop(route, nh); // the route owns it from here
    }
    return route;
  } catch (e) {
    rt.rtnl_route_put(route);
    throw e;
  }
}

function gatewayHint(r: Route, code: number, errno: number | null): string | undefined {
  if (r.gw === undefined) return undefined;
  if (errno === ENETUNREACH || (errno === null && code === NLE_FAILURE)) {
    const dev = r.dev !== undefined ? ` from dev ${r.dev}` : "";
    return r.onlink
      ? `gateway ${r.gw} is not reachable${dev}: is the device up?`
      : `gateway ${r.gw} is not reachable on-link${dev}: no address or route on that device ` +
        `covers it; add onlink (as flannel's vxlan routes do) or fix the gateway`;
  }
  return undefined;
}

function send(sock: NlSocket, op: string, r: Route, flags: number | null): void {
  const route = build(sock, op, r, flags === null);
  const { rt } = libs();
  try {
    sock.begin();
    const rc = flags === null
      ? rt.rtnl_route_delete(sock.ptr, route, 0)
      : rt.rtnl_route_add(sock.ptr, route, NLM_F_CREATE | flags);
    if (rc < 0) {
      const hint = gatewayHint(r, -rc, sock.kernelError?.errno ?? null);
      throw sock.error(op, r, describeRoute(r), rc, hint);
    }
  } finally {
    rt.rtnl_route_put(route);
  }
}

/** Adds the route or replaces the one with the same destination/table/metric. */
export function routeReplace(sock: NlSocket, r: Route): void {
  send(sock, "routeReplace", r, NLM_F_REPLACE);
}

/** Adds the route; fails with `exists` when it is already there. */
export function routeAdd(sock: NlSocket, r: Route): void {
  send(sock, "routeAdd", r, NLM_F_EXCL);
}

/** Deletes a matching route; fails with `notFound` when none matches. */
export function routeDel(sock: NlSocket, r: Route): void {
  send(sock, "routeDel", r, null);
}

function readRoute(o: Ptr): Route {
  const { rt } = libs();
  const r: Route = {
    dst: readCidr(rt.rtnl_route_get_dst(o)) ?? "0.0.0.0/0",
    table: rt.rtnl_route_get_table(o),
    scope: rt.rtnl_route_get_scope(o),
    protocol: rt.rtnl_route_get_protocol(o),
    onlink: false,
  };
  const src = readIp(rt.rtnl_route_get_pref_src(o));
  if (src !== null) r.src = src;
  const metric = rt.rtnl_route_get_priority(o);
  if (metric) r.metric = metric;
  // Multipath routes report their first nexthop; weft does not create multipath routes.
  if (rt.rtnl_route_get_nnexthops(o) > 0) {
    const nh = rt.rtnl_route_nexthop_n(o, 0);
    if (nh) {
      const dev = rt.rtnl_route_nh_get_ifindex(nh);
      if (dev > 0) r.dev = dev;
      const gw = readIp(rt.rtnl_route_nh_get_gateway(nh));
      if (gw !== null) r.gw = gw;
      r.onlink = (rt.rtnl_route_nh_get_flags(nh) & RTNH_F_ONLINK) !== 0;
    }
  }
  return r;
}

/** How the kernel would route to `dst` right now (`ip route get`). */
export function routeGet(sock: NlSocket, dst: string): RouteLookup {
  checkIp(dst); // IPv4 or IPv6
  const { rt } = libs();
  const lookup = rt.rtnl_route_lookup;
  if (!lookup) {
    throw new Error(
      `netlink routeGet ${dst}: this libnl lacks rtnl_route_lookup; ` +
        `upgrade libnl-route-3-200 (3.7 has it)`,
    );
  }
  const rc = withAddr(ipAddr(dst), (a) => {
    sock.begin();
    return lookup(sock.ptr, a, PTR_OUT);
  });
  const route = takePtr();
  if (rc < 0 || !route) {
    if (route) rt.rtnl_route_put(route);
    // rc >= 0 without a route should not happen; report it as "not found", not as success.
    const code = rc < 0 ? rc : -NLE_OBJ_NOTFOUND;
    throw sock.error("routeGet", dst, dst, code, "no route to this address from this host");
  }
  try {
    const r = readRoute(route);
    return { dev: r.dev ?? 0, src: r.src ?? null, gw: r.gw ?? null };
  } finally {
    rt.rtnl_route_put(route);
  }
}
