/**
 * The `host-gw` backend: per peer lease, `<peer subnet> via <peer public IP> dev <ext iface>`,
 * and with IPv6 on, `<peer IPv6 subnet> via <peer PublicIPv6>` beside it (IPv6-only: alone).
 * Every host must share one L2 segment. Refuses to start when the public IP is not the
 * interface's own address (peers could not route to it), and re-adds routes someone removed.
 * Its routes carry weft's mark; reconciliation removes only routes routes.ts proves are weft's
 * (marked, or flanneld's exact host-gw routes, which it re-marks).
 */
import { getLogger } from "@logtape/logtape";
import type { NetworkConfig } from "../../config/network.ts";
import { ConfigError } from "../../base/errors.ts";
import { formatCidr } from "../../base/ipv4.ts";
import { formatCidr6 } from "../../base/ipv6.ts";
import { isPeerSubnet6 } from "../../lease/allocate.ts";
import type { ExternalInterface } from "../../net/iface.ts";
import type { Lease } from "../../lease/codec.ts";
import {
  DumpMemo,
  isNotFound,
  type Netlink,
  netlink,
  type Route,
  type RouteFilter,
  type TableRead,
} from "../../../ffi/libnl/mod.ts";
import type { Backend, BackendContext, BackendPrepared, Owned, RouteScope } from "../backend.ts";
import type { PeerEvent } from "../../lease/watch.ts";
import {
  deletePeerRoutes,
  isGatewayRoute,
  listOwnedRoutes,
  mainRouteReads,
  mainRoutesChange,
  marked,
  ownedAmong,
  routeScope,
} from "../routes.ts";
import { diffRoutes, sameRoute } from "../route_diff.ts";
import { splitRoutes } from "../route_present.ts";
import { SteadyRounds } from "../steady.ts";
import { PeerFailures } from "../peer_errors.ts";

const log = getLogger(["weft", "host-gw"]);

/** What host-gw owns on a host: its routes via a gateway on the external interface. */
export function hostGwOwned(_cfg: NetworkConfig | null): Owned {
  return { owner: "host-gw", routes: isGatewayRoute };
}

export class HostGwBackend implements Backend {
  readonly name = "host-gw";
  readonly servesIpv6 = true;
  #nl: Netlink;
  #cfg!: NetworkConfig;
  #ext!: ExternalInterface;
  #own: Lease | null = null;
  #peers = new Map<string, Lease>();
  /**
   * Per lease object, its routes: the watcher hands the same object until the lease changes, so
   * reconciles and checks of 5000 unchanged peers build none of them again.
   */
  #wants = new WeakMap<Lease, { routes: Route[]; sig?: string }>();
  /** The last steady round (steady.ts), and the memos its route tables are read through. */
  #steady = new SteadyRounds();
  #routeMemos = { v4: new DumpMemo<Route>(), v6: new DumpMemo<Route>() };

  constructor(nl: Netlink = netlink()) {
    this.#nl = nl;
  }

  prepare(ctx: BackendContext): Promise<BackendPrepared> {
    if (ctx.config.enableIPv4 && ctx.ext.publicIP !== ctx.ext.ifaceAddr) {
      throw new ConfigError(
        `host-gw needs the public IP to be the external interface's own address, but ` +
          `--public-ip is ${ctx.ext.publicIP} and ${ctx.ext.name} has ${ctx.ext.ifaceAddr}; ` +
          `drop --public-ip or use the vxlan backend`,
      );
    }
    if (ctx.config.enableIPv6 && ctx.ext.publicIPv6 !== ctx.ext.ifaceAddr6) {
      throw new ConfigError(
        `host-gw needs the public IPv6 address to be the external interface's own, but ` +
          `--public-ipv6 is ${ctx.ext.publicIPv6} and ${ctx.ext.name} has ${
            ctx.ext.ifaceAddr6 ?? "no global IPv6 address"
          }; ` +
          `drop --public-ipv6 or use the vxlan backend`,
      );
    }
    this.#cfg = ctx.config;
    this.#ext = ctx.ext;
    return Promise.resolve({ attrs: { backendType: "host-gw" }, mtu: ctx.ext.mtu });
  }

  start(own: Lease): Promise<void> {
    this.#own = own;
    this.#steady.reset(); // the own subnet is part of which routes are weft's
    return Promise.resolve();
  }

