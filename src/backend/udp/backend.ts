/**
 * The `udp` backend (flannel's udp mode, wire compatible with flanneld's): pods' packets are
 * routed into the TUN device `flannel0`; weft's packet workers carry each raw IP packet as one
 * UDP datagram to the peer host (port 8285) and write received ones into the TUN.
 *
 * Kernel state: `flannel0` (IFF_TUN|IFF_NO_PI, MTU ext − 28, address `<own subnet>/32`, one route
 * `<Network> dev flannel0`). The TUN is made persistent so address and route survive an agent
 * restart; the workers reattach to it. With TUN offloads (`Backend.TunOffload`, default on) it is
 * opened with IFF_VNET_HDR and TSO/checksum offload; they are cleared on stop and whenever it is
 * opened without them. Its leases omit BackendType, as flanneld's udp leases do.
 */
import { getLogger } from "@logtape/logtape";
import { backendBool, backendNumber, type NetworkConfig } from "../../config/network.ts";
import { formatCidr, formatIp } from "../../base/ipv4.ts";
import type { ExternalInterface } from "../../net/iface.ts";
import type { Lease } from "../../lease/codec.ts";
import {
  closeFd,
  openTun,
  readFd,
  setTunOffload,
  setTunPersist,
  TUN_F_CSUM,
  TUN_F_TSO4,
  TUN_F_TSO_ECN,
} from "../../../ffi/libc/mod.ts";
import { type Netlink, netlink } from "../../../ffi/libnl/mod.ts";
import { metrics } from "../../base/metrics.ts";
import type { Backend, BackendContext, BackendPrepared, Owned } from "../backend.ts";
import type { PeerEvent } from "../../lease/watch.ts";
import { DEFAULT_UDP_PORT, type Forwarder, startForwarder } from "./forwarder.ts";
import { ForwarderMetrics } from "./metrics.ts";
import type { Peer } from "./peers.ts";

const log = getLogger(["weft", "udp"]);

/** The TUN's queue: the default 500 drops packets in bursts the workers would absorb. */
const TUN_TXQUEUELEN = 5000;

/** The TUN device's name (flanneld's). */
export const TUN_DEVICE = "flannel0";

/** What the udp backend owns on a host: its TUN, whose address and route go with it. */
export function udpOwned(_cfg: NetworkConfig | null): Owned {
  return {
    owner: "udp",
    devices: [{
      names: /^flannel0$/,
      kind: "tun",
      current: TUN_DEVICE,
      describe: (l) => `${l.name} (udp TUN)`,
    }],
  };
}

export class UdpBackend implements Backend {
  readonly name = "udp";
  #nl: Netlink;
  #cfg!: NetworkConfig;
  #ext!: ExternalInterface;
  #port = DEFAULT_UDP_PORT;
  #mtu = 0;
  /** TUN offloads (IFF_VNET_HDR + TSO/checksum), `Backend.TunOffload`, default on. */
  #offload = true;
  /** Whether the open TUN fd runs with them (false when the kernel refused). */
  #offloadActive = false;
  #tun: { fd: number; name: string; index: number } | null = null;
  #fwd: Forwarder | null = null;
  #own: Lease | null = null;
  #peers = new Map<string, Lease>();
  #metrics: ForwarderMetrics | null = null;

  constructor(readonly device = TUN_DEVICE, nl: Netlink = netlink()) {
    this.#nl = nl;
  }

