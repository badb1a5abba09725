/**
 * `--ip-blackhole-route`: a blackhole route for the node's own subnet, so packets to addresses of
 * that subnet that no pod holds are dropped here instead of following the default route out of
 * the node (what flannel added the flag for: CNIs without a bridge route for the subnet, such as
 * Canal's per-pod /32 routes). The route has the largest metric, so a bridge's own route for the
 * subnet (`<subnet> dev cni0`, metric 0) keeps winning and both can exist at once.
 *
 * With IPv6 (as flanneld's AddBlackholeV6Route) the own IPv6 subnet gets one too; an IPv6-only
 * node has that one alone. weft's blackhole routes are recognised by type, metric and destination
 * inside the cluster network (IPv6Network for IPv6 ones); others (an operator's) are never touched. `syncBlackhole` makes the kernel match: the
 * route for `subnet` present, every other one of weft's gone (a changed subnet, the flag turned
 * off). {@link BlackholePart} calls it on each lease and every few seconds, which also repairs a
 * manual delete; {@link blackholeOwned} tells `weft cleanup` which routes are weft's.
 *
 * @example
 * ```ts
 * syncBlackhole(netlink(), network, lease.subnet); // flag on
 * syncBlackhole(netlink(), network, null);         // flag off: remove weft's leftovers
 * syncBlackhole(netlink(), { ip: 0, prefix: 0 }, null, { network: net6, subnet: s6 }); // IPv6-only
 * ```
 */
import { getLogger } from "@logtape/logtape";
import { type Netlink, type Route, RT_TABLE_MAIN, RTN_BLACKHOLE } from "../../ffi/libnl/mod.ts";
import { containsNet, formatCidr, type Ipv4Net, parseCidr } from "../base/ipv4.ts";
import { containsNet6, formatCidr6, type Ipv6Net, parseCidr6 } from "../base/ipv6.ts";
import type { NetworkConfig } from "../config/network.ts";
import type { Lease } from "../lease/codec.ts";
import type { Owned } from "../backend/backend.ts";
import type { Part } from "../backend/part.ts";

const log = getLogger(["weft", "blackhole"]);

/** Lowest route priority: any other route for the subnet is preferred. */
export const BLACKHOLE_METRIC = 0xffffffff;

/** What a sync changed (for logs and the repair counter). */
export interface BlackholeSync {
  added: string[];
  removed: string[];
}

/** The IPv6 side of a sync: IPv6Network and the own IPv6 subnet (null: none wanted). */
export interface Blackhole6 {
  network: Ipv6Net;
  subnet: Ipv6Net | null;
}

/**
 * Whether `r` is one of weft's blackhole routes: by type, metric and destination (inside
 * `network`, or for an IPv6 route inside `network6`). The empty network (an IPv6-only node's IPv4
 * half) holds none: weft never makes one there.
 */
function isOurBlackhole(r: Route, network: Ipv4Net, network6: Ipv6Net | null = null): boolean {
  if (
    r.type !== RTN_BLACKHOLE || r.metric !== BLACKHOLE_METRIC ||
    (r.table ?? RT_TABLE_MAIN) !== RT_TABLE_MAIN
  ) return false;
  if (r.dst.includes(":")) return !!network6 && containsNet6(network6, parseCidr6(r.dst));
  return network.prefix > 0 && containsNet(network, parseCidr(r.dst));
}

/** weft's blackhole routes in the main table (IPv6 ones too when `network6` is given). */
export function ourBlackholes(
  nl: Netlink,
  network: Ipv4Net,
  network6: Ipv6Net | null = null,
): string[] {
  const routes = [
    ...nl.routeList({ type: RTN_BLACKHOLE }),
    ...(network6 ? nl.routeList({ type: RTN_BLACKHOLE, family: 6 }) : []),
  ];
  return routes.filter((r) => isOurBlackhole(r, network, network6)).map((r) => r.dst);
}

/** A route destination in one spelling per subnet, to compare with a wanted one. */
function canonical(dst: string): string {
  return dst.includes(":") ? formatCidr6(parseCidr6(dst)) : formatCidr(parseCidr(dst));
}

/**
 * Makes weft's blackhole routes exactly `subnet`'s (none when null) and, with `v6`, its
 * `subnet`'s too.
 */
export function syncBlackhole(
  nl: Netlink,
  network: Ipv4Net,
  subnet: Ipv4Net | null,
  v6: Blackhole6 | null = null,
): BlackholeSync {
  const out: BlackholeSync = { added: [], removed: [] };
  const want = new Set<string>();
  if (subnet) want.add(formatCidr(subnet));
  if (v6?.subnet) want.add(formatCidr6(v6.subnet));
  const present = new Set<string>();
  for (const dst of ourBlackholes(nl, network, v6?.network ?? null)) {
    if (want.has(canonical(dst))) {
      present.add(canonical(dst));
      continue;
    }
    nl.routeDel({ dst, type: RTN_BLACKHOLE, metric: BLACKHOLE_METRIC });
    out.removed.push(dst);
  }
  for (const dst of want) {
    if (present.has(dst)) continue;
    nl.routeReplace({ dst, type: RTN_BLACKHOLE, metric: BLACKHOLE_METRIC });
    out.added.push(dst);
  }
  return out;
}

/**
 * The agent's blackhole-route part: `apply()` on every lease syncs at once (the flag off still
 * removes a route an earlier run left; failing at that only warns), `check()` every
 * `intervalMs` while the flag is on re-syncs, which repairs a manual delete.
 */
export class BlackholePart implements Part {
  readonly name = "blackhole route";
  readonly checkIntervalMs: number;
  #target: { network: Ipv4Net; subnet: Ipv4Net | null; v6: Blackhole6 | null } | null = null;

  /** `enabled`: `--ip-blackhole-route`. */
  constructor(readonly nl: Netlink, readonly enabled: boolean, intervalMs = 5000) {
    this.checkIntervalMs = enabled ? intervalMs : 0;
  }

  apply(cfg: NetworkConfig, lease: Lease, _prev: Lease | null): Promise<void> {
    // An IPv6-only node's IPv4 half is the empty network: nothing to blackhole there.
    const v4 = cfg.enableIPv4 && this.enabled;
    this.#target = {
      network: cfg.network,
      subnet: v4 ? lease.subnet : null,
      v6: cfg.ipv6
        ? { network: cfg.ipv6.network, subnet: this.enabled ? lease.subnet6 ?? null : null }
        : null,
    };
    try {
      this.#sync();
    } catch (e) {
      if (this.enabled) throw e;
      log.warn("could not check for a stale blackhole route: {error}", {
        error: (e as Error).message,
      });
    }
    return Promise.resolve();
  }

  check(): Promise<boolean> {
    return Promise.resolve(this.#target !== null && this.#sync());
  }

  stop(): Promise<void> {
    return Promise.resolve();
  }

  /** Syncs to the target and logs what changed; true when something did. */
  #sync(): boolean {
    const t = this.#target!;
    const r = syncBlackhole(this.nl, t.network, t.subnet, t.v6);
    for (const dst of r.added) log.info("blackhole route for {dst} installed", { dst });
    for (const dst of r.removed) log.info("removed stale blackhole route {dst}", { dst });
    return r.added.length > 0 || r.removed.length > 0;
  }
}

/**
 * What `weft cleanup` removes for the blackhole part: weft's blackhole routes in the network (and
 * in IPv6Network).
 */
export const blackholeOwned: Owned = {
  owner: "blackhole route",
  routes: (r, scope) => isOurBlackhole(r, scope.network, scope.network6 ?? null),
};
