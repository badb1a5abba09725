/**
 * Which routes are weft's (the diff against what leases justify is route_diff.ts's): the
 * one rule the kernel backends' reconciliation (vxlan, host-gw) and `weft cleanup` apply before
 * they delete a route. A route weft cannot prove it made is never deleted or changed, whatever
 * its protocol: not the default route, not an operator's static route inside the cluster network,
 * not a routing daemon's.
 *
 * **Marked.** Every route weft creates carries the route protocol {@link RTPROT_WEFT} (87, shown
 * as `proto 87` by iproute2; name it with `87 weft` in /etc/iproute2/rt_protos.d/ if you like).
 * 87 is unassigned in the kernel's list and in iproute2's rt_protos, and not used by the daemons
 * that program routes next to CNIs: bird 12, zebra 11 and FRR 186–198, keepalived 18, dhcp 16,
 * ra 9, babel 42, openr 99, Calico's Felix 80 (its vxlan routes), static 4, kernel 2, boot 3.
 * Flannel nodes do not look at another host's route protocol, so interop is unchanged.
 *
 * **Adopted.** flanneld (and weft before the mark) wrote protocol `boot`, as does `ip route add`.
 * A boot route is weft's only when it is exactly what flannel makes for a lease:
 * - vxlan: `<subnet> via <subnet's first address> dev flannel.<VNI> onlink`;
 * - host-gw (and vxlan's DirectRouting): `<subnet> via <peer IP> dev <external iface>`, no onlink,
 *   the peer IP outside the Network (a public IP is an underlay address);
 * where `<subnet>` is a SubnetLen-sized subnet of the Network, in the main table, metric 0, no
 * source address. So `0.0.0.0/0 via gw`, a /16 or /28 static route via the gateway, a route with a
 * metric or a `src` are never weft's. The one look-alike left is an operator's boot route of
 * exactly that shape via another host; a Network that contains the host's own underlay address
 * (where such routes live) is refused at start ({@link checkUnderlayOverlap}; an IPv6Network
 * containing the host's IPv6 underlay address likewise, {@link checkUnderlayOverlap6}). Adopted routes
 * that leases still justify are re-marked in place (replace, no gap), so later runs need no
 * guessing.
 *
 * Common to both: destination inside the Network and not overlapping the node's own subnet (that
 * is the bridge's), main table, unicast, metric 0, no source address.
 *
 * **IPv6** routes follow the same rules against IPv6Network, IPv6SubnetLen and the own IPv6
 * subnet, with the kernel's default IPv6 metric (1024, what metric 0 becomes) as "metric 0".
 *
 * @example
 * ```ts
 * const mine = nl.routeList({}).filter((r) => isOwnedRoute(r, scope, { gateway: true }));
 * const { del, add, adopt } = diffRoutes(want, mine); // route_diff.ts
 * ```
 */
import {
  type DumpMemo,
  isNotFound,
  type Netlink,
  type Route,
  RT_TABLE_MAIN,
  RTN_UNICAST,
  RTPROT_BOOT,
  type TableRead,
} from "../../ffi/libnl/mod.ts";
import type { NetworkConfig } from "../config/network.ts";
import { ConfigError } from "../base/errors.ts";
import { contains, formatCidr, type Ipv4Net, parseCidr, parseIp } from "../base/ipv4.ts";
import { ipOf, quickCidr } from "./route_text.ts";
import {
  contains6,
  containsNet6,
  formatCidr6,
  overlaps6,
  parseCidr6,
  parseIp6,
} from "../base/ipv6.ts";
import type { RouteScope } from "./backend.ts";
import type { Ipv6Net } from "../base/ipv6.ts";

/**
 * Which devices a route may use to be weft's: `vxlan` (`vxlan6`): the IPv4 (IPv6) VTEP's
 * ifindex; `gateway`: routes via a gateway on the external interface are made (host-gw,
 * DirectRouting).
 */
export interface VtepDevices {
  vxlan?: number;
  vxlan6?: number;
  gateway?: boolean;
}

/** The route protocol weft marks its routes with (see the module doc for why 87). */
export const RTPROT_WEFT = 87;

/** `r` as weft installs it: marked with {@link RTPROT_WEFT}. */
export function marked(r: Route): Route {
  return { ...r, protocol: RTPROT_WEFT };
}

function overlaps(a: Ipv4Net, b: Ipv4Net): boolean {
  return a.prefix <= b.prefix ? contains(a, b.ip) : contains(b, a.ip);
}

/**
 * Whether `r` is weft's (module doc). `devices.vxlan`: weft's VTEP ifindex, whose routes are
 * flannel's vxlan shape; `devices.gateway`: this backend makes routes via a gateway on the
 * external interface (host-gw, DirectRouting), so flanneld's such routes are adopted. Marked
 * routes on the external interface are weft's for any backend (a stale host-gw route after a
 * switch to vxlan). An unset protocol (a route built by hand, not read) counts as boot.
 */