  /** The IPv4 route of a peer (its first route; see {@link routesFor}). */
  routeFor(l: Lease): Route {
    return marked({ dst: formatCidr(l.subnet), gw: l.attrs.publicIP, dev: this.#ext.index });
  }

  /**
   * A peer's routes: one per family the config enables and the lease has (an IPv4-only peer in a
   * dual-stack cluster, e.g. one not yet restarted with IPv6, gets its IPv4 route only).
   */
  routesFor(l: Lease): Route[] {
    const out: Route[] = [];
    if (this.#cfg.enableIPv4) out.push(this.routeFor(l));
    const v6 = l.attrs.publicIPv6;
    if (this.#cfg.ipv6 && l.subnet6 && v6 && isPeerSubnet6(this.#cfg, l.subnet6)) {
      out.push(marked({ dst: formatCidr6(l.subnet6), gw: v6, dev: this.#ext.index }));
    }
    return out;
  }

  apply(events: PeerEvent[]): Promise<void> {
    const f = new PeerFailures();
    // Removals wait here to be deleted in one batch (routes.ts: ours, else flanneld's exact
    // route); an added event flushes them first, so the kernel sees the events in order.
    let removals: [string, Route][] = [];
    const flush = () => {
      deletePeerRoutes(this.#nl, removals.map(([, r]) => r))
        .forEach((e, i) => e && f.add(removals[i][0], e));
      removals = [];
    };
    for (const ev of events) {
      const rs = this.routesFor(ev.lease);
      if (ev.type === "removed") {
        this.#peers.delete(ev.lease.key);
        for (const r of rs) removals.push([ev.lease.key, r]);
      } else {
        flush();
        this.#peers.set(ev.lease.key, ev.lease);
        for (const r of rs) f.run(ev.lease.key, () => this.#nl.routeReplace(r));
      }
    }
    flush();
    f.throwIfAny("programming host-gw routes");
    return Promise.resolve();
  }

  #scope(): RouteScope {
    const own = this.#own;
    return routeScope(this.#cfg, own?.subnet ?? null, this.#ext.index, own?.subnet6);
  }

  #owned(): Route[] {
    return listOwnedRoutes(this.#nl, this.#scope(), { gateway: true });
  }

  /**
   * A peer's routes, made once per lease object; a new object of a programmed lease with the same
   * subnets and public IPs (a re-list, a renewal) takes the programmed one's.
   */
  #wantsOf(l: Lease): { routes: Route[]; sig?: string } {
    let w = this.#wants.get(l);
    if (w) return w;
    const had = this.#peers.get(l.key);
    w = had && had !== l && sameRouteInputs(had, l) ? this.#wants.get(had) : undefined;
    this.#wants.set(l, w ??= { routes: this.routesFor(l) });
    return w;
  }

  /** Every peer's routes, in peer order. */
  #wanted(): Route[] {
    const routes: Route[] = [];
    for (const l of this.#peers.values()) for (const r of this.#wantsOf(l).routes) routes.push(r);
    return routes;
  }

  /** A peer's key and routes as text, for the steady test (steady.ts). */
  #signature(l: Lease): string {
    const w = this.#wantsOf(l);
    return w.sig ??= `${l.key}>${w.routes.map((r) => `${r.dst} ${r.gw} ${r.dev}`).join(";")}`;
  }

  /**
   * {@link #sync} of every peer's routes: those the tables hold exactly as wanted are found in
   * the dumps' bytes (no object per route; route_present.ts), the rest diffed.
   */
  #syncAll(
    reads: TableRead<Route>[],
    filters: RouteFilter[],
    scope: RouteScope,
  ): { removed: number; added: number; adopted: number } {
    const wanted = this.#wanted();
    const { present, rest } = splitRoutes(reads, filters, wanted);
    const owned = ownedAmong([rest], scope, { gateway: true });
    return this.#sync(owned, wanted.filter((_, i) => !present[i]));
  }

  /** Diffs `owned` against `wanted` (every peer's routes) and repairs the difference. */
  #sync(
    owned: Route[],
    wanted = this.#wanted(),
  ): { removed: number; added: number; adopted: number } {
    const { del, add, adopt } = diffRoutes(wanted, owned);
    const f = new PeerFailures();
    // One already gone is not a failure.
    this.#nl.deleteMany(del.map((route) => ({ route })))
      .forEach((e, i) => e && !isNotFound(e) && f.add(del[i].dst, e));
    for (const r of [...adopt, ...add]) f.run(r.dst, () => this.#nl.routeReplace(r));
    f.throwIfAny("reconciling host-gw routes");
    return { removed: del.length, added: add.length, adopted: adopt.length };
  }

  /**
   * Makes the main table hold exactly every peer's routes of weft's. The table is read once; when
   * the peers and the table are as in the last round that found nothing to do, nothing is
   * diffed (steady.ts); when a few changed since, only the destinations they touch are
   * ({@link #sinceSettled}).
   */
  reconcile(peers: Lease[]): Promise<void> {
    this.#reconcile(peers, true);
    return Promise.resolve();
  }

  /** {@link reconcile}; `verify`: when it changes the kernel, diff once more at once. */
  #reconcile(peers: Lease[], verify: boolean): void {
    const scope = this.#scope();
    const { reads, filters } = mainRouteReads(this.#nl, scope, this.#routeMemos);
    const sigs = peers.map((p) => this.#signature(p));
    if (this.#steady.holds(sigs, reads)) return;
    this.#takePeers(peers);
    const few = this.#sinceSettled(peers, sigs, scope);
    this.#steady.reset();
    const { removed, added, adopted } = few
      ? this.#sync(few.owned, few.wanted)
      : this.#syncAll(reads, filters, scope);
    if (!removed && !added && !adopted) this.#steady.settle(sigs, reads, peers);
    if (removed || added) {
      log.info("reconciled: removed {d} stale routes, added {a}", { d: removed, a: added });
    }
    // As vxlan's: a full diff that changed the table (the start, a large repair) reads it again
    // now and settles (steady.ts), so the next periodic round can skip or narrow its diff.
    if (verify && !few && (removed || added || adopted)) this.#reconcile(peers, false);
  }

  /** Makes `peers` (distinct keys, the watcher's) the programmed peers, in place when it can. */
  #takePeers(peers: Lease[]) {
    for (const p of peers) if (this.#peers.get(p.key) !== p) this.#peers.set(p.key, p);
    if (this.#peers.size !== peers.length) this.#peers = new Map(peers.map((p) => [p.key, p]));
  }

  /**
   * The incremental diff: the last settled round proved its table held exactly its peers'
   * routes of weft's, so now only destinations of routes that came or went in the table since,
   * or of peers whose routes came, went or changed, can need a repair. Returns weft's routes the
   * table now holds there (the settled peers' routes, less those gone, plus those come) and the
   * routes wanted there; null (diff it all) when no round is settled, the memos cannot tell what
   * changed, more than a tenth of the peers did, or the peers changed but the table did not (an
   * event this host never applied: worth a full look).
   */
  #sinceSettled(
    peers: Lease[],
    sigs: string[],
    scope: RouteScope,
  ): { owned: Route[]; wanted: Route[] } | null {
    const was = this.#steady.since<Lease>(sigs);
    if (!was) return null;
    const change = mainRoutesChange(scope, this.#routeMemos, was.tables as TableRead<Route>[]);
    if (
      !change || was.gone.length + was.came.length > Math.max(16, peers.length / 10) ||
      (change.added.length + change.removed.length === 0) // peers changed, no event applied
    ) return null;
    const dsts = new Set<string>();
    for (const r of [...change.added, ...change.removed]) dsts.add(r.dst);
    for (const l of was.gone) for (const r of this.#wantsOf(l).routes) dsts.add(r.dst);
    for (const i of was.came) for (const r of this.#wantsOf(peers[i]).routes) dsts.add(r.dst);
    // Wanted there; and held there when settled: the routes of the peers that still want what
    // they wanted then (all but those come), and those of the peers gone.
    const wanted: Route[] = [];
    const held: Route[] = [];
    const isNew = new Set(was.came);
    for (let i = 0; i < peers.length; i++) {
      for (const r of this.#wantsOf(peers[i]).routes) {
        if (!dsts.has(r.dst)) continue;
        wanted.push(r);
        if (!isNew.has(i)) held.push(r);
      }
    }
    for (const l of was.gone) for (const r of this.#wantsOf(l).routes) held.push(r);
    const owned = held.filter((r) => !change.removed.some((x) => sameRoute(x, r)));
    owned.push(...ownedAmong([change.added], scope, { gateway: true }));
    return { owned, wanted };
  }

  /** Re-adds peer routes that were removed by hand (flannel checks every 10 s; we do it on every check). */
  check(): Promise<boolean> {
    const missing = diffRoutes(this.#wanted(), this.#owned()).add;
    if (missing.length === 0) return Promise.resolve(false);
    const f = new PeerFailures();
    for (const r of missing) f.run(r.dst, () => this.#nl.routeReplace(r));
    f.throwIfAny("restoring host-gw routes");
    return Promise.resolve(true);
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** Whether `a` and `b` get the same routes ({@link HostGwBackend.routesFor} reads these alone). */
function sameRouteInputs(a: Lease, b: Lease): boolean {
  return a.subnet.ip === b.subnet.ip && a.subnet.prefix === b.subnet.prefix &&
    a.attrs.publicIP === b.attrs.publicIP && a.attrs.publicIPv6 === b.attrs.publicIPv6 &&
    a.subnet6?.ip === b.subnet6?.ip && a.subnet6?.prefix === b.subnet6?.prefix;
}
