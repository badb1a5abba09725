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
 * The VTEP itself (options from the config, create or adopt, compatibility, what cleanup removes)
 * is device.ts's; this module programs the peers.
 */
import { getLogger } from "@logtape/logtape";
import type { NetworkConfig } from "../../config/network.ts";
import { formatCidr, formatIp, type Ipv4Net } from "../../base/ipv4.ts";
import type { ExternalInterface } from "../../net/iface.ts";
import type { Lease } from "../../lease/codec.ts";
import {
  isNotFound,
  type Link,
  type Netlink,
  netlink,
  type Route,
  RTPROT_BOOT,
} from "../../../ffi/libnl/mod.ts";
import type { Backend, BackendContext, BackendPrepared } from "../backend.ts";
import type { PeerEvent } from "../../lease/watch.ts";
import { diffRoutes, listOwnedRoutes, marked, routeKey, routeScope } from "../routes.ts";
import {
  ensureVtep,
  randomMac,
  vtepCompatible,
  vtepName,
  vxlanOptions,
  type VxlanOpts,
} from "./device.ts";
import { PeerFailures } from "../peer_errors.ts";
import { macProblem } from "../../config/unicast.ts";

const log = getLogger(["weft", "vxlan"]);

/** The kernel entries one peer lease needs. */
export interface PeerEntries {
  neigh?: { ip: string; mac: string };
  fdb?: { mac: string; dst: string };
  route: Route;
}

/** The lease's VTEP MAC, or why it has no usable one (multicast, zero, missing, not a MAC); also the doctor's. */
export function vtepMacOf(l: Lease): { mac: string } | { problem: string } {
  const d = l.attrs.backendData;
  const mac = d && typeof d === "object" ? (d as { VtepMAC?: unknown }).VtepMAC : undefined;
  const problem = macProblem(mac);
  return problem ? { problem: `VtepMAC ${problem}` } : { mac: (mac as string).toLowerCase() };
}

function vtepMac(l: Lease): string | null {
  const m = vtepMacOf(l);
  return "mac" in m ? m.mac : null;
}

