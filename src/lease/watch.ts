/**
 * The peer view: lists all leases, then follows the registry's watch, and turns both into
 * added/removed peer events for the backend.
 *
 * It keeps every decodable lease (this node's own included) and, separately, the peer set the
 * backend was last given; events are the difference between the two. So a change of this node's
 * own key (re-acquisition after a takeover or expiry) never hides a peer, re-lists and snapshots
 * never replay or lose one, and changes older than a snapshot already applied are skipped. The
 * initial list is retried until it succeeds (flannel gave up on it and never learned its peers);
 * the agent skips it by starting from the list its acquisition already read (`start`).
 * A watch event costs the same with 5000 peers as with 5: only the keys it touched (and the own
 * key, when it changed) are compared; full passes happen on lists and reconciles only.
 *
 * @example
 * ```ts
 * const w = new PeerWatcher(registry, { ownKey: () => mgr.lease?.key ?? null, accept: (l) => true });
 * await w.run(signal, {
 *   initial: (peers) => backend.reconcile(peers),
 *   events: (evs) => backend.apply(evs),
 *   ownDeleted: (rev) => mgr.notifyDeleted(rev),
 *   ownWritten: (attrs) => mgr.observeOwnWrite(attrs),
 * }, mgr.takeListed()); // from the acquisition's list (null: list first)
 * ```
 */
import { getLogger } from "@logtape/logtape";
import type { Registry, RegistryLease, WatchedExpiry } from "../registry/contract/registry.ts";
import { metrics } from "../base/metrics.ts";
import { Backoff, sleep } from "../base/async.ts";
import { type Lease, type LeaseAttrs, sameDatapath } from "./codec.ts";
import { LeaseDecoder } from "./decode.ts";
import { VerifiedSet } from "./verified.ts";

const log = getLogger(["weft", "watch"]);
const peersKnown = metrics.gauge("weft_peers", "Peer leases currently known to this agent.");
const peersByFamily = metrics.gauge(
  "weft_peers_family",
  "Peer leases currently known to this agent with a half of this address family.",
);

/** Per-family peer counts, kept by +1/−1 as peers come and go (O(changes)). */
class FamilyCounts {
  v4 = 0;
  v6 = 0;
  add(l: Lease, d: number) {
    if (l.subnet.prefix > 0) this.v4 += d;
    if (l.subnet6) this.v6 += d;
  }
  publish() {
    peersByFamily.set(this.v4, { family: "ipv4" });
    peersByFamily.set(this.v6, { family: "ipv6" });
  }
}
const resyncs = metrics.counter(
  "weft_registry_resyncs_total",
  "Full re-lists of the registry (start, compaction, periodic reconciliation).",
);
const listErrors = metrics.counter(
  "weft_registry_errors_total",
  "Registry reads by the peer watcher that failed and were retried.",
);

/**
 * A full list already read and decoded, as the registry's exact key set at its revision (every
 * decodable lease as {@link LeaseDecoder} with this watcher's `ipv6` setting gives it): what
 * `LeaseManager.takeListed` hands over, for the watcher to start from.
 */
export type StartList = VerifiedSet;

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
  /** The config enables IPv6: IPv6-only leases (`0.0.0.0-0&…`) are decoded too. */
  ipv6?: boolean;
}

function sameAttrs(a: Lease, b: Lease): boolean {
  return sameDatapath(a.attrs, b.attrs);
}

export class PeerWatcher {
  #decoder: LeaseDecoder;
  /** Every decodable lease in the registry, own included. */
  #all = new Map<string, Lease>();
  /** The peer set the backend was last given. */
  #given = new Map<string, Lease>();
  #families = new FamilyCounts();
  /** Highest registry revision reflected in #all. */
  #rev = 0;
  /** The own key when events were last computed: a change makes both keys candidates. */
  #lastOwn: string | null = null;
  #listed = false;
  #handlers: PeerHandlers | null = null;
  /** The registry's exact lease set at the last list (see VerifiedSet); null before the first. */
  #verified: VerifiedSet | null = null;

  constructor(readonly registry: Registry, readonly opts: PeerWatcherOptions) {
    this.#decoder = new LeaseDecoder({ ipv6: opts.ipv6 });
  }

  /** True once the registry has been listed: before that, peers() is not the real set. */
  get listed(): boolean {
    return this.#listed;
  }

  /** Current peers: every accepted lease but our own. */
  peers(): Lease[] {
    const own = this.opts.ownKey();
    const out: Lease[] = [];
    for (const l of this.#all.values()) if (l.key !== own && this.opts.accept(l)) out.push(l);
    return out;
  }

  /** The current peer set, recorded as what the backend now holds (for full reconciles). */
  takePeers(): Lease[] {
    const p = this.peers();
    this.#given = new Map();
    for (const l of p) this.#given.set(l.key, l);
    this.#lastOwn = this.opts.ownKey();
    peersKnown.set(p.length);
    this.#families = new FamilyCounts();
    for (const l of p) this.#families.add(l, 1);
    this.#families.publish();
    return p;
  }

  /** The peer under `key` now, if any. */
  #peer(key: string, own: string | null): Lease | undefined {
    const l = this.#all.get(key);
    return l && key !== own && this.opts.accept(l) ? l : undefined;
  }

