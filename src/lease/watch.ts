/**
 * The peer view: lists all leases, then follows the registry's watch, and turns both into
 * added/removed peer events for the backend. Snapshots (after compaction) are diffed against what
 * was known, so a re-list never replays or loses a peer. The initial list is retried until it
 * succeeds (flannel gave up on it and never learned its peers).
 *
 * @example
 * ```ts
 * const w = new PeerWatcher(registry, { ownKey: () => mgr.lease?.key ?? null, accept: (l) => true });
 * await w.run(signal, {
 *   initial: (peers) => backend.reconcile(peers),
 *   events: (evs) => backend.apply(evs),
 *   ownDeleted: () => mgr.notifyLost(),
 *   ownWritten: (attrs) => mgr.observeOwnWrite(attrs),
 * });
 * ```
 */
import { getLogger } from "@logtape/logtape";
import type { Registry, RegistryLease } from "../registry/registry.ts";
import type { PeerEvent } from "../backend/backend.ts";
import { metrics } from "../ops/metrics.ts";
import type { Lease, LeaseAttrs } from "./codec.ts";
import { LeaseDecoder } from "./decode.ts";

const log = getLogger(["weft", "watch"]);
const peersKnown = metrics.gauge("weft_peers", "Peer leases currently known to this agent.");
const resyncs = metrics.counter(
  "weft_registry_resyncs_total",
  "Full re-lists of the registry (start, compaction, watcher too far behind).",
);
const listErrors = metrics.counter(
  "weft_registry_errors_total",
  "Registry operations that failed and were retried.",
);

export interface PeerHandlers {
  /** The complete peer set after the first list (and after every snapshot, as a full set). */
  initial(peers: Lease[]): Promise<void> | void;
  /** Incremental changes in registry order. */
  events(events: PeerEvent[], receivedAt: number): Promise<void> | void;
  /** Our own key was deleted (by someone else or by expiry). */
  ownDeleted?(): void;
  /** Our own key was written. */
  ownWritten?(attrs: LeaseAttrs): void;
}

export interface PeerWatcherOptions {
  /** Our own lease key (changes when the lease is re-acquired). */
  ownKey: () => string | null;
  /** Which leases are peers for this backend. */
  accept: (l: Lease) => boolean;
}

function sameAttrs(a: Lease, b: Lease): boolean {
  return JSON.stringify(a.attrs) === JSON.stringify(b.attrs);
}

export class PeerWatcher {
  #decoder = new LeaseDecoder();
  #known = new Map<string, Lease>();
  #listed = false;

  constructor(readonly registry: Registry, readonly opts: PeerWatcherOptions) {}

  /** True once the registry has been listed: before that, peers() is not the real set. */
  get listed(): boolean {
    return this.#listed;
  }

  /** Peers currently known (own lease excluded). */
  peers(): Lease[] {
    return [...this.#known.values()];
  }

  #isPeer(l: Lease): boolean {
    return l.key !== this.opts.ownKey() && this.opts.accept(l);
  }

  /** Diffs a full snapshot against the known set. */
  #diff(rs: RegistryLease[], h: PeerHandlers): PeerEvent[] {
    const next = new Map<string, Lease>();
    for (const l of this.#decoder.decodeAll(rs)) {
      if (l.key === this.opts.ownKey()) h.ownWritten?.(l.attrs);
      if (this.#isPeer(l)) next.set(l.key, l);
    }
    const own = this.opts.ownKey();
    if (own && !rs.some((r) => r.key === own)) h.ownDeleted?.();
    const evs: PeerEvent[] = [];
    for (const [k, old] of this.#known) {
      const n = next.get(k);
      if (!n || !sameAttrs(old, n)) evs.push({ type: "removed", lease: old });
    }
    for (const [k, n] of next) {
      const old = this.#known.get(k);
      if (!old || !sameAttrs(old, n)) evs.push({ type: "added", lease: n });
    }
    this.#known = next;
    peersKnown.set(next.size);
    return evs;
  }

  async #listWithRetry(signal: AbortSignal) {
    let delay = 100;
    while (!signal.aborted) {
      try {
        return await this.registry.listLeases();
      } catch (e) {
        listErrors.inc();
        log.warn("cannot list leases from the {kind} registry: {error}; retrying in {ms} ms", {
          kind: this.registry.kind,
          error: (e as Error).message,
          ms: delay,
        });
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 5000);
      }
    }
    return null;
  }

  /** Runs until `signal` aborts; handler failures are logged and the watch goes on. */
  async run(signal: AbortSignal, h: PeerHandlers): Promise<void> {
    const first = await this.#listWithRetry(signal);
    if (!first) return;
    resyncs.inc();
    this.#diff(first.leases, h);
    this.#listed = true;
    await this.#safe("reconcile", () => h.initial(this.peers()));
    for await (const msg of this.registry.watchLeases(first.revision, signal)) {
      const at = performance.now();
      if (msg.kind === "snapshot") {
        resyncs.inc();
        log.info("registry history unavailable; re-listed {n} leases at revision {rev}", {
          n: msg.leases.length,
          rev: msg.revision,
        });
        this.#diff(msg.leases, h);
        await this.#safe("reconcile", () => h.initial(this.peers()));
        continue;
      }
      const evs: PeerEvent[] = [];
      for (const c of msg.changes) {
        const key = c.type === "put" ? c.lease.key : c.key;
        if (key === this.opts.ownKey()) {
          if (c.type === "delete") h.ownDeleted?.();
          else {
            const l = this.#decoder.decode(c.lease);
            if (l) h.ownWritten?.(l.attrs);
          }
          continue;
        }
        const old = this.#known.get(key);
        if (c.type === "delete") {
          if (old) {
            this.#known.delete(key);
            evs.push({ type: "removed", lease: old });
          }
          continue;
        }
        const l = this.#decoder.decode(c.lease);
        if (!l || !this.#isPeer(l)) {
          if (old) {
            this.#known.delete(key);
            evs.push({ type: "removed", lease: old });
          }
          continue;
        }
        if (old && sameAttrs(old, l)) {
          this.#known.set(key, l); // renewal: new expiry, nothing for the datapath
          continue;
        }
        if (old) evs.push({ type: "removed", lease: old });
        this.#known.set(key, l);
        evs.push({ type: "added", lease: l });
      }
      peersKnown.set(this.#known.size);
      if (evs.length) await this.#safe("apply", () => h.events(evs, at));
    }
  }

  async #safe(what: string, fn: () => Promise<void> | void) {
    try {
      await fn();
    } catch (e) {
      log.error("backend failed to {what} peer changes: {error}", {
        what,
        error: (e as Error).message,
      });
    }
  }
}
