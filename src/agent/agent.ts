/**
 * The agent: wires config, external interface, backend, lease, peer watch, subnet.env, renewals
 * and the periodic self-checks together. Side effects live in the backend and the parts
 * (iptables, blackhole route: {@link Part}); this module only orders them, owns their lifecycle
 * (apply on every lease, periodic checks, stop) and keeps the readiness state that /readyz
 * reports.
 *
 * @example
 * ```ts
 * const agent = new Agent(registry, { ...opts, parts: [blackholePart, iptablesPart] });
 * const ctl = new AbortController();
 * await agent.run(ctl.signal); // returns after ctl.abort(), leaving lease and datapath in place
 * ```
 */
import { getLogger } from "@logtape/logtape";
import type { NetworkConfig } from "../config/network.ts";
import type { Backend } from "../backend/backend.ts";
import { type Part, runChecks } from "../backend/part.ts";
import { PeerFailuresError } from "../backend/peer_errors.ts";
import { checkUnderlayOverlap, checkUnderlayOverlap6 } from "../backend/routes.ts";
import { Backoff, sleep } from "../base/async.ts";
import { FatalError } from "../base/errors.ts";
import { checkFamilies, createBackend } from "./select_backend.ts";
import { formatCidr6 } from "../base/ipv6.ts";
import { type Lease, leaseAddressText, leaseSubnetText } from "../lease/codec.ts";
import { LeaseManager } from "../lease/manager.ts";
import { type PeerEvent, PeerWatcher } from "../lease/watch.ts";
import { formatCidr } from "../base/ipv4.ts";
import { type IfaceSelection, selectExternalInterface } from "../net/iface.ts";
import type { Registry } from "../registry/contract/registry.ts";
import { metrics } from "../base/metrics.ts";
import { type Readiness, ReadinessState } from "./readiness.ts";
import { PeerFilter } from "./peer_filter.ts";
import { loadNetworkConfig } from "./netconfig.ts";
import { readSubnetEnvHints, writeSubnetEnv } from "../config/subnet_env.ts";
import { PeerHealth } from "./peer_health.ts";
import { HeapTrim } from "./heap_trim.ts";
import { type AgentStatus, errorViews, leaseView, peerViews } from "./status.ts";
import { recentProblems } from "../base/recent_log.ts";

const log = getLogger(["weft", "agent"]);