export function isOwnedRoute(
  r: Route,
  s: RouteScope,
  devices: VtepDevices,
): boolean {
  if ((r.table ?? RT_TABLE_MAIN) !== RT_TABLE_MAIN) return false;
  const v6 = r.dst.includes(":");
  const metric = r.metric && !(v6 && r.metric === IPV6_DEFAULT_METRIC);
  if ((r.type ?? RTN_UNICAST) !== RTN_UNICAST || metric || r.src !== undefined) return false;
  const mark = r.protocol === RTPROT_WEFT;
  if (!mark && r.protocol !== undefined && r.protocol !== RTPROT_BOOT) return false;
  if (v6) return isOwnedRoute6(r, s, devices, mark);
  // The empty network: an IPv6-only scope (a Network of 0.0.0.0/0 is refused by the config).
  if (s.network.prefix === 0) return false;
  let dst: Ipv4Net;
  try {
    dst = quickCidr(r.dst) ?? parseCidr(r.dst);
  } catch {
    return false;
  }
  if (dst.prefix < s.network.prefix || !contains(s.network, dst.ip)) return false;
  if (s.own && overlaps(dst, s.own)) return false;
  if (r.gw === undefined || r.dev === undefined) return false;
  const sized = s.subnetLen !== null && dst.prefix === s.subnetLen;
  if (devices.vxlan !== undefined && r.dev === devices.vxlan) {
    return r.onlink === true && (mark || (sized && ipOf(r.gw) === dst.ip));
  }
  if (s.ext === null || r.dev !== s.ext || r.onlink) return false;
  if (mark) return true;
  return devices.gateway === true && sized && !contains(s.network, ipOf(r.gw));
}

/** The metric the kernel gives an IPv6 route added with metric 0 (IP6_RT_PRIO_USER). */
export const IPV6_DEFAULT_METRIC = 1024;

/** {@link isOwnedRoute}'s IPv6 half, past the checks common to both families. */
function isOwnedRoute6(
  r: Route,
  s: RouteScope,
  devices: VtepDevices,
  mark: boolean,
): boolean {
  const net = s.network6;
  if (!net) return false;
  let dst;
  try {
    dst = parseCidr6(r.dst);
  } catch {
    return false;
  }
  if (!containsNet6(net, dst)) return false;
  if (s.own6 && overlaps6(dst, s.own6)) return false;
  if (r.gw === undefined || r.dev === undefined) return false;
  let gw: bigint;
  try {
    gw = parseIp6(r.gw);
  } catch {
    return false;
  }
  const sized = s.subnetLen6 != null && dst.prefix === s.subnetLen6;
  if (devices.vxlan6 !== undefined && r.dev === devices.vxlan6) {
    return r.onlink === true && (mark || (sized && gw === dst.ip));
  }
  if (s.ext === null || r.dev !== s.ext || r.onlink) return false;
  if (mark) return true;
  return devices.gateway === true && sized && !contains6(net, gw);
}

/**
 * The scope a backend judges its routes in: its config, its own lease (both halves) and the
 * external device.
 */
export function routeScope(
  cfg: NetworkConfig,
  own: Ipv4Net | null,
  ext: number,
  own6: Ipv6Net | null = null,
): RouteScope {
  const s: RouteScope = { network: cfg.network, own, ext, subnetLen: cfg.subnetLen };
  if (cfg.ipv6) {
    Object.assign(s, { network6: cfg.ipv6.network, own6, subnetLen6: cfg.ipv6.subnetLen });
  }
  return s;
}

/** One {@link DumpMemo} per family, for {@link mainRoutes}. */
export interface RouteMemos {
  v4: DumpMemo<Route>;
  v6: DumpMemo<Route>;
}

/**
 * The main-table routes weft's routes in scope `s` are among: IPv4 (unless IPv6-only), IPv6 when
 * the scope has an IPv6 network.
 */
export function mainRoutes(nl: Pick<Netlink, "routeList">, s: RouteScope): Route[][] {
  return routeFamilies(s).map((family) => nl.routeList({ table: RT_TABLE_MAIN, family }));
}

/**
 * {@link mainRoutes}' tables read through `memos`: a table that did not change since their last
 * read is the same read as then (steady.ts's test). `filter` is the filter of each, by index.
 */
export function mainRouteReads(
  nl: Pick<Netlink, "routeRead">,
  s: RouteScope,
  memos: RouteMemos,
): { reads: TableRead<Route>[]; filters: { table: number; family: 4 | 6 }[] } {
  const filters = routeFamilies(s).map((family) => ({ table: RT_TABLE_MAIN, family }));
  const reads = filters.map((f) => nl.routeRead(f, memos[f.family === 4 ? "v4" : "v6"]));
  return { reads, filters };
}

