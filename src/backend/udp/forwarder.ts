/**
 * The udp backend's packet forwarder: two Workers (TUN → UDP and UDP → TUN) each running a sync
 * FFI loop of poll() plus batched reads and sendmmsg/recvmmsg, so per-packet work never touches
 * the main thread, whose event loop stays free for leases, watches and health. Peer updates reach
 * the workers by postMessage; counters come back through a SharedArrayBuffer.
 *
 * @example
 * ```ts
 * const tun = openTun("flannel0");
 * const fwd = await startForwarder({
 *   tunFd: tun.fd, bind: { addr: "198.18.0.1", port: 8285 }, subnetLen: 24,
 * });
 * await fwd.setPeers([{ subnet: parseCidr("198.19.2.0/24"), publicIP: "198.18.0.2" }]);
 * fwd.counters().txPackets;
 * await fwd.stop();
 * ```
 */
import { getLogger } from "@logtape/logtape";
import {
  closeFd,
  localAddress,
  openEventFd,
  openUdpSocket,
  signalEventFd,
} from "../../../ffi/libc/mod.ts";
import { parseIp } from "../../base/ipv4.ts";
import { withTimeout } from "../../base/async.ts";
import {
  CTL,
  type ForwarderCounters,
  newControlBuffer,
  newCounterBuffer,
  readCounters,
} from "./counters.ts";
import { checkSubnetLen, type Peer, peerEntries, type PeerEntry } from "./peers.ts";
import type { WorkerInit } from "./worker.ts";

const log = getLogger(["weft", "udp"]);

/** flannel's udp backend port. */
export const DEFAULT_UDP_PORT = 8285;

export interface ForwarderOptions {
  /** An open TUN fd (IFF_TUN|IFF_NO_PI, non-blocking); the caller keeps ownership. */
  tunFd: number;
  /**
   * An open, bound UDP socket; the caller keeps ownership. Give this or `bind`. The forwarder
   * turns on UDP_GRO on it (see udpGro).
   */
  udpFd?: number;
  /** Create the UDP socket here (closed again by stop()). Give this or `udpFd`. */
  bind?: { addr: string; port?: number; rcvBuf?: number; sndBuf?: number };
  /** Peers' UDP port; default `bind.port` or 8285. */
  peerPort?: number;
  /** The network's SubnetLen: every peer subnet has this prefix. */
  subnetLen: number;
  peers?: Peer[];
  /** Packets per batch (recvmmsg/sendmmsg vlen); default 64. */
  batchSize?: number;
  /** Bytes per packet buffer, at least the TUN MTU and the largest peer datagram; default 65536. */
  slotSize?: number;
  /** Longest poll() wait in ms (1..100; bounds how stale the stop flag can be); default 50. */
  pollMs?: number;
  /** Accept datagrams only from peers' public IPs; default true. */
  checkSource?: boolean;
  /**
   * Send runs of equal-size packets to one peer as one UDP GSO message (same datagrams on the
   * wire); default true. Turned off by itself when the kernel or egress device refuses it.
   */
  udpGso?: boolean;
  /** Receive with UDP GRO (several datagrams per message) when slotSize is 65536; default true. */
  udpGro?: boolean;
  /**
   * The TUN fd was opened with IFF_VNET_HDR (openTun's vnetHdr): packets carry a virtio_net_hdr,
   * TCP super-packets read are cut into segments and received segments are coalesced; default
   * false. Needs slotSize 65536.
   */
  vnetHdr?: boolean;
  /** Called when a worker fails (e.g. the TUN device was deleted); default: log an error. */
  onError?: (err: Error) => void;
}

