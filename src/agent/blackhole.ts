/**
 * `--ip-blackhole-route`: a blackhole route for the node's own subnet, so packets to addresses of
 * that subnet that no pod holds are dropped here instead of following the default route out of
 * the node (what flannel added the flag for: CNIs without a bridge route for the subnet, such as
 * Canal's per-pod /32 routes). The route has the largest metric, so a bridge's own route for the
 * subnet (`<subnet> dev cni0`, metric 0) keeps winning and both can exist at once.
 *
 * weft's blackhole routes are recognised by type, metric and destination inside the cluster
 * network; others (an operator's) are never touched. `syncBlackhole` makes the kernel match: the
 * route for `subnet` present, every other one of weft's gone (a changed subnet, the flag turned
 * off). {@link BlackholePart} calls it on each lease and every few seconds, which also repairs a
 * manual delete; {@link blackholeOwned} tells `weft cleanup` which routes are weft's.
 *
 * @example
 * ```ts
 * syncBlackhole(netlink(), network, lease.subnet); // flag on
 * syncBlackhole(netlink(), network, null);         // flag off: remove weft's leftovers
 * ```
 */
import { getLogger } from "@logtape/logtape";
import { type Netlink, type Route, RT_TABLE_MAIN, RTN_BLACKHOLE } from "../../ffi/libnl/mod.ts";
import { containsNet, formatCidr, type Ipv4Net, parseCidr, sameNet } from "../base/ipv4.ts";
import type { NetworkConfig } from "../config/network.ts";
import type { Lease } from "../lease/codec.ts";
import type { Owned } from "../backend/backend.ts";
import type { Part } from "../backend/part.ts";

const log = getLogger(["weft", "blackhole"]);

/** Lowest route priority: any other route for the subnet is preferred. */
export const BLACKHOLE_METRIC = 0xffffffff;

/** What a sync changed (for logs and the repair counter). */
export interface BlackholeSync {
  added: string | null;
  removed: string[];
}

/**
 * Whether `r` is one of weft's blackhole routes: by type, metric and destination. The empty
 * network (an IPv6-only node's IPv4 half) holds none: weft never makes one there.
 */
function isOurBlackhole(r: Route, network: Ipv4Net): boolean {
  return network.prefix > 0 && r.type === RTN_BLACKHOLE && r.metric === BLACKHOLE_METRIC &&
    (r.table ?? RT_TABLE_MAIN) === RT_TABLE_MAIN && containsNet(network, parseCidr(r.dst));
}

/** weft's blackhole routes in the main table. */
export function ourBlackholes(nl: Netlink, network: Ipv4Net): string[] {
  return nl.routeList({ type: RTN_BLACKHOLE }).filter((r) => isOurBlackhole(r, network))
    .map((r) => r.dst);
}

/** Makes weft's blackhole routes exactly `subnet`'s (or none when `subnet` is null). */
export function syncBlackhole(
  nl: Netlink,
  network: Ipv4Net,
  subnet: Ipv4Net | null,
): BlackholeSync {
  const out: BlackholeSync = { added: null, removed: [] };
  let present = false;
  for (const dst of ourBlackholes(nl, network)) {
    if (subnet && sameNet(parseCidr(dst), subnet)) {
      present = true;
      continue;
    }
    nl.routeDel({ dst, type: RTN_BLACKHOLE, metric: BLACKHOLE_METRIC });
    out.removed.push(dst);
  }
  if (subnet && !present) {
    const dst = formatCidr(subnet);
    nl.routeReplace({ dst, type: RTN_BLACKHOLE, metric: BLACKHOLE_METRIC });
    out.added = dst;
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
  #target: { network: Ipv4Net; subnet: Ipv4Net | null } | null = null;

  /** `enabled`: `--ip-blackhole-route`. */
  constructor(readonly nl: Netlink, readonly enabled: boolean, intervalMs = 5000) {
    this.checkIntervalMs = enabled ? intervalMs : 0;
  }

  apply(cfg: NetworkConfig, lease: Lease, _prev: Lease | null): Promise<void> {
    // IPv6-only: no IPv4 subnet to blackhole (the IPv6 half gets none yet; see README).
    if (!cfg.enableIPv4) return Promise.resolve();
    this.#target = { network: cfg.network, subnet: this.enabled ? lease.subnet : null };
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
    const r = syncBlackhole(this.nl, t.network, t.subnet);
    if (r.added) log.info("blackhole route for {dst} installed", { dst: r.added });
    for (const dst of r.removed) log.info("removed stale blackhole route {dst}", { dst });
    return r.added !== null || r.removed.length > 0;
  }
}

/** What `weft cleanup` removes for the blackhole part: weft's blackhole routes in the network. */
export const blackholeOwned: Owned = {
  owner: "blackhole route",
  routes: (r, scope) => isOurBlackhole(r, scope.network),
};