const applied = metrics.counter(
  "weft_peer_events_applied_total",
  "Peer lease events applied to the datapath.",
);
const applyErrors = metrics.counter(
  "weft_peer_apply_errors_total",
  "Datapath updates for peer events that failed (repaired by the next reconciliation).",
);
const applyLatency = metrics.histogram(
  "weft_peer_apply_latency_seconds",
  "Time from receiving a peer lease change to its datapath entries being in place.",
  [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
);
const repairs = metrics.counter(
  "weft_datapath_repairs_total",
  "Times a self-check found the datapath damaged (device deleted, route removed) and repaired it.",
);

export interface AgentOptions {
  netConfigPath?: string;
  /** Use this backend instead of the config's Backend.Type. */
  backendOverride?: string;
  iface: IfaceSelection;
  subnetFile: string;
  ttlSeconds: number;
  renewMarginMs: number;
  ipMasq: boolean;
  reconcileIntervalMs: number;
  /**
   * This host's identity (`WeftNodeID` in its lease), kept across restarts: tells this host,
   * restarted, from another host publishing the same public IP. Without it that is not detected.
   */
  nodeId?: string;
  /**
   * Parts kept in line with the own lease (blackhole route, iptables rules), applied in the order
   * given. A part failing to apply the first lease stops the agent.
   */
  parts?: Part[];
  /** Called once, when the agent first becomes ready (sd_notify READY=1). */
  onReady?: () => void;
  /**
   * Continuous peer probes (peer_health.ts); off when absent, interval 0 or backend alloc.
   */
  peerProbe?: { intervalMs: number; maxPerRound: number };
}

export class Agent {
  #lease: LeaseManager | null = null;
  #backend: Backend | null = null;
  #watcher: PeerWatcher | null = null;
  /** The lease the parts were last given (their `prev` on the next apply). */
  #partsLease: Lease | null = null;
  #state = new ReadinessState();
  /** Writes subnet.env for the current lease again (set once the first lease is held). */
  #retryEnv: (() => Promise<void>) | null = null;
  #readyNotified = false;
  #health: PeerHealth | null = null;
  /** Returns the C heap a full reconcile left fragmented (see heap_trim.ts). */
  #heapTrim = new HeapTrim();

  constructor(readonly registry: Registry, readonly opts: AgentOptions) {}

  /** Readiness for /readyz: lease held, subnet.env written, peers programmed, datapath sound. */
  readiness(): Readiness {
    return this.#state.report({
      leaseLost: this.#lease?.lost ?? false,
      conflict: this.#lease?.conflict ?? this.registry.problem?.() ?? null,
      parts: this.#parts,
    });
  }

  get #parts(): Part[] {
    return this.opts.parts ?? [];
  }

  get lease(): Lease | null {
    return this.#lease?.lease ?? null;
  }

  get backend(): Backend | null {
    return this.#backend;
  }

  /** Peers the agent currently knows. */
  peers(): Lease[] {
    return this.#watcher?.peers() ?? [];
  }

  /** What /status reports (read-only): lease, readiness, peers and their probes, problems. */
  status(): AgentStatus {
    const l = this.lease;
    const probe = this.#health?.opts;
    return {
      backend: this.#backend?.name ?? null,
      lease: l && leaseView(l),
      readiness: this.readiness(),
      peerProbes: probe
        ? { intervalSeconds: probe.intervalMs / 1000, maxPerRound: probe.maxPerRound }
        : null,
      peers: peerViews(this.peers(), this.#health?.status() ?? []),
      datapathRepairs: repairs.get(),
      lastErrors: errorViews(recentProblems.list()),
    };
  }

  /**
   * Runs until `signal` aborts. Throws for errors an operator must fix (bad config, no
   * interface, out of subnets); registry outages are retried, never fatal once running.
   * Stops the parts before it returns.
   */
  async run(signal: AbortSignal): Promise<void> {
    try {
      await this.#run(signal);
    } finally {
      await Promise.all(this.#parts.map((p) => p.stop()));
    }
  }

  async #run(signal: AbortSignal): Promise<void> {
    const cfg = await loadNetworkConfig(this.registry, this.opts.netConfigPath, signal);
    if (!cfg) return;
    const backendName = this.opts.backendOverride || cfg.backendType;
    const backend = await createBackend(backendName);
    checkFamilies(cfg, backend); // before anything is chosen or written
    const v4 = cfg.enableIPv4;
    const ext = await selectExternalInterface({
      ...this.opts.iface,
      ipv6: cfg.enableIPv6,
      ipv4: v4,
    });
    // Else underlay routes would look like weft's, in either family.
    if (v4) checkUnderlayOverlap(cfg.network, ext);
    if (cfg.ipv6) checkUnderlayOverlap6(cfg.ipv6.network, ext);
    // The address that tells this node's lease apart: PublicIPv6 when IPv6-only.
    const address = v4 ? ext.publicIP : ext.publicIPv6!;
    if (v4) {
      log.info("using interface {name} ({addr}), public IP {pub}, backend {b}, network {net}", {
        name: ext.name,
        addr: ext.ifaceAddr,
        pub: ext.publicIP,
        b: backendName,
        net: formatCidr(cfg.network),
      });
    }
    if (cfg.ipv6) {
      log.info("{what}interface {name} ({addr}), public IPv6 {pub}, backend {b}, network {net}", {
        what: v4 ? "IPv6: " : "IPv6-only: ",
        name: ext.name,
        addr: ext.ifaceAddr6,
        pub: ext.publicIPv6,
        b: backendName,
        net: formatCidr6(cfg.ipv6.network),
      });
    }
    this.#backend = backend;
    const mgr = new LeaseManager(this.registry, cfg, {
      ttlSeconds: this.opts.ttlSeconds,
      renewMarginMs: this.opts.renewMarginMs,
    });
    this.#lease = mgr;
    const { subnet: hint, subnet6: hint6 = null } = await readSubnetEnvHints(
      this.opts.subnetFile,
    );
    const nodeId = this.opts.nodeId;
    const previous = await this.#retry(
      signal,
      "read leases",
      () => mgr.findPrevious(address, { hint, hint6, nodeId }),
    );
    if (signal.aborted) return;
    const prepared = await backend.prepare({ config: cfg, ext, previous: previous ?? null });
    const lease = await this.#retry(
      signal,
      "acquire a lease",
      () =>
        mgr.acquire(
          { publicIP: ext.publicIP, publicIPv6: ext.publicIPv6 ?? null, ...prepared.attrs, nodeId },
          hint,
          signal,
          hint6,
        ),
    );
    if (!lease) return;
    this.#state.lease = true;
    await backend.start(lease);
    await this.#applyParts(cfg, lease);
    // subnet.env follows the lease. A failed write (directory read-only or full) is named by
    // /readyz and retried by the self-checks, never fatal: the datapath works meanwhile.
    const writeEnv = async (l: Lease) => {
      try {
        await writeSubnetEnv(this.opts.subnetFile, {
          network: cfg.network,
          subnet: l.subnet,
          ...(cfg.ipv6 && l.subnet6
            ? { ipv6: { network: cfg.ipv6.network, subnet: l.subnet6 } }
            : {}),
          mtu: prepared.mtu,
          ipMasq: this.opts.ipMasq,
        });
      } catch (e) {
        const was = this.#state.subnetEnvError;
        this.#state.subnetEnvError = (e as Error).message;
        if (was !== this.#state.subnetEnvError) {
          log.error("{error}; not ready, retrying every 5 s", { error: (e as Error).message });
        }
        throw e;
      }
      if (this.#state.subnetEnvError) {
        log.info("wrote {file} again", { file: this.opts.subnetFile });
      }
      this.#state.subnetEnvError = "";
      this.#state.subnetEnv = true;
    };
    this.#retryEnv = () => writeEnv(mgr.lease ?? lease);
    await writeEnv(lease).catch(() => {}); // retried by #selfChecks
    log.info("subnet {subnet} leased{wrote} (MTU {mtu})", {
      subnet: leaseSubnetText(lease),
      wrote: this.#state.subnetEnv ? `; wrote ${this.opts.subnetFile}` : "",
      mtu: prepared.mtu,
    });

    const filter = new PeerFilter(cfg, backend.name, address);
    const watcher = new PeerWatcher(this.registry, {
      ipv6: cfg.enableIPv6,
      ownKey: () => mgr.lease?.key ?? null,
      accept: (l) => filter.accept(l),
    });
    this.#watcher = watcher;
    const tasks: Promise<void>[] = [];
    tasks.push(watcher.run(signal, {
      initial: async (peers) => {
        await this.#reconcile(backend, peers);
        log.info("datapath reconciled with {n} peers", { n: peers.length });
        this.#markSynced();
      },
      events: (evs, at) => this.#apply(backend, evs, at),
      ownDeleted: (rev) => mgr.notifyDeleted(rev),
      ownWritten: (attrs, rev) => mgr.observeOwnWrite(attrs, rev),
    }));
    tasks.push(mgr.runRenewal(signal, async (l) => {
      await backend.start(l);
      await this.#applyParts(cfg, l);
      await writeEnv(l);
      // Never reconcile before the first list: an empty peer set would wipe every route.
      if (watcher.listed) await this.#reconcile(backend, watcher.takePeers());
    }));
    tasks.push(this.#selfChecks(signal, backend, watcher));
    const probe = this.opts.peerProbe;
    // ICMP to a peer's IPv4 overlay address, or ICMPv6 to its IPv6 one for IPv6-only leases.
    if (probe && probe.intervalMs > 0 && backend.name !== "alloc") {
      this.#health = new PeerHealth({
        ...probe,
        backend: backend.name,
        underlayCheck: true,
        peers: () => watcher.peers(),
      });
      tasks.push(this.#health.run(signal));
    }
    for (const p of this.#parts) tasks.push(runChecks(p, signal));
    await Promise.all(tasks);
  }

  /**
   * Gives every part the lease, in order. A part that throws stays not ready (named by /readyz)
   * and the error propagates: fatal at start, retried by the lease manager after a change.
   */
  async #applyParts(cfg: NetworkConfig, lease: Lease) {
    const prev = this.#partsLease;
    for (const p of this.#parts) {
      try {
        await p.apply(cfg, lease, prev);
        this.#state.partsApplied.add(p);
      } catch (e) {
        this.#state.partsApplied.delete(p);
        throw e;
      }
    }
    this.#partsLease = lease;
  }

  async #apply(backend: Backend, evs: PeerEvent[], at: number) {
    try {
      await backend.apply(evs);
      applied.inc(evs.length);
      const s = (performance.now() - at) / 1000;
      for (let i = 0; i < evs.length; i++) applyLatency.observe(s);
      for (const e of evs) {
        log.info("peer {what} {subnet} at {ip}", {
          what: e.type,
          subnet: leaseSubnetText(e.lease),
          ip: leaseAddressText(e.lease),
        });
      }
    } catch (e) {
      applyErrors.inc(evs.length);
      log.error("could not program {n} peer change(s): {error}; the next reconciliation retries", {
        n: evs.length,
        error: (e as Error).message,
      });
    }
  }

  /**
   * Reconciles the backend with `peers`. Peers that could not be programmed are logged and
   * counted and do not fail the whole (one unreachable peer must not keep a node unready);
   * the next reconciliation retries them. Other errors (device gone) are thrown.
   */
  async #reconcile(backend: Backend, peers: Lease[]) {
    this.#heapTrim.burst();
    try {
      await backend.reconcile(peers);
    } catch (e) {
      if (!(e instanceof PeerFailuresError)) throw e;
      applyErrors.inc(e.count);
      log.warn("{error}; retried at the next reconciliation", { error: e.message });
    }
  }

  #markSynced() {
    if (this.#state.peersSynced) return;
    this.#state.peersSynced = true;
    this.#notifyReady();
  }

  /** Calls onReady the first time the agent is ready (sd_notify READY=1 is sent once). */
  #notifyReady() {
    if (this.#readyNotified || !this.readiness().ok) return;
    this.#readyNotified = true;
    this.opts.onReady?.();
  }

  /**
   * Device checks every 5 s; every reconcile interval a fresh list of the registry and a full
   * reconcile against it, which repairs anything a missed event or a manual change left.
   */
  async #selfChecks(signal: AbortSignal, backend: Backend, watcher: PeerWatcher) {
    let lastFull = Date.now();
    while (!signal.aborted) {
      await sleep(5000, signal);
      this.#heapTrim.tick();
      if (this.#state.subnetEnvError) {
        await this.#retryEnv?.().then(() => this.#notifyReady(), () => {});
      }
      // Never reconcile before the first list: an empty peer set would wipe every route.
      if (signal.aborted || !watcher.listed) continue;
      try {
        if (!this.#state.peersSynced) {
          await this.#reconcile(backend, watcher.takePeers());
          lastFull = Date.now();
          this.#markSynced();
        }
        if (backend.check && await backend.check()) {
          repairs.inc();
          log.warn("datapath was damaged (device or entries removed); repaired");
        }
        this.#state.datapathBroken = "";
      } catch (e) {
        this.#state.datapathBroken = `datapath self-check failed: ${(e as Error).message}`;
        log.error("{msg}; retrying in 5 s", { msg: this.#state.datapathBroken });
        continue;
      }
      if (Date.now() - lastFull < this.opts.reconcileIntervalMs) continue;
      lastFull = Date.now();
      try {
        if (await watcher.relist()) await this.#reconcile(backend, watcher.takePeers());
      } catch (e) {
        // The registry may be down: the datapath stays as it is and the next interval retries.
        log.debug("periodic reconciliation skipped: {error}", { error: (e as Error).message });
      }
    }
  }

  /**
   * Retries an operation on registry errors until it succeeds or the agent stops. Errors an
   * operator must act on (out of subnets, bad config) are thrown at once.
   */
  async #retry<T>(signal: AbortSignal, what: string, fn: () => Promise<T>): Promise<T | undefined> {
    const backoff = new Backoff(200);
    while (!signal.aborted) {
      try {
        return await fn();
      } catch (e) {
        if (e instanceof FatalError) throw e;
        if (signal.aborted) break;
        const ms = backoff.next();
        log.warn("cannot {what}: {error}; retrying in {ms} ms", {
          what,
          error: (e as Error).message,
          ms,
        });
        await sleep(ms, signal);
      }
    }
    return undefined;
  }
}
