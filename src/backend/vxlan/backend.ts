/**
 * The `vxlan` backend: a kernel VTEP `flannel.<VNI>` and, per peer lease, exactly flannel's
 * entries in flannel's order — neighbour (peer subnet address → peer VTEP MAC), FDB (MAC → peer
 * public IP), then the onlink route. With DirectRouting, peers on the same L2 segment get a plain
 * route via their public IP instead.
 *
 * Unlike flanneld, the VTEP MAC survives restarts (the existing device's, else the one in our
 * previous lease), stale entries are removed at start, and a device deleted under us is recreated
 * with every peer's entries replayed. Routes carry weft's mark; only routes routes.ts proves are
 * weft's (marked, or flanneld's exact ones, which are re-marked) are ever removed. Neighbour and
 * FDB entries are only ever read and removed on weft's own VTEP.
 *
 * With IPv6 on, a second VTEP `flannel-v6.<VNI>` over the IPv6 underlay (its own stable MAC,
 * published as BackendV6Data) gets the same triple per peer in IPv6: neighbour (peer IPv6 subnet
 * address → peer's IPv6 VTEP MAC), FDB (MAC → peer PublicIPv6), onlink route; reconciled,
 * replayed and cleaned up like the IPv4 side; with DirectRouting, peers whose PublicIPv6 is on
 * the external interface's link get a plain route via it instead.
 *
 * An IPv6-only network (EnableIPv4 false) has the IPv6 VTEP alone: no `flannel.<VNI>`, no IPv4
 * entries, and the lease carries BackendV6Data only (as flanneld writes it).
 *
 * This module keeps the backend's state and orders the work: the VTEP itself (options from the
 * config, create or adopt, compatibility, what cleanup removes) is device.ts's; the entries a peer
 * needs, entries.ts's, cached per lease in wants.ts; the programmed peers and their shared FDB
 * entries, programmed.ts's; the DirectRouting choice, direct_routing.ts's; writing and removing
 * entries, program.ts's; the reconcile's stale sweep and install, reconcile.ts's.
 */
import { getLogger } from "@logtape/logtape";
import type { NetworkConfig } from "../../config/network.ts";
import { formatIp, type Ipv4Net } from "../../base/ipv4.ts";
import { formatIp6 } from "../../base/ipv6.ts";
import type { ExternalInterface } from "../../net/iface.ts";
import type { Lease } from "../../lease/codec.ts";
import { DumpMemo, type Link, type Netlink, netlink, type Route } from "../../../ffi/libnl/mod.ts";
import type { Backend, BackendContext, BackendPrepared } from "../backend.ts";
import { ConfigError } from "../../base/errors.ts";
import type { PeerEvent } from "../../lease/watch.ts";
import { mainRouteReads, ownedAmong, routeScope } from "../routes.ts";
import { splitRoutes } from "../route_present.ts";
import { splitVteps } from "./present.ts";
import { sinceSettled } from "./incremental.ts";
import { SteadyRounds } from "../steady.ts";
import {
  ensureVtep,
  type Family,
  randomMac,
  vtepIntact,
  vtepName,
  vtepName6,
  vxlanOptions,
  type VxlanOpts,
} from "./device.ts";
import { PeerFailures } from "../peer_errors.ts";
import { type PeerEntries, peerEntries, peerEntries6, vtepMac, vtepMacOf } from "./entries.ts";
import { ProgrammedPeers } from "./programmed.ts";
import { WantsCache } from "./wants.ts";
import { DirectRouting } from "./direct_routing.ts";
import { installPeer, removePeers } from "./program.ts";
import {
  installMissing,
  readVteps,
  sweepStale,
  type Swept,
  vtepMemos,
  type Vteps,
  type Want,
} from "./reconcile.ts";

const log = getLogger(["weft", "vxlan"]);

/** The IPv6 VTEP, when the config enables IPv6. */
interface V6Side {
  mac: string;
  dev: Link;
}

