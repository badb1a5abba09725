/**
 * Reaping: an expired lease reads as absent everywhere, and is deleted with a normal logged
 * delete so that every watcher, in every process, sees it go. Reads reap what they find expired;
 * each watch loop also keeps an {@link ExpiryIndex} of the leases' expiry times (one scan when it
 * starts, then fed by the change log it reads anyway) and reaps what it says is due, checking
 * every `reapMs`: with 5000 leases that is a heap peek per tick, not a scan of every lease.
 */
import { getLogger } from "@logtape/logtape";
import { metrics } from "../../base/metrics.ts";
import type { KvStore } from "./commit.ts";
import { isExpired, lastPart, SCAN_BATCH, type StoredLease } from "./layout.ts";

const log = getLogger(["weft", "registry"]);

const reapedTotal = metrics.counter(
  "weft_registry_kv_reaped_total",
  "Expired leases deleted from Deno KV by this process.",
);

/**
 * Deletes `key` if it is (still) expired, as a logged delete. Two reapers cannot both delete:
 * the commit checks the lease's versionstamp and the loser re-reads an absent key.
 */
async function reap(
  s: KvStore,
  key: string,
  budgetMs: number,
  seen?: (cur: StoredLease | null) => void,
): Promise<boolean> {
  const reaped = await s.mutate<boolean>(key, `reap of expired lease ${key}`, (cur, now) => {
    seen?.(cur);
    if (!cur || !isExpired(cur, now)) return { kind: "return", value: false };
    return { kind: "delete", result: true };
  }, budgetMs);
  if (reaped) {
    reapedTotal.inc();
    log.debug("reaped expired lease {key}", { key });
  }
  return reaped;
}

/** Reaping is housekeeping: a short budget, and failure leaves it to the next reaper. */
export async function reapQuietly(
  s: KvStore,
  key: string,
  seen?: (cur: StoredLease | null) => void,
): Promise<void> {
  try {
    await reap(s, key, 1000, seen);
  } catch (e) {
    log.debug("reaping expired lease {key} failed, will retry later: {error}", {
      key,
      error: String(e),
    });
  }
}

/**
 * Expiry times of the leases with a TTL, by key, with the revision that set each (an older
 * change never overrides a newer one), and a min-heap to find the next one due in O(log N).
 * Heap entries go stale when a lease is renewed or deleted; they are dropped when they reach the
 * top. The index is a hint: a reap re-reads the lease, and corrects the index with what it read.
 *
 * @example
 * ```ts
 * const idx = new ExpiryIndex();
 * await idx.rebuild(store);                       // one scan, at the start of a watch
 * idx.put("198.19.5.0-24", Date.now() + 1000, 7); // from the change log
 * await idx.reapDue(store, Date.now());           // reaps what is due
 * ```
 */
export class ExpiryIndex {
  #at = new Map<string, { expiresAt: number; revision: number }>();
  #heap: { expiresAt: number; key: string }[] = [];

  get size(): number {
    return this.#at.size;
  }

  /** Records that `key` expires at `expiresAt` (null: never) as of `revision`. */
  put(key: string, expiresAt: number | null, revision: number): void {
    const cur = this.#at.get(key);
    if (cur && cur.revision > revision) return;
    if (expiresAt === null) {
      this.#at.delete(key);
      return;
    }
    this.#at.set(key, { expiresAt, revision });
    if (cur?.expiresAt !== expiresAt) this.#push({ expiresAt, key });
  }

  /** Records that `key` was deleted at `revision`. */
  delete(key: string, revision: number): void {
    const cur = this.#at.get(key);
    if (cur && cur.revision <= revision) this.#at.delete(key);
  }

  /** Replaces the index with the leases of a snapshot (a re-list). */
  reset(
    leases: Iterable<{ key: string; expiresAt: number | null | "unknown"; revision: number }>,
  ): void {
    this.#at.clear();
    this.#heap = [];
    // A KV snapshot always knows expiries ("unknown" is only etcd's).
    for (const l of leases) if (l.expiresAt !== "unknown") this.put(l.key, l.expiresAt, l.revision);
  }

  /** Replaces the index with one scan of every lease (and reaps those already expired). */
  async rebuild(s: KvStore): Promise<void> {
    const leases: { key: string; expiresAt: number | null; revision: number }[] = [];
    await s.retryLocked("scan for expired leases", async () => {
      leases.length = 0;
      const it = s.kv.list<StoredLease>({ prefix: s.keys.subnets }, { batchSize: SCAN_BATCH });
      for await (const e of it) {
        const { expiresAt, revision } = e.value;
        if (expiresAt !== null) leases.push({ key: lastPart(e.key), expiresAt, revision });
      }
    }, 1000);
    this.reset(leases);
    await this.reapDue(s, Date.now());
  }

  /** Keys whose expiry has passed at `now`, by the index (stale heap entries are dropped). */
  due(now: number): string[] {
    const out: string[] = [];
    while (this.#heap.length && this.#heap[0].expiresAt <= now) {
      const top = this.#pop();
      const cur = this.#at.get(top.key);
      if (cur?.expiresAt === top.expiresAt) out.push(top.key);
    }
    return out;
  }

  /**
   * Reaps every lease the index says is due. What the reap read corrects the index: a lease
   * renewed meanwhile goes back in with its new expiry, a lease already gone leaves it.
   */
  async reapDue(s: KvStore, now: number): Promise<void> {
    for (const key of this.due(now)) {
      let read: StoredLease | null | undefined;
      await reapQuietly(s, key, (cur) => read = cur);
      const idx = this.#at.get(key);
      if (read === null) {
        this.#at.delete(key); // gone (our delete, or another reaper's)
      } else if (read && !isExpired(read, Date.now())) {
        this.#at.delete(key); // renewed meanwhile
        this.put(key, read.expiresAt, read.revision);
      } else if (idx) {
        // Still expired: our delete failed, or landed and the change log will say so (which
        // drops the key); either way look again at the next tick.
        this.#push({ expiresAt: idx.expiresAt, key });
      }
    }
  }

  #push(e: { expiresAt: number; key: string }) {
    const h = this.#heap;
    h.push(e);
    for (let i = h.length - 1; i > 0;) {
      const p = (i - 1) >> 1;
      if (h[p].expiresAt <= h[i].expiresAt) break;
      [h[p], h[i]] = [h[i], h[p]];
      i = p;
    }
  }

  #pop(): { expiresAt: number; key: string } {
    const h = this.#heap;
    const top = h[0];
    const last = h.pop()!;
    if (h.length) {
      h[0] = last;
      for (let i = 0;;) {
        const l = 2 * i + 1, r = l + 1;
        let m = i;
        if (l < h.length && h[l].expiresAt < h[m].expiresAt) m = l;
        if (r < h.length && h[r].expiresAt < h[m].expiresAt) m = r;
        if (m === i) break;
        [h[m], h[i]] = [h[i], h[m]];
        i = m;
      }
    }
    return top;
  }
}
