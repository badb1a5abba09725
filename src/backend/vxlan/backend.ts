/**
 * The `vxlan` backend: a kernel VTEP `flannel.<VNI>` and, per peer lease, exactly flannel's
 * entries in flannel's order — neighbour (peer subnet address → peer VTEP MAC), FDB (MAC → peer
 * public IP), then the onlink route. With DirectRouting, peers on the same L2 segment get a plain
 * route via their public IP instead.
 *
 * Unlike flanneld, the VTEP MAC survives restarts (the existing device's, else the one in our
 * previous lease), stale entries are removed at start, and a device deleted under us is recreated
 * with every peer's entries replayed.
 */
import { getLogger } from "@logtape/logtape";
import { backendBool, backendNumber, type NetworkConfig } from "../../config/network.ts";
import { formatCidr, formatIp, type Ipv4Net } from "../../base/ipv4.ts";
import { ConfigError } from "../../base/errors.ts";
import type { ExternalInterface } from "../../net/iface.ts";
import type { Lease } from "../../lease/codec.ts";
import {
  isNotFound,
  type Link,
  type Netlink,
  netlink,
  type Route,
  RT_TABLE_MAIN,
} from "../../../ffi/libnl/mod.ts";
import { setTxChecksum, txChecksum } from "../../../ffi/libc/ethtool.ts";
import type { Backend, BackendContext, BackendPrepared, Owned } from "../backend.ts";
import type { PeerEvent } from "../../lease/watch.ts";
import { diffRoutes, isGatewayRoute, isOwnedRoute, routeKey } from "../routes.ts";
import { PeerFailures } from "../peer_errors.ts";

const log = getLogger(["weft", "vxlan"]);

/** A random locally administered unicast MAC. */
export function randomMac(): string {
  const b = crypto.getRandomValues(new Uint8Array(6));
  b[0] = (b[0] & 0xfe) | 0x02;
  return [...b].map((x) => x.toString(16).padStart(2, "0")).join(":");
}

interface VxlanOpts {
  /** TX checksum offload on the VTEP; off behind NAT, where it corrupts outer checksums. */
  txChecksum: boolean;
  vni: number;
  port: number;
  learning: boolean;
  gbp: boolean;
  directRouting: boolean;
  mtu: number;
}

/** The kernel entries one peer lease needs. */
export interface PeerEntries {
  neigh?: { ip: string; mac: string };
  fdb?: { mac: string; dst: string };
  route: Route;
}

function vtepMac(l: Lease): string | null {
  const d = l.attrs.backendData as { VtepMAC?: unknown } | undefined;
  const mac = d?.VtepMAC;
  return typeof mac === "string" && /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i.test(mac)
    ? mac.toLowerCase()
    : null;
}

/** Device options from the config's Backend object (flannel's names and defaults). */
export function vxlanOptions(cfg: NetworkConfig, ext: ExternalInterface): VxlanOpts {
  const vni = backendNumber(cfg, "VNI", 1);
  if (vni > 16777215) throw new ConfigError(`Backend.VNI ${vni} is out of range (0..16777215)`);
  const port = backendNumber(cfg, "Port", 0);
  if (port > 65535) throw new ConfigError(`Backend.Port ${port} is out of range (0..65535)`);
  // Behind NAT (published address ≠ interface address) the kernel's offloaded UDP checksum of
  // VXLAN packets comes out wrong and receivers drop them (flannel issue 1279; flanneld leaves
  // operators an ethtool workaround). Off by default there; Backend.TxChecksumOffload decides.
  const nat = ext.publicIP !== ext.ifaceAddr;
  return {
    txChecksum: backendBool(cfg, "TxChecksumOffload", !nat),
    vni,
    port: port || 8472,
    learning: backendBool(cfg, "Learning"),
    gbp: backendBool(cfg, "GBP"),
    directRouting: backendBool(cfg, "DirectRouting"),
    mtu: backendNumber(cfg, "MTU", 0) || ext.mtu - 50,
  };
}

/** The VTEP's name for a VNI, as flannel names it. */
export const vtepName = (vni: number): string => `flannel.${vni}`;

/**
 * What the vxlan backend owns on a host: its VTEP (neighbour, FDB entries and routes go with it)
 * and, with DirectRouting, routes via a gateway on the external interface. Without a vxlan
 * config (null, or another type) every `flannel.<N>` VTEP is a leftover of weft's.
 */