export interface Forwarder {
  /**
   * Replaces the peer table (all current peers). Throws RangeError on a bad peer. The promise
   * resolves once both workers forward with the new table (or the forwarder stopped).
   */
  setPeers(peers: Peer[]): Promise<void>;
  /**
   * Applies one change to the peer table: the subnets of `remove` leave, then `add` go in (a
   * changed lease is in both). O(change): a peer event never resends the table. Resolves as
   * {@link setPeers} does; throws RangeError on a bad peer.
   */
  updatePeers(remove: Peer[], add: Peer[]): Promise<void>;
  /** Counters since start, read from shared memory (cheap; call at scrape time). */
  counters(): ForwarderCounters;
  /** The UDP socket fd in use and its local port. */
  readonly udpFd: number;
  readonly port: number;
  /** False after a worker failed or stop() ran. */
  readonly running: boolean;
  /** Stops both workers (promptly: they are woken) and closes what start opened. */
  stop(): Promise<void>;
}

const WORKER_URL = new URL("./worker.ts", import.meta.url);
const STOP_TIMEOUT_MS = 2000;
/** A worker that is not polling after this long (loading modules, opening libc) failed. */
const START_TIMEOUT_MS = 15_000;

interface WorkerHandle {
  worker: Worker;
  wakeFd: number;
  stopped: Promise<void>;
  /** The latest peer table generation the worker reported in use. */
  appliedGen: number;
}

