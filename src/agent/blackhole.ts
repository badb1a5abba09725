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
 * off). It is called on each lease and every few seconds, which also repairs a manual delete.
 *
 * @example
 * ```ts
 * syncBlackhole(netlink(), network, lease.subnet); // flag on
 * syncBlackhole(netlink(), network, null);         // flag off: remove weft's leftovers
 * ```
 */
import { type Netlink, type Route, RT_TABLE_MAIN, RTN_BLACKHOLE } from "../../ffi/libnl/mod.ts";
import { containsNet, formatCidr, type Ipv4Net, parseCidr, sameNet } from "../base/ipv4.ts";

/** Lowest route priority: any other route for the subnet is preferred. */
export const BLACKHOLE_METRIC = 0xffffffff;

/** What a sync changed (for logs and the repair counter). */
export interface BlackholeSync {
  added: string | null;
  removed: string[];
}

/** Whether `r` is one of weft's blackhole routes: by type, metric and destination. */
export function isOurBlackhole(r: Route, network: Ipv4Net): boolean {
  return r.type === RTN_BLACKHOLE && r.metric === BLACKHOLE_METRIC &&
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
 * Keeps weft's blackhole route in sync: `set()` on every lease (syncs at once), then a re-sync
 * every `intervalMs` until `stop()`, which repairs a manual delete. Errors are logged, never
 * thrown from the timer: the next round retries.
 */
export class BlackholeKeeper {
  #target: { network: Ipv4Net; subnet: Ipv4Net | null } | null = null;
  #timer: ReturnType<typeof setInterval> | null = null;

  constructor(
    readonly nl: Netlink,
    readonly log: (msg: string, props: Record<string, unknown>) => void,
    readonly intervalMs = 5000,
  ) {}

  /** The route to keep: `subnet`'s, or none (null) while removing weft's leftovers. */
  set(network: Ipv4Net, subnet: Ipv4Net | null): BlackholeSync {
    this.#target = { network, subnet };
    const r = syncBlackhole(this.nl, network, subnet);
    this.#report(r);
    if (!this.#timer && subnet) {
      this.#timer = setInterval(() => this.#tick(), this.intervalMs);
      Deno.unrefTimer(this.#timer);
    }
    return r;
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }

  #tick() {
    const t = this.#target;
    if (!t) return;
    try {
      this.#report(syncBlackhole(this.nl, t.network, t.subnet));
    } catch (e) {
      this.log("blackhole route check failed: {error}; retrying", {
        error: (e as Error).message,
      });
    }
  }

  #report(r: BlackholeSync) {
    if (r.added) this.log("blackhole route for {dst} installed", { dst: r.added });
    for (const dst of r.removed) this.log("removed stale blackhole route {dst}", { dst });
  }
}