  /**
   * Events that turn the peer set last given into the current one, looking only at `touched`
   * keys (plus the old and new own key when it changed): O(changes), not O(peers).
   */
  #delta(touched: Set<string>): PeerEvent[] {
    const own = this.opts.ownKey();
    if (own !== this.#lastOwn) {
      if (own) touched.add(own);
      if (this.#lastOwn) touched.add(this.#lastOwn);
      this.#lastOwn = own;
    }
    const removed: PeerEvent[] = [];
    const added: PeerEvent[] = [];
    for (const k of touched) {
      const old = this.#given.get(k);
      const n = this.#peer(k, own);
      if (old && n && sameAttrs(old, n)) {
        this.#given.set(k, n);
        continue;
      }
      if (old) removed.push({ type: "removed", lease: old });
      if (n) added.push({ type: "added", lease: n });
      if (old) this.#families.add(old, -1);
      if (n) this.#families.add(n, 1);
      if (n) this.#given.set(k, n);
      else this.#given.delete(k);
    }
    peersKnown.set(this.#given.size);
    this.#families.publish();
    return [...removed, ...added];
  }

  /** `r` decoded, or the lease already decoded at its revision (same write, same value). */
  #decodeKeeping = (r: RegistryLease<WatchedExpiry>): Lease | null => {
    // A periodic re-list of 5000 unchanged leases parses no JSON, and the backend sees the
    // same objects (the vxlan backend caches its entries per lease object).
    const prev = this.#all.get(r.key);
    if (prev && prev.revision === r.revision) {
      return prev.expiresAt === r.expiresAt ? prev : { ...prev, expiresAt: r.expiresAt };
    }
    return this.#decoder.decode(r);
  };

  /** A full list (or a watch's snapshot): the registry's exact set at `revision`. */
  #applySnapshot(rs: RegistryLease<WatchedExpiry>[], revision: number) {
    this.#verified = VerifiedSet.of(rs, revision, this.#decodeKeeping);
    this.#install(revision);
  }

  /** Makes the view the verified set (O(peers), no copies) and tells the handlers of our key. */
  #install(revision: number) {
    const all = this.#all;
    let leases = 0, changed = 0;
    for (const [key, x] of this.#verified!.set) {
      if (typeof x === "number") {
        if (all.delete(key)) changed++;
        continue;
      }
      leases++;
      if (all.get(key) !== x) {
        all.set(key, x);
        changed++;
      }
    }
    if (all.size !== leases) {
      for (const key of all.keys()) {
        if (typeof this.#verified!.set.get(key) !== "object") {
          all.delete(key);
          changed++;
        }
      }
    }
    if (changed) {
      log.debug("re-list at revision {revision} changed {changed} leases in the view", {
        revision,
        changed,
      });
    }
    this.#adopt(revision);
  }

  /** The view (every decodable lease at `revision`) is current: the own key reported. */
  #adopt(revision: number) {
    const own = this.opts.ownKey();
    if (own) {
      const mine = this.#all.get(own);
      if (mine) this.#handlers?.ownWritten?.(mine.attrs, mine.revision);
      else this.#handlers?.ownDeleted?.(revision);
    }
    this.#rev = Math.max(this.#rev, revision);
  }

  async #listWithRetry(signal: AbortSignal) {
    const backoff = new Backoff();
    while (!signal.aborted) {
      try {
        return await this.registry.listPeerLeases();
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
   * the registry, not just memory: it catches any change the watch missed). Reads only what was
   * written since the last verified list, with the count that proves the rest unchanged
   * (VerifiedSet.advance); lists in full when it does not. Returns false when the list was older
   * than what the watch already applied (try again later). Registry errors are thrown.
   */
  async relist(): Promise<boolean> {
    const v = this.#verified;
    if (v) {
      const since = v.revision;
      const r = await this.registry.listPeerLeases(since);
      // A snapshot or another re-list moved the set meanwhile: `r` no longer fits it.
      if (r.revision < this.#rev || v !== this.#verified || v.revision !== since) return false;
      if (v.advance(r, this.#decodeKeeping)) {
        resyncs.inc();
        this.#install(r.revision);
        return true;
      }
      log.debug("leases were deleted since revision {rev}: listing all of them", {
        rev: v.revision,
      });
    }
    const { leases, revision } = await this.registry.listPeerLeases();
    if (revision < this.#rev) return false;
    resyncs.inc();
    this.#applySnapshot(leases, revision);
    return true;
  }

  /**
   * The first list, applied; its revision (null: aborted). Its own method so that the listed
   * leases (5000 raw values) are garbage once applied: a local of run() would stay alive in
   * run()'s suspended frame for as long as the watch runs.
   */
  async #firstList(signal: AbortSignal, start?: StartList): Promise<number | null> {
    if (start) {
      resyncs.inc(); // the start's list, as when the watcher lists itself
      this.#verified = start;
      this.#install(start.revision);
      this.#listed = true;
      return start.revision;
    }
    const first = await this.#listWithRetry(signal);
    if (!first) return null;
    resyncs.inc();
    this.#applySnapshot(first.leases, first.revision);
    this.#listed = true;
    return first.revision;
  }

  /**
   * Runs until `signal` aborts; handler failures are logged and the watch goes on. `start`: a
   * full list already read (the acquisition's, `LeaseManager.takeListed`), used instead of the
   * first list; the watch then starts at its revision + 1, so nothing written since is missed.
   */
  async run(signal: AbortSignal, h: PeerHandlers, start?: StartList | null): Promise<void> {
    this.#handlers = h;
    const from = await this.#firstList(signal, start ?? undefined);
    start = null; // not kept alive in this frame for as long as the watch runs (see #firstList)
    if (from === null) return;
    await this.#safe("reconcile", () => h.initial(this.takePeers()));
    for await (const msg of this.registry.watchLeases(from, signal)) {
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
      const touched = new Set<string>();
      for (const c of msg.changes) {
        const r = c.type === "put" ? c.lease.revision : c.revision;
        if (r <= this.#rev) continue; // already reflected by a newer list
        rev = Math.max(rev, r);
        const key = c.type === "put" ? c.lease.key : c.key;
        touched.add(key);
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
      const evs = this.#delta(touched);
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
