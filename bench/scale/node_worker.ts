/**
 * One Worker of the scale benchmark: `count` simulated nodes, each weft's real LeaseManager
 * (acquire, then renewal) and PeerWatcher, no datapath. On Deno KV the Worker's nodes share one
 * registry handle (a KV client is a file handle; each node still runs its own watch loop). On etcd
 * each node has its own client (its own gRPC connection), as real agents do, or with
 * `etcdClients: "worker"` the Worker's nodes share one client: one HTTP/2 connection and the
 * client's memory of lease expiries it granted. Every node still makes its own calls (lists,
 * creates, renewals) and opens its own watch stream, so etcd serves the same requests and
 * watchers; what is saved is ~1.1 MiB and one TCP connection per node.
 *
 * Nodes start in waves when `waveSize` > 0: node i waits floor(i / waveSize) × `waveIntervalMs`.
 *
 * Messages in: `start` (a {@link NodeSpec}), `report`, `renewals`, `stop`. Messages out: `progress` (one node leased), `leased` (per node:
 * key, ms to acquire, lease expiry), `listed` (each watcher holds all N − 1 other leases), `seen` (per
 * probe key: epoch ms each watcher saw it), `renewals` (each node's next renewal
 * as its renewal loop scheduled it, epoch ms), `stopped`, `error`.
 */
/// <reference lib="deno.worker" />
import { openEtcdRegistry } from "../../src/registry/etcd/mod.ts";
import { openKvRegistry } from "../../src/registry/kv/mod.ts";
import type { Registry } from "../../src/registry/contract/registry.ts";
import { LeaseManager } from "../../src/lease/manager.ts";
import { PeerWatcher } from "../../src/lease/watch.ts";
import { parseNetworkConfig } from "../../src/config/network.ts";
import { nowMs } from "../lib/sys.ts";
import { Backoff, sleep } from "../../src/base/async.ts";
import { FatalError } from "../../src/base/errors.ts";
import { metrics } from "../../src/base/metrics.ts";
import type { KnownLease, Lease } from "../../src/lease/codec.ts";
import { LeaseDecoder } from "../../src/lease/decode.ts";
import type { RegistryLease, WatchedExpiry } from "../../src/registry/contract/registry.ts";
import { configure, getConsoleSink } from "@logtape/logtape";

// WEFT_SCALE_LOG=warning (or info, debug): the nodes' own log lines on stderr, to see why.
const logLevel = Deno.env.get("WEFT_SCALE_LOG");
if (logLevel) {
  await configure({
    sinks: { console: getConsoleSink() },
    loggers: [
      { category: ["weft"], sinks: ["console"], lowestLevel: logLevel as "warning" },
      { category: ["logtape", "meta"], sinks: [], lowestLevel: "error" },
    ],
  });
}

export interface NodeSpec {
  kind: "kv" | "etcd";
  /** KV file, or etcd endpoint. */
  where: string;
  prefix: string;
  netConfig: string;
  /** Index of this Worker's first node (public IP 198.18.<1 + i/250>.<i%250 + 1>). */
  first: number;
  count: number;
  ttlSeconds: number;
  renewMarginMs: number;
  /** etcd: one client per node (as real agents) or one per Worker shared by its nodes. */
  etcdClients: "node" | "worker";
  /** Nodes per start wave (0: all at once) and the delay between waves. */
  waveSize: number;
  waveIntervalMs: number;
  /** Keys of the probe leases (their arrival at every watcher is timed). */
  probeKeys: string[];
  /** etcd: deadline of one unary call, ms (the agent's default: 10 000). */
  callTimeoutMs: number;
  /**
   * Nodes of this Worker acquiring, and watchers making their first list, at once (0: all). The
   * Worker's nodes share one thread: 250 lists of 5000 leases decoded together starve it for
   * tens of seconds, past gRPC's call deadline and keepalive (calls fail and are retried with
   * yet another list; the connection is dropped and every watch on it restarts), where real
   * agents each list on their own CPU.
   */
  listConcurrency: number;
  /** Nodes in the whole run: a watcher has caught up when it holds the N − 1 others' leases. */
  total: number;
  /**
   * How each node's watcher starts, right after its lease as the agent's: from the list its
   * acquisition read (`acquired`, the agent's) or with a list of its own (`list`, before).
   */
  watchStart: "acquired" | "list";
  /**
   * The Worker's nodes share their decoded leases (`shareDecoded`): a lease decoded once per
   * Worker at one revision, every watcher and manager of the Worker holding that one object.
   * Decoding stays weft's (`LeaseDecoder.decode`, memoised per Worker by key, revision and
   * expiry); what changes is the simulation's memory, which otherwise holds N² leases (every
   * watcher each other node's lease: 19–26 GiB at N=5000), and its JSON parsing.
   */
  shareDecoded: boolean;
}

