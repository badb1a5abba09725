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
 * The VTEP itself (options from the config, create or adopt, compatibility, what cleanup removes)
 * is device.ts's; this module programs the peers.
 */
import { getLogger } from "@logtape/logtape";
import type { NetworkConfig } from "../../config/network.ts";
import { formatCidr, formatIp, type Ipv4Net } from "../../base/ipv4.ts";
import { formatCidr6, formatIp6 } from "../../base/ipv6.ts";
import { isPeerSubnet6 } from "../../lease/allocate.ts";
import type { ExternalInterface } from "../../net/iface.ts";
import type { Lease } from "../../lease/codec.ts";
import {
  type DeleteRequest,
  isNotFound,
  type Link,
  type Netlink,
  netlink,
  type Route,
} from "../../../ffi/libnl/mod.ts";
import type { Backend, BackendContext, BackendPrepared } from "../backend.ts";
import { ConfigError } from "../../base/errors.ts";
import type { PeerEvent } from "../../lease/watch.ts";
import {
  deletePeerRoutes,
  diffRoutes,
  Index,
  listOwnedRoutes,
  marked,
  routeScope,
} from "../routes.ts";
import {
  ensureVtep,
  type Family,
  randomMac,
  vtepCompatible,
  vtepName,
  vtepName6,
  vxlanOptions,
  type VxlanOpts,
} from "./device.ts";
import { PeerFailures } from "../peer_errors.ts";
import { macProblem } from "../../config/unicast.ts";

const log = getLogger(["weft", "vxlan"]);

/** The kernel entries one peer lease needs on one VTEP (`dev`). */
export interface PeerEntries {
  dev: number;
  neigh?: { ip: string; mac: string };
  fdb?: { mac: string; dst: string };
  route: Route;
}

/**
 * The lease's VTEP MAC (`family` 6: of its IPv6 VTEP, in BackendV6Data), or why it has no usable
 * one (multicast, zero, missing, not a MAC); also the doctor's.
 */
export function vtepMacOf(l: Lease, family: Family = 4): { mac: string } | { problem: string } {
  const d = family === 6 ? l.attrs.backendV6Data : l.attrs.backendData;
  const mac = d && typeof d === "object" ? (d as { VtepMAC?: unknown }).VtepMAC : undefined;
  const problem = macProblem(mac);
  const where = family === 6 ? "BackendV6Data" : "BackendData";
  return problem
    ? { problem: `VtepMAC ${problem} in its ${where}` }
    : { mac: (mac as string).toLowerCase() };
}

function vtepMac(l: Lease, family: Family = 4): string | null {
  const m = vtepMacOf(l, family);
  return "mac" in m ? m.mac : null;
}

/** The IPv6 VTEP, when the config enables IPv6. */
interface V6Side {
  mac: string;
  dev: Link;
}

/** A wanted entry set and the lease key failures are recorded against. */
interface Want {
  key: string;
  e: PeerEntries;
}

/** A lease's wants, and the VTEPs' ifindexes they were made for (recreated VTEPs get new ones). */
interface Wants {
  dev: number | undefined;
  dev6: number | undefined;
  wants: Want[];
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
  /** Peers as last programmed, for replay after the device is recreated. */
  #peers = new Map<string, Lease>();
  /** Whether a public IP is on the external interface's L2 segment (DirectRouting). */
  #onLink = new Map<string, boolean>();
  /**
   * Per lease object, its entries with their keys: the watcher hands the same object until the
   * lease changes, so a periodic reconcile of 5000 unchanged peers builds none of them again.
   */
  #wants = new WeakMap<Lease, Wants>();

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

  #direct(publicIP: string): boolean {
    if (!this.#o.directRouting) return false;
    let v = this.#onLink.get(publicIP);
    if (v === undefined) {
      try {
        const r = this.#nl.routeGet(publicIP);
        v = r.gw === null && r.dev === this.#ext.index;
      } catch {
        v = false;
      }
      this.#onLink.set(publicIP, v);
    }
    return v;
  }

