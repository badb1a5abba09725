/**
 * The node's own subnet must be routed to its pods (the CNI bridge's connected route, or no
 * route before the first pod), never away from them: a route for it via a gateway, or into the
 * overlay, makes every pod here unreachable while the agent would otherwise look healthy (a
 * stale peer route from a subnet this node took over, flannel issue 2554). {@link OwnRoutePart}
 * checks it on every lease and every 10 s: such a route that weft made (marked, see
 * `backend/routes.ts`) is removed; anyone else's keeps the node not ready, named in /readyz with
 * the command that fixes it. Each half the node holds is checked: the IPv4 subnet, and with IPv6
 * the IPv6 one (an IPv6-only node has only that).
 *
 * @example
 * ```ts
 * const part = new OwnRoutePart(netlink());
 * await part.apply(cfg, lease, null);
 * part.problem(); // null, or "own subnet 198.19.5.0/24 is routed via 198.18.0.3 dev eth0 …"
 * ```
 */
import { getLogger } from "@logtape/logtape";
import { type Netlink, type Route, RT_TABLE_MAIN, RTN_UNICAST } from "../../ffi/libnl/mod.ts";
import { formatCidr, type Ipv4Net, parseCidr, sameNet } from "../base/ipv4.ts";
import { formatCidr6, type Ipv6Net, parseCidr6, sameNet6 } from "../base/ipv6.ts";
import type { NetworkConfig } from "../config/network.ts";
import type { Lease } from "../lease/codec.ts";
import type { Part } from "../backend/part.ts";
import { RTPROT_WEFT } from "../backend/routes.ts";

const log = getLogger(["weft", "agent"]);

/** Overlay devices a pod route must not point into: flannel's VTEPs and TUN. */
const OVERLAY = /^flannel(-v6)?[.0-9]/;

/** Whether the route destination `dst` is exactly `subnet` (of either family). */
function isSubnet(dst: string, subnet: Ipv4Net | Ipv6Net): boolean {
  try {
    return typeof subnet.ip === "bigint"
      ? dst.includes(":") && sameNet6(parseCidr6(dst), subnet as Ipv6Net)
      : !dst.includes(":") && sameNet(parseCidr(dst), subnet as Ipv4Net);
  } catch {
    return false;
  }
}

/** Routes in `routes` that take the own `subnet` (IPv4 or IPv6) away from this node's pods. */
export function strayOwnRoutes(
  routes: Route[],
  subnet: Ipv4Net | Ipv6Net,
  devName: (index: number) => string,
): Route[] {
  return routes.filter((r) =>
    (r.table ?? RT_TABLE_MAIN) === RT_TABLE_MAIN && (r.type ?? RTN_UNICAST) === RTN_UNICAST &&
    isSubnet(r.dst, subnet) &&
    (r.gw !== undefined || (r.dev !== undefined && OVERLAY.test(devName(r.dev))))
  );
}

export class OwnRoutePart implements Part {
  readonly name = "own subnet route";
  readonly checkIntervalMs: number;
  /** The own subnets to check: the IPv4 half, the IPv6 half (either may be absent). */
  #subnets: (Ipv4Net | Ipv6Net)[] | null = null;
  #problem: string | null = null;

  constructor(readonly nl: Netlink, intervalMs = 10_000) {
    this.checkIntervalMs = intervalMs;
  }

  apply(cfg: NetworkConfig, lease: Lease, _prev: Lease | null): Promise<void> {
    this.#subnets = [
      ...(cfg.enableIPv4 ? [lease.subnet] : []),
      ...(cfg.enableIPv6 && lease.subnet6 ? [lease.subnet6] : []),
    ];
    this.#check();
    return Promise.resolve();
  }

  check(): Promise<boolean> {
    return Promise.resolve(this.#subnets !== null && this.#check());
  }

  /** Why the own subnet is routed away from the pods, or null. */
  problem(): string | null {
    return this.#problem;
  }

  stop(): Promise<void> {
    return Promise.resolve();
  }

  /** Removes weft's stray routes, records anyone else's; true when it removed something. */
  #check(): boolean {
    const name = (i: number) => this.nl.linkByIndex(i)?.name ?? `if${i}`;
    let removed = false;
    const foreign: string[] = [];
    const bad: string[] = [];
    for (const subnet of this.#subnets!) {
      const v6 = typeof subnet.ip === "bigint";
      const text = v6 ? formatCidr6(subnet as Ipv6Net) : formatCidr(subnet as Ipv4Net);
      // Only the routes to the subnet itself: with thousands of peer routes, reading all of them
      // every 10 s was most of this check's cost.
      const routes = this.nl.routeList({ ...(v6 ? { family: 6 } : {}), dst: text });
      const stray = strayOwnRoutes(routes, subnet, name);
      const before = foreign.length;
      removed = this.#sort(stray, name, foreign) || removed;
      if (foreign.length > before) {
        bad.push(text);
      }
    }
    const was = this.#problem;
    this.#problem = foreign.length
      ? `own subnet ${bad.join(" and ")} is routed away from this node's pods (${
        foreign.join("; ")
      }, not made by weft): remove it (ip route del ${foreign[0]})`
      : null;
    if (this.#problem && this.#problem !== was) log.error("{msg}", { msg: this.#problem });
    return removed;
  }

  /** Removes weft's routes of `stray`, adds anyone else's to `foreign`; true when it removed. */
  #sort(stray: Route[], name: (i: number) => string, foreign: string[]): boolean {
    let removed = false;
    for (const r of stray) {
      const text = `${r.dst}${r.gw ? ` via ${r.gw}` : ""}${
        r.dev !== undefined ? ` dev ${name(r.dev)}` : ""
      }`;
      if (r.protocol === RTPROT_WEFT) {
        this.nl.routeDel(r);
        removed = true;
        log.warn("removed weft's route {route}: it sent this node's own subnet away", {
          route: text,
        });
      } else foreign.push(text);
    }
    return removed;
  }
}
