/**
 * The peer view: lists all leases, then follows the registry's watch, and turns both into
 * added/removed peer events for the backend.
 *
 * It keeps every decodable lease (this node's own included) and, separately, the peer set the
 * backend was last given; events are the difference between the two. So a change of this node's
 * own key (re-acquisition after a takeover or expiry) never hides a peer, re-lists and snapshots
 * never replay or lose one, and changes older than a snapshot already applied are skipped. The
 * initial list is retried until it succeeds (flannel gave up on it and never learned its peers).
 *
 * @example
 * ```ts
 * const w = new PeerWatcher(registry, { ownKey: () => mgr.lease?.key ?? null, accept: (l) => true });
 * await w.run(signal, {
 *   initial: (peers) => backend.reconcile(peers),
 *   events: (evs) => backend.apply(evs),
 *   ownDeleted: (rev) => mgr.notifyDeleted(rev),
 *   ownWritten: (attrs) => mgr.observeOwnWrite(attrs),
 * });
 * ```
 */
import { getLogger } from "@logtape/logtape";
import type { Registry, RegistryLease } from "../registry/contract/registry.ts";
import { metrics } from "../base/metrics.ts";
import { Backoff, sleep } from "../base/async.ts";
import { type Lease, type LeaseAttrs, sameDatapath } from "./codec.ts";
import { LeaseDecoder } from "./decode.ts";

const log = getLogger(["weft", "watch"]);
const peersKnown = metrics.gauge("weft_peers", "Peer leases currently known to this agent.");
const resyncs = metrics.counter(
  "weft_registry_resyncs_total",
  "Full re-lists of the registry (start, compaction, periodic reconciliation).",
);
const listErrors = metrics.counter(
  "weft_registry_errors_total",
  "Registry reads by the peer watcher that failed and were retried.",
);

/** A peer lease appeared (or changed) or went away; what a backend applies. */
export type PeerEvent = { type: "added"; lease: Lease } | { type: "removed"; lease: Lease };

export interface PeerHandlers {
  /** The complete peer set after the first list (and after every snapshot, as a full set). */
  initial(peers: Lease[]): Promise<void> | void;
  /** Incremental changes in registry order. */
  events(events: PeerEvent[], receivedAt: number): Promise<void> | void;
  /** Our own key was deleted (by someone else or by expiry) at `revision`. */
  ownDeleted?(revision: number): void;
  /** Our own key was written (at `revision`). */
  ownWritten?(attrs: LeaseAttrs, revision: number): void;
}

export interface PeerWatcherOptions {
  /** Our own lease key (changes when the lease is re-acquired). */
  ownKey: () => string | null;
  /** Which leases are peers for this backend. */
  accept: (l: Lease) => boolean;
}

function sameAttrs(a: Lease, b: Lease): boolean {
  return sameDatapath(a.attrs, b.attrs);
}

export class PeerWatcher {
  #decoder = new LeaseDecoder();
  /** Every decodable lease in the registry, own included. */
  #all = new Map<string, Lease>();
  /** The peer set the backend was last given. */
  #given = new Map<string, Lease>();
  /** Highest registry revision reflected in #all. */
  #rev = 0;
  #listed = false;
  #handlers: PeerHandlers | null = null;

  constructor(readonly registry: Registry, readonly opts: PeerWatcherOptions) {}

  /** True once the registry has been listed: before that, peers() is not the real set. */
  get listed(): boolean {
    return this.#listed;
  }

  /** Current peers: every accepted lease but our own. */
  peers(): Lease[] {
    const own = this.opts.ownKey();
    return [...this.#all.values()].filter((l) => l.key !== own && this.opts.accept(l));
  }

  /** The current peer set, recorded as what the backend now holds (for full reconciles). */
  takePeers(): Lease[] {
    const p = this.peers();
    this.#given = new Map(p.map((l) => [l.key, l]));
    peersKnown.set(p.length);
    return p;
  }

  /** Events that turn the peer set last given into the current one. */
  #delta(): PeerEvent[] {
    const now = new Map(this.peers().map((l) => [l.key, l]));
    const evs: PeerEvent[] = [];
    for (const [k, old] of this.#given) {
      const n = now.get(k);
      if (!n || !sameAttrs(old, n)) evs.push({ type: "removed", lease: old });
    }
    for (const [k, n] of now) {
      const old = this.#given.get(k);
      if (!old || !sameAttrs(old, n)) evs.push({ type: "added", lease: n });
    }
    this.#given = now;
    peersKnown.set(now.size);
    return evs;
  }

  #applySnapshot(rs: RegistryLease[], revision: number) {
    const all = new Map<string, Lease>();
    for (const l of this.#decoder.decodeAll(rs)) all.set(l.key, l);
    const own = this.opts.ownKey();
    if (own) {
      const mine = all.get(own);
      if (mine) this.#handlers?.ownWritten?.(mine.attrs, mine.revision);
      else this.#handlers?.ownDeleted?.(revision);
    }
    this.#all = all;
    this.#rev = Math.max(this.#rev, revision);
  }

  async #listWithRetry(signal: AbortSignal) {
    const backoff = new Backoff();
    while (!signal.aborted) {
      try {
        return await this.registry.listLeases();
      } catch (e) {
        listErrors.inc();
        const ms = backoff.next();
        log.warn("cannot list leases from the {kind} registry: {error}; retrying in {ms} ms", {
          kind: this.registry.kind,
          error: (e as Error).message,
          ms,
        });
        await sleep(ms, signal);
      }
    }
    return null;
  }

  /**
   * Re-lists the registry and makes it the current view (a periodic full reconciliation against
   * the registry, not just memory). Returns false when the list was older than what the watch
   * already applied (try again later). Registry errors are thrown.
   */
  async relist(): Promise<boolean> {
    const { leases, revision } = await this.registry.listLeases();
    if (revision < this.#rev) return false;
    resyncs.inc();
    this.#applySnapshot(leases, revision);
    return true;
  }

  /** Runs until `signal` aborts; handler failures are logged and the watch goes on. */
  async run(signal: AbortSignal, h: PeerHandlers): Promise<void> {
    this.#handlers = h;
    const first = await this.#listWithRetry(signal);
    if (!first) return;
    resyncs.inc();
    this.#applySnapshot(first.leases, first.revision);
    this.#listed = true;
    await this.#safe("reconcile", () => h.initial(this.takePeers()));
    for await (const msg of this.registry.watchLeases(first.revision, signal)) {
      const at = performance.now();
      if (msg.kind === "snapshot") {
        resyncs.inc();
        log.info("registry history unavailable; re-listed {n} leases at revision {rev}", {
          n: msg.leases.length,
          rev: msg.revision,
        });
        this.#applySnapshot(msg.leases, msg.revision);
        await this.#safe("reconcile", () => h.initial(this.takePeers()));
        continue;
      }
      let rev = this.#rev;
      for (const c of msg.changes) {
        const r = c.type === "put" ? c.lease.revision : c.revision;
        if (r <= this.#rev) continue; // already reflected by a newer list
        rev = Math.max(rev, r);
        const key = c.type === "put" ? c.lease.key : c.key;
        const own = key === this.opts.ownKey();
        if (c.type === "delete") {
          this.#all.delete(key);
          if (own) h.ownDeleted?.(r);
          continue;
        }
        const l = this.#decoder.decode(c.lease);
        if (l) this.#all.set(key, l);
        else this.#all.delete(key);
        if (own && l) h.ownWritten?.(l.attrs, l.revision);
      }
      this.#rev = rev;
      const evs = this.#delta();
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