export class VxlanBackend implements Backend {
  readonly name = "vxlan";
  #nl: Netlink;
  #cfg!: NetworkConfig;
  #ext!: ExternalInterface;
  #o!: VxlanOpts;
  #mac = "";
  #dev!: Link;
  #own: Lease | null = null;
  /** Peers as last programmed, for replay after the device is recreated. */
  #peers = new Map<string, Lease>();
  /** Whether a public IP is on the external interface's L2 segment (DirectRouting). */
  #onLink = new Map<string, boolean>();

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
    const existing = this.#nl.linkByName(this.deviceName);
    this.#mac = (existing?.kind === "vxlan" ? existing.mac : "") ||
      (ctx.previous ? vtepMac(ctx.previous) ?? "" : "") || randomMac();
    this.#dev = ensureVtep(this.#nl, this.#o, this.#ext, this.#mac);
    return Promise.resolve({
      attrs: { backendType: "vxlan", backendData: { VNI: this.#o.vni, VtepMAC: this.#mac } },
      mtu: this.#o.mtu,
    });
  }

  start(own: Lease): Promise<void> {
    this.#own = own;
    const want = `${formatIp(own.subnet.ip)}/32`;
    for (const a of this.#nl.addrList(this.#dev.index)) {
      if (a.cidr !== want) this.#nl.addrDel(this.#dev.index, a.cidr);
    }
    if (!this.#nl.addrList(this.#dev.index).some((a) => a.cidr === want)) {
      this.#nl.addrReplace(this.#dev.index, want);
    }
    return Promise.resolve();
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
    const mac = vtepMac(l);
    if (!mac) return null;
    const dst = formatCidr(l.subnet);
    if (this.#direct(l.attrs.publicIP)) {
      return { route: marked({ dst, gw: l.attrs.publicIP, dev: this.#ext.index }) };
    }
    const addr = formatIp(l.subnet.ip);
    return {
      neigh: { ip: addr, mac },
      fdb: { mac, dst: l.attrs.publicIP },
      route: marked({ dst, gw: addr, dev: this.#dev.index, onlink: true }),
    };
  }

  #install(e: PeerEntries) {
    const dev = this.#dev.index;
    if (e.neigh) this.#nl.neighSet({ dev, ...e.neigh, permanent: true });
    if (e.fdb) this.#nl.fdbSet({ dev, ...e.fdb });
    this.#nl.routeReplace(e.route);
  }

  #remove(e: PeerEntries) {
    const dev = this.#dev.index;
    const gone = (fn: () => void) => {
      try {
        fn();
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
    };
    // Ours (marked), else flanneld's exact route; another protocol's is left alone.
    gone(() => {
      try {
        this.#nl.routeDel(e.route);
      } catch (err) {
        if (!isNotFound(err)) throw err;
        this.#nl.routeDel({ ...e.route, protocol: RTPROT_BOOT });
      }
    });
    if (e.fdb) gone(() => this.#nl.fdbDel({ dev, ...e.fdb! }));
    if (e.neigh) gone(() => this.#nl.neighDel({ dev, ip: e.neigh!.ip }));
  }

  apply(events: PeerEvent[]): Promise<void> {
    const f = new PeerFailures();
    // How many peers name each VTEP MAC (built once per batch with a removal): two leases naming
    // one VTEP (a stale duplicate of a live peer) share its FDB entry, which must outlive the
    // stale one.
    let macs: Map<string, number> | null = null;
    const count = (l: Lease, d: number) => {
      const mac = this.entriesFor(l)?.fdb?.mac;
      if (macs && mac) macs.set(mac, (macs.get(mac) ?? 0) + d);
    };
    for (const ev of events) {
      const l = ev.lease;
      const e = this.entriesFor(l);
      if (ev.type === "removed") {
        if (!macs) {
          macs = new Map();
          for (const p of this.#peers.values()) count(p, 1);
        }
        if (this.#peers.delete(l.key)) count(l, -1);
        if (e) {
          const shared = !!e.fdb && (macs.get(e.fdb.mac) ?? 0) > 0;
          f.run(l.key, () => this.#remove(shared ? { ...e, fdb: undefined } : e));
        }
        continue;
      }
      if (!this.#peers.has(l.key)) count(l, 1);
      this.#peers.set(l.key, l);
      if (!e) {
        const m = vtepMacOf(l);
        log.warn("peer lease {key} skipped: {problem} in its BackendData; fix or delete it", {
          key: l.key,
          problem: "problem" in m ? m.problem : "no usable VtepMAC",
        });
        continue;
      }
      f.run(l.key, () => this.#install(e));
    }
    f.throwIfAny("programming vxlan entries");
    return Promise.resolve();
  }

  reconcile(peers: Lease[]): Promise<void> {
    this.#onLink.clear();
    this.#peers = new Map(peers.map((p) => [p.key, p]));
    const dev = this.#dev.index;
    const want = peers.map((p) => [p, this.entriesFor(p)] as const).filter(([, e]) => e) as [
      Lease,
      PeerEntries,
    ][];
    const f = new PeerFailures();
    // Stale first (routes, then FDB, then neighbours), so nothing points at a removed entry.
    const routes = this.#ownedRoutes();
    const { del, adopt } = diffRoutes(want.map(([, e]) => e.route), routes);
    for (const r of del) f.run(r.dst, () => this.#nl.routeDel(r));
    for (const r of adopt) f.run(r.dst, () => this.#nl.routeReplace(r)); // re-mark in place
    const fdbWant = new Set(
      want.filter(([, e]) => e.fdb).map(([, e]) => `${e.fdb!.mac}|${e.fdb!.dst}`),
    );
    for (const x of this.#nl.fdbList(dev)) {
      if (!x.self || !x.dst || fdbWant.has(`${x.mac}|${x.dst}`)) continue;
      f.run(`fdb ${x.mac}`, () => this.#nl.fdbDel({ dev, mac: x.mac, dst: x.dst! }));
    }
    const neighWant = new Set(
      want.filter(([, e]) => e.neigh).map(([, e]) => `${e.neigh!.ip}|${e.neigh!.mac}`),
    );
    const neighHave = new Set<string>();
    for (const n of this.#nl.neighList(dev)) {
      const k = `${n.ip}|${n.mac}`;
      if (!n.ip.includes(".")) continue;
      if (n.permanent && neighWant.has(k)) neighHave.add(k);
      else f.run(`neigh ${n.ip}`, () => this.#nl.neighDel({ dev, ip: n.ip }));
    }
    // Then install what is missing, per peer in flannel's order. Replace is idempotent, but
    // skipping entries already present keeps a restart with 5000 peers cheap.
    const haveRoutes = new Set(this.#ownedRoutes().map(routeKey));
    const haveFdb = new Set(
      this.#nl.fdbList(dev).filter((x) => x.self && x.dst).map((x) => `${x.mac}|${x.dst}`),
    );
    let installed = 0;
    for (const [p, e] of want) {
      if (
        haveRoutes.has(routeKey(e.route)) &&
        (!e.fdb || haveFdb.has(`${e.fdb.mac}|${e.fdb.dst}`)) &&
        (!e.neigh || neighHave.has(`${e.neigh.ip}|${e.neigh.mac}`))
      ) continue;
      installed++;
      f.run(p.key, () => this.#install(e));
    }
    if (del.length || installed) {
      log.info("reconciled: removed {d} stale routes, installed {n} peers", {
        d: del.length,
        n: installed,
      });
    }
    f.throwIfAny("reconciling vxlan entries");
    return Promise.resolve();
  }

  /** weft's routes (routes.ts): on the VTEP, and via peers on the external interface. */
  #ownedRoutes(): Route[] {
    const scope = routeScope(this.#cfg, this.#own?.subnet ?? null, this.#ext.index);
    return listOwnedRoutes(this.#nl, scope, {
      vxlan: this.#dev.index,
      gateway: this.#o.directRouting,
    });
  }

  /** Recreates the device and replays every peer when it was deleted or changed under us. */
  async check(): Promise<boolean> {
    const l = this.#nl.linkByName(this.deviceName);
    const own = this.#own ? `${formatIp(this.#own.subnet.ip)}/32` : null;
    const intact = l && l.index === this.#dev.index && l.up &&
      vtepCompatible(l, this.#o, this.#ext) &&
      (!own || this.#nl.addrList(l.index).some((a) => a.cidr === own));
    if (intact) return false;
    log.warn("{name} was deleted or changed; recreating it and replaying {n} peers", {
      name: this.deviceName,
      n: this.#peers.size,
    });
    this.#dev = ensureVtep(this.#nl, this.#o, this.#ext, this.#mac);
    if (this.#own) await this.start(this.#own);
    await this.reconcile([...this.#peers.values()]);
    return true;
  }

  close(): Promise<void> {
    return Promise.resolve();
  }

  /** The subnet this node holds (for tests). */
  get ownSubnet(): Ipv4Net | null {
    return this.#own?.subnet ?? null;
  }
}