  prepare(ctx: BackendContext): Promise<BackendPrepared> {
    this.#cfg = ctx.config;
    this.#ext = ctx.ext;
    // Checked by parseNetworkConfig (config/backend_options.ts): 1..65535, 0 for the default.
    this.#port = backendNumber(ctx.config, "Port", 0) || DEFAULT_UDP_PORT;
    this.#mtu = ctx.ext.mtu - 28;
    this.#offload = backendBool(ctx.config, "TunOffload", true);
    this.#openTun();
    // flanneld's udp leases carry no BackendType and no BackendData.
    return Promise.resolve({ attrs: {}, mtu: this.#mtu });
  }

  /**
   * Opens the TUN with offloads when configured and possible, else plain. The offload bits stay
   * with the device across opens, so a plain open clears them and discards what was queued in
   * between: a reader without virtio_net_hdr must never get a super-packet.
   */
  #openTun() {
    let t: { fd: number; name: string } | null = null;
    this.#offloadActive = false;
    if (this.#offload) {
      t = openTun(this.device, { vnetHdr: true });
      try {
        setTunOffload(t.fd, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO_ECN);
        this.#offloadActive = true;
      } catch (e) {
        closeFd(t.fd);
        t = null;
        log.warn("TUN offloads unavailable on {dev} ({error}); forwarding one packet per read", {
          dev: this.device,
          error: (e as Error).message,
        });
      }
    }
    if (!t) {
      t = openTun(this.device);
      try {
        setTunOffload(t.fd, 0);
      } catch { /* a kernel without TUNSETOFFLOAD never had offloads on */ }
    }
    try {
      if (!this.#offloadActive) {
        const n = discardQueued(t.fd);
        if (n > 0) {
          log.debug("dropped {n} packets queued on {dev} before its offloads were off", {
            n,
            dev: this.device,
          });
        }
      }
      setTunPersist(t.fd, true);
      const link = this.#nl.linkByName(t.name);
      if (!link) throw new Error(`TUN device ${t.name} vanished right after it was opened`);
      if (link.mtu !== this.#mtu) this.#nl.linkSetMtu(link.index, this.#mtu);
      this.#nl.linkSetTxQueueLen(link.index, TUN_TXQUEUELEN);
      if (!link.up) this.#nl.linkSetUp(link.index);
      this.#tun = { fd: t.fd, name: t.name, index: link.index };
    } catch (e) {
      closeFd(t.fd);
      throw e;
    }
  }

  /** Closes the TUN fd, first clearing its offloads (see #openTun; best effort). */
  #closeTun() {
    if (!this.#tun) return;
    if (this.#offloadActive) {
      try {
        setTunOffload(this.#tun.fd, 0);
      } catch { /* closing anyway */ }
    }
    closeFd(this.#tun.fd);
    this.#tun = null;
  }

  #configure() {
    const tun = this.#tun!;
    const want = `${formatIp(this.#own!.subnet.ip)}/32`;
    for (const a of this.#nl.addrList(tun.index)) {
      if (a.cidr !== want) this.#nl.addrDel(tun.index, a.cidr);
    }
    if (!this.#nl.addrList(tun.index).some((a) => a.cidr === want)) {
      this.#nl.addrReplace(tun.index, want);
    }
    this.#nl.routeReplace({ dst: formatCidr(this.#cfg.network), dev: tun.index });
  }

  async start(own: Lease): Promise<void> {
    this.#own = own;
    this.#configure();
    if (!this.#fwd) await this.#startForwarder();
  }

  async #startForwarder() {
    this.#fwd = await startForwarder({
      tunFd: this.#tun!.fd,
      bind: { addr: this.#ext.ifaceAddr, port: this.#port },
      subnetLen: this.#cfg.subnetLen,
      peers: this.#peerList(),
      vnetHdr: this.#offloadActive,
      onError: (e) => {
        log.error("udp packet loop stopped: {error}; the self-check restarts it", {
          error: e.message,
        });
      },
    });
    if (!this.#metrics) {
      this.#metrics = new ForwarderMetrics(() => this.#fwd!.counters());
      metrics.beforeRender(() => this.#metrics?.sync());
    }
    log.info("forwarding {dev} over udp {addr}:{port} (TUN offloads {offload})", {
      dev: this.#tun!.name,
      addr: this.#ext.ifaceAddr,
      port: this.#fwd.port,
      offload: this.#offloadActive ? "on" : "off",
    });
  }

  #peerList(): Peer[] {
    return [...this.#peers.values()].flatMap((l) => this.#asPeer(l) ?? []);
  }

  /** A lease as a forwarder peer; null when its subnet is not of the network's SubnetLen. */
  #asPeer(l: Lease): Peer | null {
    return l.subnet.prefix === this.#cfg.subnetLen
      ? { subnet: l.subnet, publicIP: l.attrs.publicIP }
      : null;
  }

  async reconcile(peers: Lease[]): Promise<void> {
    this.#peers = new Map(peers.map((p) => [p.key, p]));
    await this.#fwd?.setPeers(this.#peerList());
  }

  /**
   * Sends the forwarder the change alone (O(events), never the whole table): in runs of
   * removals then additions, so events apply in their order.
   */
  async apply(events: PeerEvent[]): Promise<void> {
    let remove: Peer[] = [];
    let add: Peer[] = [];
    const flush = async () => {
      if (remove.length || add.length) await this.#fwd?.updatePeers(remove, add);
      remove = [];
      add = [];
    };
    for (const e of events) {
      if (e.type === "added") this.#peers.set(e.lease.key, e.lease);
      else this.#peers.delete(e.lease.key);
      const p = this.#asPeer(e.lease);
      if (!p) continue;
      if (e.type === "removed" && add.length) await flush();
      (e.type === "added" ? add : remove).push(p);
    }
    await flush();
  }

  /** Reopens the TUN and restarts the packet loop when the device was deleted or a worker died. */
  async check(): Promise<boolean> {
    const link = this.#nl.linkByName(this.device);
    const own = this.#own ? `${formatIp(this.#own.subnet.ip)}/32` : null;
    const intact = link && this.#tun && link.index === this.#tun.index && link.up &&
      (!own || this.#nl.addrList(link.index).some((a) => a.cidr === own)) && this.#fwd?.running;
    if (intact) return false;
    log.warn("{dev} or its packet loop is gone; reopening and restarting forwarding", {
      dev: this.device,
    });
    await this.#fwd?.stop().catch(() => {});
    this.#fwd = null;
    this.#closeTun();
    this.#openTun();
    if (this.#own) {
      this.#configure();
      await this.#startForwarder();
    }
    return true;
  }

  /** Stops the packet loop; the persistent TUN, its address and route stay for the next start. */
  async close(): Promise<void> {
    await this.#fwd?.stop().catch(() => {});
    this.#fwd = null;
    this.#closeTun();
  }
}

/**
 * Reads and drops what is queued on the (non-blocking) TUN fd, at most `max` packets: packets
 * queued under offload settings that no longer hold. Returns how many were dropped.
 */
function discardQueued(fd: number, max = 4096): number {
  const buf = new Uint8Array(new ArrayBuffer(65536 + 64)); // off-heap: see ffi/libc/lib.ts
  let n = 0;
  while (n < max && readFd(fd, buf) !== null) n++;
  return n;
}
