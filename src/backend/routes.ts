/**
 * Route bookkeeping shared by the kernel backends: which routes weft owns (destinations inside
 * the cluster network, on weft's devices) and the diff between what leases justify and what the
 * kernel has, so start-up reconciliation removes stale routes and installs missing ones.
 */
import { type Route, RT_TABLE_MAIN, RTPROT_BOOT } from "../../ffi/libnl/mod.ts";
import { contains, type Ipv4Net, parseCidr, sameNet } from "../base/ipv4.ts";
import type { RouteScope } from "./backend.ts";

/** Identity of a route for diffing (table main). */
export function routeKey(r: Route): string {
  return `${r.dst}|${r.gw ?? ""}|${r.dev ?? ""}|${r.onlink ? 1 : 0}`;
}

/**
 * Routes that weft manages: destination inside `network`, not the own subnet, and through one
 * of `devices` (weft's vxlan device, or the external interface with a gateway for host-gw and
 * DirectRouting). Anything else (the pod bridge's own route, operator routes) is left alone.
 */
export function isOwnedRoute(
  r: Route,
  network: Ipv4Net,
  own: Ipv4Net | null,
  devices: { vxlan?: number; ext?: number },
): boolean {
  if ((r.table ?? RT_TABLE_MAIN) !== RT_TABLE_MAIN) return false;
  // weft and flanneld write "boot" routes; routing daemons (BGP, OSPF) use their own protocol.
  if (r.protocol !== undefined && r.protocol !== RTPROT_BOOT) return false;
  let dst: Ipv4Net;
  try {
    dst = parseCidr(r.dst);
  } catch {
    return false;
  }
  if (dst.prefix < network.prefix || !contains(network, dst.ip)) return false;
  if (own && sameNet(dst, own)) return false;
  if (devices.vxlan !== undefined && r.dev === devices.vxlan) return true;
  return devices.ext !== undefined && r.dev === devices.ext && !!r.gw;
}

/**
 * Routes into the network via a gateway on the external interface (host-gw, vxlan's
 * DirectRouting), as {@link isOwnedRoute} decides: the `routes` declaration of those backends.
 */
export function isGatewayRoute(r: Route, s: RouteScope): boolean {
  return s.ext !== null && isOwnedRoute(r, s.network, s.own, { ext: s.ext });
}

/** What to delete and what to install so the kernel holds exactly `want` of the owned routes. */
export function diffRoutes(want: Route[], have: Route[]): { del: Route[]; add: Route[] } {
  const wantKeys = new Set(want.map(routeKey));
  const haveKeys = new Set(have.map(routeKey));
  return {
    del: have.filter((r) => !wantKeys.has(routeKey(r))),
    add: want.filter((r) => !haveKeys.has(routeKey(r))),
  };
}
