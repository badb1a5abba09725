/**
 * The agent: wires config, external interface, backend, lease, peer watch, subnet.env, renewals
 * and the periodic self-checks together. Side effects live in the backend and the parts
 * (iptables, blackhole route: {@link Part}); this module only orders them, owns their lifecycle
 * (apply on every lease, periodic checks, stop) and keeps the readiness state that /readyz
 * reports. The steps are their own modules: start-up before the lease (startup.ts), registry
 * retries (retry.ts), the parts (parts_apply.ts), subnet.env (subnet_env_writer.ts), peer events
 * and reconciles (peer_sync.ts), the periodic loop (self_checks.ts).
 *
 * @example
 * ```ts
 * const agent = new Agent(registry, { ...opts, parts: [blackholePart, iptablesPart] });
 * const ctl = new AbortController();
 * await agent.run(ctl.signal); // returns after ctl.abort(), leaving lease and datapath in place
 * ```
 */
import { getLogger } from "@logtape/logtape";
import type { Backend } from "../backend/backend.ts";
import { type Part, runChecks } from "../backend/part.ts";
import { type Lease, leaseSubnetText } from "../lease/codec.ts";
import { LeaseManager } from "../lease/manager.ts";
import { PeerWatcher } from "../lease/watch.ts";
import type { IfaceSelection } from "../net/iface.ts";
import type { Registry } from "../registry/contract/registry.ts";
import { type Readiness, ReadinessState } from "./readiness.ts";
import { PeerFilter } from "./peer_filter.ts";
import { readSubnetEnvHints } from "../config/subnet_env.ts";
import { PeerHealth } from "./peer_health.ts";
import { HeapTrim } from "./heap_trim.ts";
import { type AgentStatus, errorViews, leaseView, peerViews } from "./status.ts";
import { recentProblems } from "../base/recent_log.ts";
import { startUp } from "./startup.ts";
import { retryRegistry } from "./retry.ts";
import { PartsApplier } from "./parts_apply.ts";
import { SubnetEnvWriter } from "./subnet_env_writer.ts";
import { applyPeerEvents, reconcilePeers } from "./peer_sync.ts";
import { datapathRepairs, selfChecks } from "./self_checks.ts";

const log = getLogger(["weft", "agent"]);

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
  #state = new ReadinessState();
  /** Gives the parts each lease (and the previous one). */
  #partsApply = new PartsApplier(this.#state);
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
      datapathRepairs: datapathRepairs(),
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
    const started = await startUp(this.registry, this.opts, signal);
    if (!started) return;
    const { cfg, backend, ext, address } = started;
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
    const previous = await retryRegistry(
      signal,
      "read leases",
      () => mgr.findPrevious(address, { hint, hint6, nodeId }),
    );
    if (signal.aborted) return;
    const prepared = await backend.prepare({ config: cfg, ext, previous: previous ?? null });
    const lease = await retryRegistry(
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
    await this.#partsApply.apply(this.#parts, cfg, lease);
    // subnet.env follows the lease. A failed write (directory read-only or full) is named by
    // /readyz and retried by the self-checks, never fatal: the datapath works meanwhile.
    const env = new SubnetEnvWriter(
      this.#state,
      { file: this.opts.subnetFile, ipMasq: this.opts.ipMasq },
      cfg,
      prepared.mtu,
    );
    await env.write(lease).catch(() => {}); // retried by selfChecks
    log.info("subnet {subnet} leased{wrote} (MTU {mtu})", {
      subnet: leaseSubnetText(lease),
      wrote: this.#state.subnetEnv ? `; wrote ${this.opts.subnetFile}` : "",
      mtu: prepared.mtu,
    });

    const reconcile = (peers: Lease[]) => reconcilePeers(backend, peers, this.#heapTrim);
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
        await reconcile(peers);
        log.info("datapath reconciled with {n} peers", { n: peers.length });
        this.#markSynced();
      },
      events: (evs, at) => applyPeerEvents(backend, evs, at),
      ownDeleted: (rev) => mgr.notifyDeleted(rev),
      ownWritten: (attrs, rev) => mgr.observeOwnWrite(attrs, rev),
      // From the list the acquisition read: a joining node reads every lease once, not twice.
    }, mgr.takeListed()));
    // The lease-change apply path: a renewed or re-acquired lease reaches every layer in order.
    tasks.push(mgr.runRenewal(signal, async (l) => {
      await backend.start(l);
      await this.#partsApply.apply(this.#parts, cfg, l);
      await env.write(l);
      // Never reconcile before the first list: an empty peer set would wipe every route.
      if (watcher.listed) await reconcile(watcher.takePeers());
    }));
    tasks.push(selfChecks(signal, {
      backend,
      watcher,
      state: this.#state,
      heapTrim: this.#heapTrim,
      reconcileIntervalMs: this.opts.reconcileIntervalMs,
      retryEnv: () => env.write(mgr.lease ?? lease),
      reconcile,
      markSynced: () => this.#markSynced(),
      notifyReady: () => this.#notifyReady(),
    }));
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
}