/** The families {@link mainRoutes} reads, in its order. */
function routeFamilies(s: RouteScope): (4 | 6)[] {
  const out: (4 | 6)[] = [];
  if (!(s.network.prefix === 0 && s.network6)) out.push(4);
  if (s.network6) out.push(6);
  return out;
}

/**
 * What changed in {@link mainRoutes}' tables since `from` (an earlier read through the same
 * memos, steady.ts): every route gone and every route new; null when the memos cannot tell.
 */
export function mainRoutesChange(
  s: RouteScope,
  memos: RouteMemos,
  from: readonly TableRead<Route>[],
): { added: Route[]; removed: Route[] } | null {
  const added: Route[] = [];
  const removed: Route[] = [];
  const fams = routeFamilies(s);
  for (const [i, family] of fams.entries()) {
    const c = memos[family === 4 ? "v4" : "v6"]?.changeSince(from[i]);
    if (!c) return null;
    added.push(...c.added);
    removed.push(...c.removed);
  }
  return { added, removed };
}

/** Of `tables` ({@link mainRoutes}), weft's routes ({@link isOwnedRoute}). */
export function ownedAmong(
  tables: (readonly Route[])[],
  s: RouteScope,
  devices: VtepDevices,
): Route[] {
  const out: Route[] = [];
  for (const t of tables) for (const r of t) if (isOwnedRoute(r, s, devices)) out.push(r);
  return out;
}

/** weft's routes in the main table ({@link isOwnedRoute}): what a backend's reconcile diffs. */
export function listOwnedRoutes(
  nl: Pick<Netlink, "routeList">,
  s: RouteScope,
  devices: VtepDevices,
): Route[] {
  return ownedAmong(mainRoutes(nl, s), s, devices);
}

/**
 * Deletes peers' routes, many at a time (`Netlink.deleteMany`): each as weft made it (marked),
 * else flanneld's exact route (protocol boot); another protocol's route is left alone. Per route:
 * null when it is gone (or was never there), else why it could not be deleted.
 */
export function deletePeerRoutes(
  nl: Pick<Netlink, "deleteMany">,
  routes: Route[],
): (Error | null)[] {
  const res = nl.deleteMany(routes.map((r) => ({ route: marked(r) })));
  const retry = res.flatMap((e, i) => isNotFound(e) ? [i] : []);
  const boot = nl.deleteMany(
    retry.map((i) => ({ route: { ...routes[i], protocol: RTPROT_BOOT } })),
  );
  retry.forEach((i, j) => res[i] = isNotFound(boot[j]) ? null : boot[j]);
  return res;
}

/**
 * Routes via a gateway on the external interface (host-gw, vxlan's DirectRouting), as
 * {@link isOwnedRoute} decides: the `routes` declaration of those backends for `weft cleanup`.
 */
export function isGatewayRoute(r: Route, s: RouteScope): boolean {
  return isOwnedRoute(r, s, { gateway: true });
}

/**
 * Refuses a Network that contains this host's own underlay address (the external interface's or
 * `--public-ip`): weft's routes would cover the underlay, and operators' routes there would be
 * indistinguishable from a peer's.
 */
export function checkUnderlayOverlap(
  network: Ipv4Net,
  ext: { name: string; ifaceAddr: string; publicIP: string },
): void {
  refuseUnderlay("Network", formatCidr(network), (a) => contains(network, parseIp(a)), [
    [ext.ifaceAddr, `the address of ${ext.name}, the external interface`],
    [ext.publicIP, "the public IP (--public-ip)"],
  ]);
}

/**
 * {@link checkUnderlayOverlap} for IPv6 (dual stack and IPv6-only): refuses an IPv6Network that
 * contains this host's IPv6 underlay address (the external interface's global one, or
 * `--public-ipv6`), i.e. one that overlaps the prefix that address lives in from inside.
 */
export function checkUnderlayOverlap6(
  network6: Ipv6Net,
  ext: { name: string; ifaceAddr6?: string; publicIPv6?: string },
): void {
  refuseUnderlay("IPv6Network", formatCidr6(network6), (a) => contains6(network6, parseIp6(a)), [
    [ext.ifaceAddr6, `the IPv6 address of ${ext.name}, the external interface`],
    [ext.publicIPv6, "the public IPv6 address (--public-ipv6)"],
  ]);
}

/** Throws for the first of `addrs` (address, what it is) inside the cluster network `net`. */
function refuseUnderlay(
  field: string,
  net: string,
  inside: (addr: string) => boolean,
  addrs: [string | undefined, string][],
): void {
  for (const [addr, what] of addrs) {
    if (addr && inside(addr)) {
      throw new ConfigError(
        `the cluster ${field} ${net} contains this host's underlay address ` +
          `${addr} (${what}): pod subnets and routes would cover the underlay. Choose ${
            /^[AEIOU]/.test(field) ? "an" : "a"
          } ${field} ` +
          `that does not overlap the hosts' addresses (weft config set), or another interface`,
      );
    }
  }
}