/** At most `n` holders at once (n ≤ 0: no limit). */
class Gate {
  #waiting: (() => void)[] = [];
  constructor(private free: number) {
    if (free <= 0) this.free = Infinity;
  }
  async take(): Promise<void> {
    while (this.free <= 0) await new Promise<void>((r) => this.#waiting.push(r));
    this.free--;
  }
  give(): void {
    this.free++;
    this.#waiting.shift()?.();
  }
}

/** weft's own counters of this Worker's nodes: watch restarts, KV commit and list conflicts. */
function counters(): Record<string, number> {
  const out: Record<string, number> = {};
  for (const l of metrics.render().split("\n")) {
    const m = l.match(/^(weft_etcd_watch_restarts_total|weft_registry_kv_\w+_total) (\S+)$/);
    if (m) out[m[1]] = Number(m[2]);
  }
  return out;
}

const ctl = new AbortController();
const regs: Registry[] = [];
const seen = new Map<string, number[]>();
const tasks: Promise<unknown>[] = [];
const managers: LeaseManager[] = [];
let retries = 0;
/** Watchers of this Worker holding every other node's lease. */
let caughtUp = 0;

function publicIP(i: number): string {
  return `198.18.${1 + Math.floor(i / 250)}.${(i % 250) + 1}`;
}

/**
 * Memoises `LeaseDecoder.decode` for this Worker (see NodeSpec.shareDecoded): the same key,
 * revision and expiry give the same Lease object to every node of the Worker. Leases are never
 * mutated by weft (a new expiry makes a new object), so sharing them is safe.
 */
function shareDecodedLeases() {
  const decode = LeaseDecoder.prototype.decode;
  const decoded = new Map<string, Lease>();
  LeaseDecoder.prototype.decode = function <E extends WatchedExpiry>(
    this: LeaseDecoder,
    r: RegistryLease<E>,
  ): Lease<E> | null {
    const had = decoded.get(r.key);
    if (had && had.revision === r.revision && had.expiresAt === r.expiresAt) return had as Lease<E>;
    const l = decode.call(this, r) as Lease<E> | null;
    if (l) decoded.set(r.key, l);
    return l;
  };
}

async function start(spec: NodeSpec) {
  if (spec.shareDecoded) shareDecodedLeases();
  const cfg = parseNetworkConfig(spec.netConfig);
  const gate = new Gate(spec.listConcurrency);
  const probes = new Set(spec.probeKeys);
  const open = () =>
    spec.kind === "kv"
      ? openKvRegistry({ path: spec.where, prefix: spec.prefix })
      : openEtcdRegistry({
        endpoints: [spec.where],
        prefix: spec.prefix,
        callTimeoutMs: spec.callTimeoutMs,
      });
  const shared = spec.kind === "kv" || spec.etcdClients === "worker" ? await open() : null;
  if (shared) regs.push(shared);
  const nodes = await Promise.all(Array.from({ length: spec.count }, async (_, j) => {
    const i = spec.first + j;
    if (spec.waveSize > 0) await sleep(Math.floor(i / spec.waveSize) * spec.waveIntervalMs);
    const reg = shared ?? await open();
    if (!shared) regs.push(reg);
    // The agent's own options: its default number of create races before giving up.
    const mgr = new LeaseManager(reg, cfg, {
      ttlSeconds: spec.ttlSeconds,
      renewMarginMs: spec.renewMarginMs,
    });
    const t0 = nowMs();
    // As the agent does: registry errors (a busy KV file, an etcd hiccup, too many lost races)
    // are retried with backoff.
    const backoff = new Backoff(200);
    let lease: KnownLease | null = null;
    await gate.take();
    while (!lease) {
      try {
        // As the agent starts: its previous lease first (for the backend), then the acquisition.
        await mgr.findPrevious(publicIP(i));
        lease = await mgr.acquire(
          { publicIP: publicIP(i), backendType: "alloc" },
          null,
        );
      } catch (e) {
        if (e instanceof FatalError) throw e;
        retries++;
        await sleep(backoff.next());
      }
    }
    gate.give();
    self.postMessage({ type: "progress" });
    // As the agent: the watcher right after the lease, from the acquisition's list or its own.
    const start = spec.watchStart === "acquired" ? mgr.takeListed() : null;
    if (!start) await gate.take();
    watchPeers(reg, mgr, start, () => {
      if (!start) gate.give();
    });
    return { reg, mgr, lease, ms: nowMs() - t0 };
  }));
  self.postMessage({
    type: "leased",
    nodes: nodes.map((n) => ({ key: n.lease.key, ms: n.ms, expiresAt: n.lease.expiresAt })),
    retries,
  });

  /**
   * One node's watcher and renewal loop. `listed` once its first view is in; the Worker reports
   * `listed` when each of its watchers holds all N − 1 other nodes' leases (caught up).
   */
  function watchPeers(
    reg: Registry,
    mgr: LeaseManager,
    start: ReturnType<LeaseManager["takeListed"]>,
    listed: () => void,
  ) {
    const w = new PeerWatcher(reg, { ownKey: () => mgr.lease?.key ?? null, accept: () => true });
    let known = 0, done = false;
    const check = () => {
      if (done || known < spec.total - 1) return;
      done = true;
      if (++caughtUp === spec.count) self.postMessage({ type: "listed" });
    };
    tasks.push(w.run(ctl.signal, {
      initial: (peers) => {
        listed();
        known = peers.length;
        check();
      },
      events: (evs) => {
        const at = nowMs();
        for (const e of evs) {
          known += e.type === "added" ? 1 : -1;
          if (e.type !== "added" || !probes.has(e.lease.key)) continue;
          const l = seen.get(e.lease.key) ?? [];
          l.push(at);
          seen.set(e.lease.key, l);
        }
        check();
      },
      ownDeleted: (rev) => mgr.notifyDeleted(rev),
      ownWritten: (attrs) => mgr.observeOwnWrite(attrs),
    }, start));
    tasks.push(mgr.runRenewal(ctl.signal, () => {}));
    managers.push(mgr);
  }
}

self.onmessage = async (e: MessageEvent) => {
  const m = e.data;
  try {
    if (m.type === "start") await start(m.spec as NodeSpec);
    else if (m.type === "report") self.postMessage({ type: "seen", seen: [...seen] });
    else if (m.type === "renewals") {
      self.postMessage({ type: "renewals", at: managers.map((x) => x.nextRenewalAt) });
    } else if (m.type === "stop") {
      ctl.abort();
      await Promise.allSettled(tasks);
      await Promise.allSettled(regs.map((r) => r.close()));
      self.postMessage({ type: "stopped", counters: counters() });
    }
  } catch (err) {
    self.postMessage({ type: "error", error: String((err as Error).stack ?? err) });
  }
};
