/**
 * Worker entry of the udp packet loop: one instance per direction ("tx": TUN → UDP, "rx": UDP →
 * TUN). It loops in sync FFI, waiting in poll() (at most pollMs, and woken early through its
 * eventfd) and draining in batches. It yields to its event loop only when the control block says
 * a new peer table was posted, so the main thread's postMessage never competes with packets.
 *
 * Protocol (main → worker): `{type:"init", ...WorkerInit}` once, then `{type:"peers", gen,
 * entries}` (the whole table) and `{type:"delta", gen, remove, add}` (one change), applied in gen
 * order, none skipped. Worker → main: `{type:"ready"}`, `{type:"applied", gen}` (that peer table is in
 * use), `{type:"error", message}`, `{type:"stopped"}`.
 *
 * @example
 * ```ts
 * const w = new Worker(new URL("./worker.ts", import.meta.url), { type: "module" });
 * w.postMessage({ type: "init", role: "tx", tunFd, udpFd, wakeFd, ... });
 * ```
 */
/// <reference lib="deno.worker" />
import { drainEventFd, POLLERR, POLLIN, POLLNVAL, PollSet } from "../../../ffi/libc/mod.ts";
import { Deadline, sleep } from "../../base/async.ts";
import { CTL } from "./counters.ts";
import { type PeerEntry, PeerTable } from "./peers.ts";
import { TunToUdp } from "./tun_to_udp.ts";
import { UdpToTun } from "./udp_to_tun.ts";

export interface WorkerInit {
  role: "tx" | "rx";
  tunFd: number;
  udpFd: number;
  wakeFd: number;
  port: number;
  subnetLen: number;
  batchSize: number;
  slotSize: number;
  pollMs: number;
  checkSource: boolean;
  gso: boolean;
  gro: boolean;
  vnetHdr: boolean;
  counters: SharedArrayBuffer;
  ctl: SharedArrayBuffer;
  gen: number;
  peers: PeerEntry[];
}

type PeerMsg =
  | { type: "peers"; gen: number; entries: PeerEntry[] }
  | { type: "delta"; gen: number; remove: PeerEntry[]; add: PeerEntry[] };
type InMsg = ({ type: "init" } & WorkerInit) | PeerMsg;

/** Peer messages not applied yet, in the order posted (= gen order). */
let pending: PeerMsg[] = [];
let wakeWaiter: (() => void) | null = null;

self.onmessage = (ev: MessageEvent<InMsg>) => {
  const m = ev.data;
  if (m.type === "init") {
    // Leave the message handler first; the loop below only returns when stopped.
    setTimeout(() => void main(m), 0);
  } else if (m.type === "peers" || m.type === "delta") {
    pending.push(m);
    wakeWaiter?.();
  }
};

/** Waits (bounded) until the peers message numbered `gen` or later has arrived. */
async function awaitPeers(gen: number): Promise<void> {
  const deadline = new Deadline(1000, () => performance.now());
  while ((pending.at(-1)?.gen ?? -1) < gen && !deadline.expired()) {
    // A peers message ends the poll early; sleep leaves no timer behind.
    const wake = new AbortController();
    wakeWaiter = () => wake.abort();
    await sleep(20, wake.signal);
    wakeWaiter = null;
  }
}

async function main(init: WorkerInit): Promise<void> {
  try {
    await run(init);
  } catch (e) {
    self.postMessage({ type: "error", message: (e as Error).message ?? String(e) });
  }
  self.postMessage({ type: "stopped" });
  self.close();
}

async function run(init: WorkerInit): Promise<void> {
  const ctl = new Int32Array(init.ctl);
  const counters = new Float64Array(init.counters);
  const table = new PeerTable(init.subnetLen);
  table.replace(init.peers);
  let gen = init.gen;
  const opts = {
    tunFd: init.tunFd,
    udpFd: init.udpFd,
    port: init.port,
    table,
    counters,
    batchSize: init.batchSize,
    slotSize: init.slotSize,
    vnetHdr: init.vnetHdr,
  };
  const pump = init.role === "tx"
    ? new TunToUdp({ ...opts, gso: init.gso })
    : new UdpToTun({ ...opts, checkSource: init.checkSource, gro: init.gro });
  const dataFd = init.role === "tx" ? init.tunFd : init.udpFd;
  const ps = new PollSet([dataFd, init.wakeFd], POLLIN);
  const batch = init.batchSize;
  self.postMessage({ type: "ready" });

  let idle = true;
  while (Atomics.load(ctl, CTL.STOP) === 0) {
    const want = Atomics.load(ctl, CTL.PEER_GEN);
    if (want !== gen) {
      await awaitPeers(want);
      const msgs = pending;
      pending = [];
      let changed = false;
      for (const m of msgs) {
        if (m.gen <= gen) continue; // already in the table init came with
        if (m.type === "peers") table.replace(m.entries);
        else table.update(m.remove, m.add);
        gen = m.gen;
        changed = true;
      }
      if (changed) self.postMessage({ type: "applied", gen });
      continue;
    }
    if (idle) {
      if (ps.wait(init.pollMs) === 0) continue;
      if (ps.revents(1) & POLLIN) drainEventFd(init.wakeFd);
      const ev = ps.revents(0);
      if (ev & POLLNVAL) {
        throw new Error(
          `${init.role === "tx" ? "TUN" : "udp socket"} fd ${dataFd} was closed under the ` +
            "forwarder; stop the forwarder before closing its fds",
        );
      }
      if (!(ev & (POLLIN | POLLERR))) continue;
    }
    idle = pump.step() < batch;
  }
}