export class VxlanBackend implements Backend {
  readonly name = "vxlan";
  readonly servesIpv6 = true;
  #nl: Netlink;
  #cfg!: NetworkConfig;
  #ext!: ExternalInterface;
  #o!: VxlanOpts;
  #mac = "";
  /** The IPv4 VTEP; null in an IPv6-only network. */
  #dev: Link | null = null;
  #v6: V6Side | null = null;
  #own: Lease | null = null;
  /** Peers as last programmed (replayed after the device is recreated), and their FDB users. */
  #peers: ProgrammedPeers = new ProgrammedPeers((l) => this.#wants.of(l).entries);
  /** The VTEPs were recreated: the next reconcile counts every peer's entries afresh. */
  #recount = false;
  /** The DirectRouting choice per peer public IP (set by prepare). */
  #direct: DirectRouting | null = null;
  /** Per lease, its wanted entries and their text (wants.ts). */
  #wants: WantsCache = new WantsCache({
    all: (l) => this.#all(l),
    dev: () => this.#dev?.index,
    dev6: () => this.#v6?.dev.index,
    cache: () => !this.#o.directRouting,
    programmed: (key) => this.#peers.get(key),
  });
  /** The last steady round (steady.ts), and the memos its tables are read through. */
  #steady = new SteadyRounds();
  #routeMemos = { v4: new DumpMemo<Route>(), v6: new DumpMemo<Route>() };
  #vtepMemos = vtepMemos();

  constructor(nl: Netlink = netlink()) {
    this.#nl = nl;
  }

  get deviceName(): string {
    return vtepName(this.#o.vni);
  }

  prepare(ctx: BackendContext): Promise<BackendPrepared> {
    this.#cfg = ctx.config;
    this.#ext = ctx.ext;
    this.#o = vxlanOptions(ctx.config, ctx.ext);
    this.#direct = new DirectRouting(this.#nl, this.#o.directRouting, ctx.ext.index);
    const attrs: BackendPrepared["attrs"] = { backendType: "vxlan" };
    let mtu = Infinity;
    if (ctx.config.enableIPv4) {
      const existing = this.#nl.linkByName(this.deviceName);
      this.#mac = (existing?.kind === "vxlan" ? existing.mac : "") ||
        (ctx.previous ? vtepMac(ctx.previous) ?? "" : "") || randomMac();
      this.#dev = ensureVtep(this.#nl, this.#o, this.#ext, this.#mac);
      attrs.backendData = { VNI: this.#o.vni, VtepMAC: this.#mac };
      mtu = this.#o.mtu;
    }
    if (ctx.config.enableIPv6) {
      if (!ctx.ext.ifaceAddr6) {
        throw new ConfigError(
          `EnableIPv6 with vxlan needs an IPv6 address on ${ctx.ext.name} for the IPv6 VTEP's ` +
            `underlay; add one (--public-ipv6 alone is not enough)`,
        );
      }
      const e6 = this.#nl.linkByName(vtepName6(this.#o.vni));
      const mac = (e6?.kind === "vxlan" ? e6.mac : "") ||
        (ctx.previous ? vtepMac(ctx.previous, 6) ?? "" : "") || randomMac();
      this.#v6 = { mac, dev: ensureVtep(this.#nl, this.#o, this.#ext, mac, 6) };
      attrs.backendV6Data = { VNI: this.#o.vni, VtepMAC: mac };
      // Pods get the smaller MTU: their packets may leave over either family.
      mtu = Math.min(mtu, this.#o.mtu6);
    }
    return Promise.resolve({ attrs, mtu });
  }

  start(own: Lease): Promise<void> {
    this.#own = own;
    this.#steady.reset(); // the own subnet is part of which routes are weft's
    if (this.#dev) this.#ownAddress(this.#dev.index, `${formatIp(own.subnet.ip)}/32`, 4);
    if (this.#v6 && own.subnet6) {
      this.#ownAddress(this.#v6.dev.index, `${formatIp6(own.subnet6.ip)}/128`, 6);
    }
    return Promise.resolve();
  }

  /** Gives a VTEP exactly `want` (of its family; IPv6 link-local addresses are the kernel's). */
  #ownAddress(dev: number, want: string, family: Family) {
    for (const a of this.#nl.addrList(dev, family)) {
      if (a.cidr !== want && !a.cidr.startsWith("fe80:")) this.#nl.addrDel(dev, a.cidr);
    }
    if (!this.#nl.addrList(dev, family).some((a) => a.cidr === want)) {
      this.#nl.addrReplace(dev, want);
    }
  }

  /**
   * The IPv4 entries a peer lease needs (entries.ts), or null: IPv6-only, or its lease carries no
   * usable VTEP MAC.
   */
  entriesFor(l: Lease): PeerEntries | null {
    if (!this.#dev) return null;
    return peerEntries(l, this.#dev.index, this.#direct!);
  }

  /** A peer's IPv6 entries on `flannel-v6.<VNI>` (entries.ts), or null: IPv6 off, or none usable. */
  entriesFor6(l: Lease): PeerEntries | null {
    const v6 = this.#v6;
    if (!v6) return null;
    return peerEntries6(this.#cfg, l, v6.dev.index, this.#direct!);
  }

  /**
   * Every entry a peer needs, both families; null when its IPv4 side (IPv6-only: its IPv6 side)
   * has no usable MAC.
   */
  #all(l: Lease): PeerEntries[] | null {
    const e6 = this.entriesFor6(l);
    if (!this.#dev) return e6 ? [e6] : null;
    const e = this.entriesFor(l);
    if (!e) return null;
    return e6 ? [e, e6] : [e];
  }

  apply(events: PeerEvent[]): Promise<void> {
    const f = new PeerFailures();
    // Removals wait here to be removed in batches; an added event flushes them first, so the
    // kernel sees the events in order.
    let removals: [string, PeerEntries][] = [];
    const flush = () => {
      if (removals.length) removePeers(this.#nl, removals, f);
      removals = [];
    };
    // O(events): only the leases of the events are looked at (never every peer).
    for (const ev of events) {
      const l = ev.lease;
      const es = this.#all(l);
      if (ev.type === "removed") {
        this.#peers.remove(l.key);
        for (const e of es ?? []) {
          removals.push([l.key, this.#peers.sharedFdb(e) ? { ...e, fdb: undefined } : e]);
        }
        continue;
      }
      flush();
      this.#peers.set(l);
      if (!es) {
        const m = vtepMacOf(l, this.#dev ? 4 : 6);
        log.warn("peer lease {key} skipped: {problem}; fix or delete it", {
          key: l.key,
          problem: "problem" in m ? m.problem : "no usable VtepMAC",
        });
        continue;
      }
      for (const e of es) f.run(l.key, () => installPeer(this.#nl, e));
    }
    flush();
    f.throwIfAny("programming vxlan entries");
    return Promise.resolve();
  }

  /**
   * Makes the kernel hold exactly every peer's entries. Each table is read once; when the peers
   * and every table are as in the last round that found nothing to do, nothing is diffed
   * (steady.ts): the periodic round with 5000 peers then costs the reads alone.
   */
  reconcile(peers: Lease[]): Promise<void> {
    this.#reconcile(peers, true);
    return Promise.resolve();
  }

  /**
   * {@link reconcile}; `verify`: when it changes the kernel, diff once more at once (see the
   * end).
   */
  #reconcile(peers: Lease[], verify: boolean): void {
    const vteps: Vteps = [];
    if (this.#dev) vteps.push([this.#dev.index, 4]);
    if (this.#v6) vteps.push([this.#v6.dev.index, 6]);
    const scope = this.#scope();
    const { reads, filters } = mainRouteReads(this.#nl, scope, this.#routeMemos);
    const tables = readVteps(this.#nl, vteps, this.#vtepMemos);
    const read = [...reads, ...tables.flatMap((t) => [t.fdb, t.neigh])];
    // DirectRouting asks the kernel per peer whether it is on-link: no lease change tells.
    const ws = this.#o.directRouting ? null : peers.map((p) => this.#wants.of(p));
    const sigs = ws ? peers.map((p, i) => this.#wants.signature(p, ws[i])) : [];
    if (ws && this.#steady.holds(sigs, read)) return;
    const few = ws && sinceSettled({
      steady: this.#steady,
      peers: ws,
      sigs,
      vteps,
      scope,
      routeMemos: this.#routeMemos,
      vtepMemos: this.#vtepMemos,
      devices: this.#devices(),
    });
    this.#steady.reset();
    this.#direct?.clear();
    this.#peers.take(peers, this.#recount || this.#o.directRouting);
    this.#recount = false;
    const f = new PeerFailures();
    let want: Want[];
    let swept: Swept;
    if (few) {
      want = few.want;
      swept = sweepStale(this.#nl, want, vteps, few.routes, few.tables, f);
    } else {
      // Every entry: those the kernel holds exactly as wanted are found in the dumps' bytes
      // (no object per entry); the sweep judges the rest.
      want = [];
      for (const p of ws ?? peers.map((p) => this.#wants.of(p))) want.push(...p.wants);
      const r = splitRoutes(reads, filters, want.map((w) => w.e.route));
      const v = splitVteps(tables, vteps, want);
      const owned = ownedAmong([r.rest], scope, this.#devices());
      const found = { route: r.present, fdb: v.fdbHave, neigh: v.neighHave };
      swept = sweepStale(this.#nl, want, vteps, owned, v.tables, f, found);
    }
    const installed = installMissing(this.#nl, want, swept, f);
    if (ws && !swept.changed && !installed) this.#steady.settle(sigs, read, ws);
    const removed = swept.removed;
    if (removed || installed) {
      log.info("reconciled: removed {d} stale routes, installed {n} peers", {
        d: removed,
        n: installed,
      });
    }
    f.throwIfAny("reconciling vxlan entries");
    // A full diff that changed the kernel (the start, a large repair) cannot settle, and the
    // next round would diff everything again. So read the tables again now: the diff finds them
    // as wanted and settles this very round, and the next periodic round can skip or narrow its
    // diff. (After a narrowed repair the next round's full diff stays: it is rare and small.)
    if (verify && ws && !few && (swept.changed || installed)) this.#reconcile(peers, false);
  }

  /** Which devices weft's routes may use (routes.ts). */
  #devices() {
    return { vxlan: this.#dev?.index, vxlan6: this.#v6?.dev.index, gateway: this.#o.directRouting };
  }

  /** The scope weft's routes are judged in (routes.ts). */
  #scope() {
    const own = this.#own;
    return routeScope(this.#cfg, own?.subnet ?? null, this.#ext.index, own?.subnet6);
  }

  /** Recreates the device and replays every peer when it was deleted or changed under us. */
  async check(): Promise<boolean> {
    const dev = this.#dev;
    const own = this.#own ? `${formatIp(this.#own.subnet.ip)}/32` : null;
    const intact = !dev || vtepIntact(this.#nl, dev, this.#o, this.#ext, own);
    const v6 = this.#v6;
    const own6 = this.#own?.subnet6 ? `${formatIp6(this.#own.subnet6.ip)}/128` : null;
    const intact6 = !v6 || vtepIntact(this.#nl, v6.dev, this.#o, this.#ext, own6, 6);
    if (intact && intact6) return false;
    log.warn("{name} was deleted or changed; recreating it and replaying {n} peers", {
      name: intact ? vtepName6(this.#o.vni) : this.deviceName,
      n: this.#peers.size,
    });
    this.#steady.reset();
    this.#recount = true;
    if (dev) this.#dev = ensureVtep(this.#nl, this.#o, this.#ext, this.#mac);
    if (v6) v6.dev = ensureVtep(this.#nl, this.#o, this.#ext, v6.mac, 6);
    if (this.#own) await this.start(this.#own);
    await this.reconcile([...this.#peers.values()]);
    return true;
  }

  close(): Promise<void> {
    return Promise.resolve();
  }

  /** The subnet this node holds (for tests); null before start and in an IPv6-only network. */
  get ownSubnet(): Ipv4Net | null {
    return this.#dev ? this.#own?.subnet ?? null : null;
  }
}