/** Starts both packet workers; resolves once both are polling. */
export async function startForwarder(opts: ForwarderOptions): Promise<Forwarder> {
  checkSubnetLen(opts.subnetLen);
  if ((opts.udpFd === undefined) === (opts.bind === undefined)) {
    throw new TypeError("startForwarder needs exactly one of udpFd or bind");
  }
  const pollMs = opts.pollMs ?? 50;
  if (opts.vnetHdr && (opts.slotSize ?? 65536) < 65536) {
    throw new RangeError(
      `slotSize ${opts.slotSize} is too small for vnetHdr: use 65536 (a TUN read may be a ` +
        "64 KiB super-packet)",
    );
  }
  if (!(pollMs >= 1 && pollMs <= 100)) throw new RangeError(`pollMs ${pollMs} must be in 1..100`);
  const onError = opts.onError ??
    ((e: Error) => log.error("udp forwarder stopped: {message}", { message: e.message }));
  let gen = 0;
  /** The peer table by subnet network address (what a worker starting now is given). */
  let byNet = new Map<number, PeerEntry>();
  for (const e of peerEntries(opts.peers ?? [], opts.subnetLen)) byNet.set(e.net, e);

  let udpFd: number;
  let port: number;
  let ownSocket = false;
  if (opts.bind) {
    const s = openUdpSocket(parseIp(opts.bind.addr), opts.bind.port ?? DEFAULT_UDP_PORT, {
      rcvBuf: opts.bind.rcvBuf ?? 4 << 20,
      sndBuf: opts.bind.sndBuf ?? 4 << 20,
    });
    udpFd = s.fd;
    port = s.port;
    ownSocket = true;
    log.info("udp socket bound to {addr}:{port} (rcvbuf {rcv}, sndbuf {snd})", {
      addr: opts.bind.addr,
      port,
      rcv: s.rcvBuf,
      snd: s.sndBuf,
    });
  } else {
    udpFd = opts.udpFd!;
    port = localAddress(udpFd).port;
  }
  const peerPort = opts.peerPort ?? (opts.bind?.port ?? DEFAULT_UDP_PORT);

  const counters = newCounterBuffer();
  const ctl = newControlBuffer();
  const ctlView = new Int32Array(ctl);
  const handles: WorkerHandle[] = [];
  let running = true;

  let waiters: { gen: number; resolve: () => void }[] = [];
  const settleWaiters = () => {
    const done = (g: number) => !running || handles.every((h) => h.appliedGen >= g);
    for (const w of waiters) if (done(w.gen)) w.resolve();
    waiters = waiters.filter((w) => !done(w.gen));
  };

  const fail = (e: Error) => {
    if (!running) return;
    running = false;
    Atomics.store(ctlView, CTL.STOP, 1);
    for (const h of handles) signalEventFd(h.wakeFd);
    settleWaiters();
    onError(e);
  };

  const spawn = (role: "tx" | "rx"): Promise<WorkerHandle> => {
    const wakeFd = openEventFd();
    const worker = new Worker(WORKER_URL, { type: "module", name: `weft-udp-${role}` });
    let resolveStopped!: () => void;
    const stopped = new Promise<void>((r) => resolveStopped = r);
    const handle: WorkerHandle = { worker, wakeFd, stopped, appliedGen: gen };
    const started = new Promise<WorkerHandle>((resolve, reject) => {
      let ready = false;
      worker.onmessage = (ev: MessageEvent<{ type: string; message?: string; gen?: number }>) => {
        const m = ev.data;
        if (m.type === "ready") {
          ready = true;
          resolve(handle);
        } else if (m.type === "applied") {
          handle.appliedGen = m.gen!;
          settleWaiters();
        } else if (m.type === "error") {
          const err = new Error(`udp ${role} worker: ${m.message}`);
          if (ready) fail(err);
          else reject(err);
        } else if (m.type === "stopped") {
          resolveStopped();
        }
      };
      worker.onerror = (ev) => {
        ev.preventDefault();
        resolveStopped();
        const err = new Error(`udp ${role} worker crashed: ${ev.message}`);
        if (ready) fail(err);
        else reject(err);
      };
      const init: WorkerInit = {
        role,
        tunFd: opts.tunFd,
        udpFd,
        wakeFd,
        port: peerPort,
        subnetLen: opts.subnetLen,
        batchSize: opts.batchSize ?? 64,
        slotSize: opts.slotSize ?? 65536,
        pollMs,
        checkSource: opts.checkSource ?? true,
        gso: opts.udpGso ?? true,
        gro: opts.udpGro ?? true,
        vnetHdr: opts.vnetHdr ?? false,
        counters,
        ctl,
        gen,
        peers: [...byNet.values()],
      };
      worker.postMessage({ type: "init", ...init });
    });
    return withTimeout(started, START_TIMEOUT_MS, `starting the udp ${role} worker`).catch((e) => {
      worker.terminate();
      closeFd(wakeFd);
      throw e;
    });
  };

  const stopAll = async () => {
    running = false;
    settleWaiters();
    Atomics.store(ctlView, CTL.STOP, 1);
    for (const h of handles) signalEventFd(h.wakeFd);
    // A worker stuck in a syscall cannot answer; terminate() it after a bounded wait.
    await withTimeout(Promise.all(handles.map((h) => h.stopped)), STOP_TIMEOUT_MS, "stopping")
      .catch(() => {});
    for (const h of handles) {
      h.worker.terminate();
      closeFd(h.wakeFd);
    }
    handles.length = 0;
    if (ownSocket) closeFd(udpFd);
  };

  try {
    for (const role of ["tx", "rx"] as const) handles.push(await spawn(role));
  } catch (e) {
    await stopAll();
    throw e;
  }

  /** Posts peer message number gen+1 to every worker; resolves once all applied it. */
  const post = (msg: (gen: number) => Record<string, unknown>): Promise<void> => {
    if (!running) return Promise.resolve();
    const g = ++gen;
    const m = msg(g);
    for (const h of handles) h.worker.postMessage(m);
    // Bump after posting: a worker that sees the new number can await the message.
    Atomics.store(ctlView, CTL.PEER_GEN, g);
    for (const h of handles) signalEventFd(h.wakeFd);
    return new Promise<void>((resolve) => {
      waiters.push({ gen: g, resolve });
      settleWaiters();
    });
  };

  return {
    udpFd,
    port,
    get running() {
      return running;
    },
    setPeers(peers: Peer[]): Promise<void> {
      const entries = peerEntries(peers, opts.subnetLen);
      byNet = new Map(entries.map((e) => [e.net, e]));
      return post((g) => ({ type: "peers", gen: g, entries }));
    },
    updatePeers(remove: Peer[], add: Peer[]): Promise<void> {
      const rm = peerEntries(remove, opts.subnetLen);
      const ad = peerEntries(add, opts.subnetLen);
      for (const e of rm) byNet.delete(e.net);
      for (const e of ad) byNet.set(e.net, e);
      return post((g) => ({ type: "delta", gen: g, remove: rm, add: ad }));
    },
    counters: () => readCounters(new Float64Array(counters)),
    stop: async () => {
      if (handles.length === 0) return;
      await stopAll();
    },
  };
}