  /**
   * The entries a peer lease needs, or null when its lease carries no usable VTEP MAC: such a
   * lease is programmed not at all (no route without its neighbour and FDB entry), also when
   * DirectRouting would not need the MAC, so a lease is applied whole or not at all.
   */
  entriesFor(l: Lease): PeerEntries | null {
    if (!this.#dev) return null;
    const mac = vtepMac(l);
    if (!mac) return null;
    const dst = formatCidr(l.subnet);
    const dev = this.#dev.index;
    if (this.#direct(l.attrs.publicIP)) {
      return { dev, route: marked({ dst, gw: l.attrs.publicIP, dev: this.#ext.index }) };
    }
    const addr = formatIp(l.subnet.ip);
    return {
      dev,
      neigh: { ip: addr, mac },
      fdb: { mac, dst: l.attrs.publicIP },
      route: marked({ dst, gw: addr, dev, onlink: true }),
    };
  }

  /**
   * A peer's IPv6 entries on `flannel-v6.<VNI>` (DirectRouting: a route via its PublicIPv6 when
   * that is on-link), or null: IPv6 off, or the lease has no usable
   * IPv6 half (no subnet of this IPv6Network, no PublicIPv6, no IPv6 VTEP MAC: e.g. a peer not
   * yet restarted with IPv6, which keeps its IPv4 entries).
   */
  entriesFor6(l: Lease): PeerEntries | null {
    const v6 = this.#v6;
    const s6 = l.subnet6;
    const pub6 = l.attrs.publicIPv6;
    if (!v6 || !s6 || !pub6 || !isPeerSubnet6(this.#cfg, s6)) return null;
    const mac = vtepMac(l, 6);
    if (!mac) return null;
    const addr = formatIp6(s6.ip);
    const dev = v6.dev.index;
    if (this.#direct(pub6)) {
      return { dev, route: marked({ dst: formatCidr6(s6), gw: pub6, dev: this.#ext.index }) };
    }
    return {
      dev,
      neigh: { ip: addr, mac },
      fdb: { mac, dst: pub6 },
      route: marked({ dst: formatCidr6(s6), gw: addr, dev, onlink: true }),
    };
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

  /**
   * {@link #all}, cached per lease object unless DirectRouting is on (whether a peer is on-link
   * is looked up again on every reconcile).
   */
  #wanted(l: Lease): Want[] {
    const dev = this.#dev?.index;
    const dev6 = this.#v6?.dev.index;
    const hit = this.#wants.get(l);
    if (hit && hit.dev === dev && hit.dev6 === dev6) return hit.wants;
    const wants = (this.#all(l) ?? []).map((e): Want => ({ key: l.key, e }));
    if (!this.#o.directRouting) this.#wants.set(l, { dev, dev6, wants });
    return wants;
  }

  #install(e: PeerEntries) {
    const dev = e.dev;
    if (e.neigh) this.#nl.neighSet({ dev, ...e.neigh, permanent: true });
    if (e.fdb) this.#nl.fdbSet({ dev, ...e.fdb });
    this.#nl.routeReplace(e.route);
  }

  /**
   * Removes peers' entries, `[lease key, entries]`, in three batches: routes (ours, else
   * flanneld's exact one; routes.ts), then FDB, then neighbour entries, so nothing points at a
   * removed entry. An entry already gone is fine; a peer whose route (FDB entry) cannot be removed
   * keeps its FDB (and neighbour) entry, and the failure is recorded against its key.
   */
  #removeMany(items: [string, PeerEntries][], f: PeerFailures) {
    const failed = (i: number, e: Error | null) => {
      if (e === null || isNotFound(e)) return false;
      f.add(items[i][0], e);
      return true;
    };
    const routeErrs = deletePeerRoutes(this.#nl, items.map(([, e]) => e.route));
    const next = items.flatMap((_, i) => failed(i, routeErrs[i]) ? [] : [i]);
    const fdb = next.filter((i) => items[i][1].fdb);
    const fdbErrs = this.#nl.deleteMany(
      fdb.map((i) => ({ fdb: { dev: items[i][1].dev, ...items[i][1].fdb! } })),
    );
    const bad = new Set(fdb.filter((i, j) => failed(i, fdbErrs[j])));
    const neigh = next.filter((i) => items[i][1].neigh && !bad.has(i));
    const neighErrs = this.#nl.deleteMany(
      neigh.map((i) => ({ neigh: { dev: items[i][1].dev, ip: items[i][1].neigh!.ip } })),
    );
    neigh.forEach((i, j) => failed(i, neighErrs[j]));
  }

  apply(events: PeerEvent[]): Promise<void> {
    const f = new PeerFailures();
    // How many peers name each VTEP MAC (built once per batch with a removal): two leases naming
    // one VTEP (a stale duplicate of a live peer) share its FDB entry, which must outlive the
    // stale one.
    let macs: Map<string, number> | null = null;
    // Removals wait here to be removed in batches; an added event flushes them first, so the
    // kernel sees the events in order.
    let removals: [string, PeerEntries][] = [];
    const flush = () => {
      if (removals.length) this.#removeMany(removals, f);
      removals = [];
    };
    const fdbKey = (e: PeerEntries) => e.fdb ? `${e.dev}/${e.fdb.mac}` : null;
    const count = (l: Lease, d: number) => {
      for (const e of this.#all(l) ?? []) {
        const k = fdbKey(e);
        if (macs && k) macs.set(k, (macs.get(k) ?? 0) + d);
      }
    };
    for (const ev of events) {
      const l = ev.lease;
      const es = this.#all(l);
      if (ev.type === "removed") {
        if (!macs) {
          macs = new Map();
          for (const p of this.#peers.values()) count(p, 1);
        }
        if (this.#peers.delete(l.key)) count(l, -1);
        for (const e of es ?? []) {
          const k = fdbKey(e);
          const shared = k !== null && (macs.get(k) ?? 0) > 0;
          removals.push([l.key, shared ? { ...e, fdb: undefined } : e]);
        }
        continue;
      }
      flush();
      if (!this.#peers.has(l.key)) count(l, 1);
      this.#peers.set(l.key, l);
      if (!es) {
        const m = vtepMacOf(l, this.#dev ? 4 : 6);
        log.warn("peer lease {key} skipped: {problem}; fix or delete it", {
          key: l.key,
          problem: "problem" in m ? m.problem : "no usable VtepMAC",
        });
        continue;
      }
      for (const e of es) f.run(l.key, () => this.#install(e));
    }
    flush();
    f.throwIfAny("programming vxlan entries");
    return Promise.resolve();
  }

  reconcile(peers: Lease[]): Promise<void> {
    this.#onLink.clear();
    this.#peers = new Map();
    const want: Want[] = [];
    for (const p of peers) {
      this.#peers.set(p.key, p);
      for (const w of this.#wanted(p)) want.push(w);
    }
    const f = new PeerFailures();
    // Each table is read once (with 5000 peers a read costs ~10 ms of CPU): after the deletions
    // the kernel holds what it held less what they removed, none of it wanted, so the install
    // pass below needs no second read. The kernel's entries are looked up by the field the dump
    // has (destination, MAC, address): no key string per entry.
    // Stale first (routes, then FDB, then neighbours), so nothing points at a removed entry.
    const { del, add, adopt } = diffRoutes(want.map((w) => w.e.route), this.#ownedRoutes());
    this.#deleteAll(del.map((route) => ({ route })), del.map((r) => r.dst), f);
    for (const r of adopt) f.run(r.dst, () => this.#nl.routeReplace(r)); // re-mark in place
    const routeMissing = new Set(add);
    const byMac = new Index(want, (w) => w.e.fdb?.mac);
    const byIp = new Index(want, (w) => w.e.neigh?.ip);
    const fdbHave = new Uint8Array(want.length);
    const neighHave = new Uint8Array(want.length);
    const vteps: [number, Family][] = [];
    if (this.#dev) vteps.push([this.#dev.index, 4]);
    if (this.#v6) vteps.push([this.#v6.dev.index, 6]);
    for (const [dev, family] of vteps) {
      const fdbDel: { mac: string; dst: string }[] = [];
      for (const x of this.#nl.fdbList(dev)) {
        if (!x.self || !x.dst) continue;
        let wanted = false;
        for (let i = byMac.first.get(x.mac) ?? -1; i >= 0; i = byMac.next[i]) {
          const e = want[i].e;
          if (e.dev !== dev || e.fdb!.dst !== x.dst) continue;
          wanted = true;
          fdbHave[i] = 1;
        }
        if (!wanted) fdbDel.push({ mac: x.mac, dst: x.dst });
      }
      this.#deleteAll(
        fdbDel.map((x) => ({ fdb: { dev, ...x } })),
        fdbDel.map((x) => `fdb ${x.mac}`),
        f,
      );
      const neighDel: string[] = [];
      for (const n of this.#nl.neighList(dev, family)) {
        if (family === 4 && !n.ip.includes(".")) continue;
        let wanted = false;
        for (let i = byIp.first.get(n.ip) ?? -1; n.permanent && i >= 0; i = byIp.next[i]) {
          const e = want[i].e;
          if (e.dev !== dev || e.neigh!.mac !== n.mac) continue;
          wanted = true;
          neighHave[i] = 1;
        }
        // Only permanent IPv6 entries are weft's: the kernel's own (router, link-local) stay.
        if (!wanted && (family === 4 || n.permanent)) neighDel.push(n.ip);
      }
      this.#deleteAll(
        neighDel.map((ip) => ({ neigh: { dev, ip } })),
        neighDel.map((ip) => `neigh ${ip}`),
        f,
      );
    }
    // Then install what is missing, per peer in flannel's order. Replace is idempotent, but
    // skipping entries already present keeps a restart with 5000 peers cheap.
    let installed = 0;
    want.forEach((w, i) => {
      const e = w.e;
      if (
        !routeMissing.has(e.route) && (!e.fdb || fdbHave[i]) && (!e.neigh || neighHave[i])
      ) return;
      installed++;
      f.run(w.key, () => this.#install(e));
    });
    if (del.length || installed) {
      log.info("reconciled: removed {d} stale routes, installed {n} peers", {
        d: del.length,
        n: installed,
      });
    }
    f.throwIfAny("reconciling vxlan entries");
    return Promise.resolve();
  }

  /**
   * Deletes stale entries in one batch; each failure is recorded under its `names` entry (one
   * already gone is not a failure).
   */
  #deleteAll(reqs: DeleteRequest[], names: string[], f: PeerFailures) {
    this.#nl.deleteMany(reqs).forEach((e, i) => e && !isNotFound(e) && f.add(names[i], e));
  }

  /** weft's routes (routes.ts): on the VTEP, and via peers on the external interface. */
  #ownedRoutes(): Route[] {
    const own = this.#own;
    const scope = routeScope(this.#cfg, own?.subnet ?? null, this.#ext.index, own?.subnet6);
    return listOwnedRoutes(this.#nl, scope, {
      vxlan: this.#dev?.index,
      vxlan6: this.#v6?.dev.index,
      gateway: this.#o.directRouting,
    });
  }

  /** Recreates the device and replays every peer when it was deleted or changed under us. */
  async check(): Promise<boolean> {
    const dev = this.#dev;
    const l = dev && this.#nl.linkByName(this.deviceName);
    const own = this.#own ? `${formatIp(this.#own.subnet.ip)}/32` : null;
    const intact = !dev || (l && l.index === dev.index && l.up &&
      vtepCompatible(l, this.#o, this.#ext) &&
      (!own || this.#nl.addrList(l.index).some((a) => a.cidr === own)));
    const v6 = this.#v6;
    const l6 = v6 && this.#nl.linkByName(vtepName6(this.#o.vni));
    const own6 = this.#own?.subnet6 ? `${formatIp6(this.#own.subnet6.ip)}/128` : null;
    const intact6 = !v6 || (l6 && l6.index === v6.dev.index && l6.up &&
      vtepCompatible(l6, this.#o, this.#ext, 6) &&
      (!own6 || this.#nl.addrList(l6.index, 6).some((a) => a.cidr === own6)));
    if (intact && intact6) return false;
    log.warn("{name} was deleted or changed; recreating it and replaying {n} peers", {
      name: intact ? vtepName6(this.#o.vni) : this.deviceName,
      n: this.#peers.size,
    });
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