export function vxlanOwned(cfg: NetworkConfig | null): Owned {
  const vni = cfg?.backendType === "vxlan" ? backendNumber(cfg, "VNI", 1) : null;
  return {
    owner: "vxlan",
    devices: [{
      names: /^flannel\.\d+$/,
      kind: "vxlan",
      current: vni === null ? null : vtepName(vni),
      otherwise: `the registry's config uses VNI ${vni}`,
      describe: (l) =>
        `${l.name} (vxlan VNI ${l.vxlan?.id ?? l.name.slice("flannel.".length)}) with its ` +
        `neighbour and FDB entries`,
    }],
    routes: isGatewayRoute,
  };
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
    this.#dev = this.#ensureDevice();
    return Promise.resolve({
      attrs: { backendType: "vxlan", backendData: { VNI: this.#o.vni, VtepMAC: this.#mac } },
      mtu: this.#o.mtu,
    });
  }

  #compatible(l: Link): boolean {
    const v = l.vxlan;
    return l.kind === "vxlan" && !!v && v.id === this.#o.vni &&
      v.local === this.#ext.ifaceAddr && v.devIndex === this.#ext.index &&
      (v.port || 8472) === this.#o.port && v.learning === this.#o.learning &&
      v.gbp === this.#o.gbp;
  }

  /** Reuses a compatible device (keeping its MAC) or recreates it. */
  #ensureDevice(): Link {
    const name = this.deviceName;
    let l = this.#nl.linkByName(name);
    if (l && !this.#compatible(l)) {
      log.warn("device {name} does not match the config (vxlan {v}); recreating it", {
        name,
        v: JSON.stringify(l.vxlan ?? l.kind),
      });
      this.#nl.linkDel(l.index);
      l = null;
    }
    if (!l) {
      l = this.#nl.linkAdd({
        kind: "vxlan",
        name,
        vni: this.#o.vni,
        local: this.#ext.ifaceAddr,
        devIndex: this.#ext.index,
        port: this.#o.port,
        learning: this.#o.learning,
        gbp: this.#o.gbp,
        mtu: this.#o.mtu,
        mac: this.#mac,
      });
      log.info("created {name} (VNI {vni}, port {port}, MAC {mac}, MTU {mtu})", {
        name,
        vni: this.#o.vni,
        port: this.#o.port,
        mac: this.#mac,
        mtu: this.#o.mtu,
      });
    } else if (l.mtu !== this.#o.mtu) this.#nl.linkSetMtu(l.index, this.#o.mtu);
    if (!this.#o.txChecksum && txChecksum(name)) {
      setTxChecksum(name, false);
      log.info("turned TX checksum offload off on {name} (public IP behind NAT, or configured)", {
        name,
      });
    }
    if (!l.up) this.#nl.linkSetUp(l.index);
    return this.#nl.linkByIndex(l.index) ?? l;
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

  /** The entries a peer lease needs, or null when its lease carries no usable VTEP MAC. */
  entriesFor(l: Lease): PeerEntries | null {
    const dst = formatCidr(l.subnet);
    if (this.#direct(l.attrs.publicIP)) {
      return { route: { dst, gw: l.attrs.publicIP, dev: this.#ext.index } };
    }
    const mac = vtepMac(l);
    if (!mac) return null;
    const addr = formatIp(l.subnet.ip);
    return {
      neigh: { ip: addr, mac },
      fdb: { mac, dst: l.attrs.publicIP },
      route: { dst, gw: addr, dev: this.#dev.index, onlink: true },
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
    gone(() => this.#nl.routeDel(e.route));
    if (e.fdb) gone(() => this.#nl.fdbDel({ dev, ...e.fdb! }));
    if (e.neigh) gone(() => this.#nl.neighDel({ dev, ip: e.neigh!.ip }));
  }

  apply(events: PeerEvent[]): Promise<void> {
    const f = new PeerFailures();
    for (const ev of events) {
      const l = ev.lease;
      const e = this.entriesFor(l);
      if (ev.type === "removed") {
        this.#peers.delete(l.key);
        if (e) f.run(l.key, () => this.#remove(e));
        continue;
      }
      this.#peers.set(l.key, l);
      if (!e) {
        log.warn("peer lease {key} has no valid VtepMAC in BackendData; skipped", { key: l.key });
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
    const { del } = diffRoutes(want.map(([, e]) => e.route), routes);
    for (const r of del) f.run(r.dst, () => this.#nl.routeDel(r));
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

  #ownedRoutes(): Route[] {
    return this.#nl.routeList({ table: RT_TABLE_MAIN }).filter((r) =>
      isOwnedRoute(r, this.#cfg.network, this.#own?.subnet ?? null, {
        vxlan: this.#dev.index,
        ext: this.#ext.index,
      })
    );
  }

  /** Recreates the device and replays every peer when it was deleted or changed under us. */
  async check(): Promise<boolean> {
    const l = this.#nl.linkByName(this.deviceName);
    const own = this.#own ? `${formatIp(this.#own.subnet.ip)}/32` : null;
    const intact = l && l.index === this.#dev.index && l.up && this.#compatible(l) &&
      (!own || this.#nl.addrList(l.index).some((a) => a.cidr === own));
    if (intact) return false;
    log.warn("{name} was deleted or changed; recreating it and replaying {n} peers", {
      name: this.deviceName,
      n: this.#peers.size,
    });
    this.#dev = this.#ensureDevice();
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
