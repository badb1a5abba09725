/**
 * The Deno KV answer to a list of the leases written since a revision, without reading every
 * lease: an index of the live keys (key → expiry, no values) kept at a revision, brought forward
 * by the change log, which holds every lease write after it. A KV list reads and deserializes
 * every stored lease (~30 ms of CPU for 5000); this reads the counter and the log entries since
 * (O(changes)).
 *
 * Exact because every lease mutation commits its lease, the counter bump and its log entry
 * together (commit.ts; the consistent list relies on the same): the log entries after the index's
 * revision say the last state of every key written since, and every other key is as the index has
 * it. When the log cannot say (compacted past the index, a counter below it: a reset or replaced
 * store) the answer is null and the caller lists in full, which rebuilds the index. Calls take
 * turns.
 *
 * @example
 * ```ts
 * const idx = LiveIndex.of(await listLeases(s, signal), s);
 * const r = await idx.writtenSince(s, since); // null: list in full
 * ```
 */
import type { Expiry, PeerList, RegistryLease } from "../contract/registry.ts";
import type { KvStore } from "./commit.ts";
import { readLog } from "./changelog.ts";
import { MAX_LOG_SINCE } from "./partial_list.ts";
import { isExpired, lastPart, type LogEntry } from "./layout.ts";

export class LiveIndex {
  /** Expiry of every stored lease key at `revision` (expired ones may linger until reaped). */
  #expiries: Map<string, Expiry>;

  private constructor(readonly store: KvStore, public revision: number, leases: RegistryLease[]) {
    this.#expiries = new Map(leases.map((l) => [l.key, l.expiresAt]));
  }

  /** The index of a full list read from `store`. */
  static of(list: { leases: RegistryLease[]; revision: number }, store: KvStore): LiveIndex {
    return new LiveIndex(store, list.revision, list.leases);
  }

  /** The call in flight: calls take turns, so each reads the log from where the last left it. */
  #busy: Promise<unknown> = Promise.resolve();

  /**
   * The leases written after `since` that are live now, and how many live leases there are in
   * all, at the counter's revision; null when the change log cannot say (see the module doc).
   */
  writtenSince(s: KvStore, since: number): Promise<PeerList | null> {
    const p = this.#busy.then(() => this.#writtenSince(s, since));
    this.#busy = p.catch(() => {});
    return p;
  }

  async #writtenSince(s: KvStore, since: number): Promise<PeerList | null> {
    const base = this.revision;
    const c = await s.retryLocked("read of revision", () => s.kv.get<number>(s.keys.counter));
    const rev = c.value ?? 0;
    if (s !== this.store || rev < base || rev < since) return null;
    const from = Math.min(base, since);
    // The log entries carry the values: past this many, the list costs less.
    if (rev - from > MAX_LOG_SINCE) return null;
    const log = rev > from
      ? await s.retryLocked("read of change log", () => readLog(s, from, rev))
      : [];
    if (!log) return null;
    const last = new Map<string, { e: LogEntry; revision: number }>();
    for (const entry of log) {
      const revision = lastPart<number>(entry.key);
      const e = entry.value;
      if (revision > base) {
        if (e.type === "put") this.#expiries.set(e.key, e.expiresAt ?? null);
        else this.#expiries.delete(e.key);
      }
      if (revision > since) last.set(e.key, { e, revision });
    }
    this.revision = rev;
    const now = Date.now();
    const leases: RegistryLease[] = [];
    for (const [key, { e, revision }] of last) {
      if (e.type !== "put") continue;
      const l = { key, value: e.value ?? "", revision, expiresAt: e.expiresAt ?? null };
      if (!isExpired(l, now)) leases.push(l);
    }
    let count = 0;
    for (const expiresAt of this.#expiries.values()) {
      if (expiresAt === null || expiresAt > now) count++;
    }
    return { leases, count, revision: rev };
  }
}
