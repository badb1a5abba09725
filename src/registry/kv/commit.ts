/**
 * Committing to Deno KV under contention: SQLite's "database is locked" is retried with jittered
 * backoff (5 ms doubling to 200 ms) within a time budget, and every lease mutation is ONE atomic
 * commit that writes the lease, bumps the revision counter and appends the change log. On a local
 * file the read-check-commit runs under the write lock (write_lock.ts), so writers queue; the
 * commit still checks the counter, and a writer without the lock that lost the race re-reads and
 * retries.
 */
import { metrics } from "../../base/metrics.ts";
import { Backoff, Deadline, sleep } from "../../base/async.ts";
import { RegistryError, type RegistryLease } from "../contract/registry.ts";
import { type KvKeys, type LogEntry, type StoredLease, toLease } from "./layout.ts";
import type { WriteLock } from "./write_lock.ts";

export const lockRetries = metrics.counter(
  "weft_registry_kv_lock_retries_total",
  'Deno KV operations retried after SQLite "database is locked".',
);
export const conflictRetries = metrics.counter(
  "weft_registry_kv_conflict_retries_total",
  "Deno KV commits retried because another writer moved the revision counter first.",
);

/** Thrown when an operation could not commit within its retry budget (transient; retry later). */
export class KvBusyError extends Error {
  override name = "KvBusyError";
}

/** SQLite contention surfaces as a TypeError with this text; it is always worth retrying. */
export function isLocked(e: unknown): boolean {
  return e instanceof Error && /database is locked|database table is locked|SQLITE_BUSY/i.test(
    e.message,
  );
}

/** The lock-retry backoff: 5 ms doubling to 200 ms, jittered so that writers spread out. */
export const lockBackoff = () => new Backoff(5, 200, true);

/**
 * What a mutation decides after reading the current counter and lease. A put with
 * `replacesExpired` first logs the delete of the expired lease it overwrites (one revision),
 * then the put (the next), as a reap followed by a create would.
 */
export type Decision<T> =
  | { kind: "return"; value: T }
  | {
    kind: "put";
    value: string;
    expiresAt: number | null;
    replacesExpired?: boolean;
    result: (l: RegistryLease) => T;
  }
  | { kind: "delete"; result: T };

export type Decide<T> = (
  cur: StoredLease | null,
  now: number,
  ambiguous: boolean,
  writer: string,
) => Decision<T>;

/** One try of a mutation: lost the race, or done (with the revisions it moved, if it wrote). */
type Attempt<T> = { done: false } | { done: true; value: T; committed?: [number, number] };

export class KvStore {
  constructor(
    readonly kv: Deno.Kv,
    readonly keys: KvKeys,
    readonly retryMs: number,
    /** Aborts when the registry closes: retries stop. */
    readonly closing: AbortSignal,
    /** Called after a mutation committed, with the revisions before and after it. */
    private readonly afterCommit: (from: number, to: number) => Promise<void>,
    /** The local file's write lock (null: KV Connect, or disabled: optimistic writes). */
    readonly lock: WriteLock | null = null,
    /**
     * The handle mutations read and commit on: a second handle of the same file, so that the
     * read-check-commit under the write lock does not queue behind this handle's lists (Deno KV
     * runs one handle's SQLite operations in order); `kv` itself without one.
     */
    readonly writeKv: Deno.Kv = kv,
  ) {}

  /** Closes the handle(s). */
  close(): void {
    for (const h of new Set([this.kv, this.writeKv])) {
      try {
        h.close();
      } catch { /* already closed */ }
    }
  }

  /**
   * Runs `fn` holding the write lock (at once without one); waits for it at most `ms`, then
   * throws KvBusyError naming the lock file. Never holds it across a retry's sleep.
   */
  async exclusive<T>(what: string, ms: number, fn: () => Promise<T>): Promise<T> {
    if (!this.lock) return await fn();
    const release = await this.lock.acquire(ms, this.closing);
    if (!release) {
      this.#checkOpen();
      throw new KvBusyError(
        `Deno KV ${what} waited ${ms} ms for the write lock ${this.lock.path} and did not get ` +
          `it: another writer holds it that long (a stopped or hung process? see who has it ` +
          `open: fuser -v ${this.lock.path}); retry later`,
      );
    }
    try {
      return await fn();
    } finally {
      release();
    }
  }

  #checkOpen(): void {
    if (this.closing.aborted) throw new RegistryError("the KV registry is closed");
  }

  /** Retries `fn` while SQLite reports "database is locked", until the budget runs out. */
  async retryLocked<T>(what: string, fn: () => Promise<T>, budgetMs = this.retryMs): Promise<T> {
    const deadline = new Deadline(budgetMs);
    const backoff = lockBackoff();
    for (let attempt = 1;; attempt++) {
      try {
        return await fn();
      } catch (e) {
        if (!isLocked(e)) throw e;
        lockRetries.inc();
        if (deadline.expired()) {
          throw new KvBusyError(
            `Deno KV ${what} still failed with "database is locked" after ${attempt} ` +
              `attempts in ${budgetMs} ms: too many processes write this KV file; retry later`,
          );
        }
        this.#checkOpen();
        await sleep(backoff.next(), this.closing);
      }
    }
  }

  /**
   * One lease mutation as ONE atomic commit: check the counter's and the lease's versionstamps,
   * write the lease, bump the counter, append the log entry. `decide` runs on every fresh read,
   * so compares always judge current data. A lost race (counter moved) re-reads and retries.
   *
   * A "database is locked" thrown by commit might in principle hide a commit that landed; each
   * call writes a unique `writer` into the value so a retry can recognise its own write, and
   * `decide` is told the attempt is ambiguous.
   */
  async mutate<T>(key: string, what: string, decide: Decide<T>, budgetMs = this.retryMs) {
    const k = this.keys;
    const lk = k.lease(key);
    const writer = crypto.randomUUID();
    const deadline = new Deadline(budgetMs);
    // Lost races back off a quarter as long as lock retries: the winner is already done.
    const backoff = lockBackoff();
    // Set while a commit is in flight; still set on the next attempt only if that commit threw.
    let committing = false;
    let ambiguous = false;
    for (let attempt = 1;; attempt++) {
      const out = await this.retryLocked(what, async () => {
        const r = await this.exclusive<Attempt<T>>(what, deadline.remaining(), async () => {
          ambiguous ||= committing;
          committing = false;
          const [c, cur] = await this.writeKv.getMany<[number, StoredLease]>([k.counter, lk]);
          const now = Date.now();
          const d = decide(cur.value, now, ambiguous, writer);
          if (d.kind === "return") return { done: true, value: d.value };
          const from = c.value ?? 0;
          let rev = from + 1;
          const op = this.writeKv.atomic().check(c).check(cur);
          let result: T;
          if (d.kind === "put") {
            if (d.replacesExpired) {
              op.set(k.logAt(rev++), { type: "delete", key, at: now } satisfies LogEntry);
            }
            const stored: StoredLease = {
              value: d.value,
              expiresAt: d.expiresAt,
              revision: rev,
              writer,
            };
            const entry: LogEntry = {
              type: "put",
              key,
              value: d.value,
              expiresAt: d.expiresAt,
              at: now,
            };
            op.set(lk, stored).set(k.logAt(rev), entry);
            result = d.result(toLease(key, stored));
          } else {
            op.delete(lk).set(k.logAt(rev), { type: "delete", key, at: now } satisfies LogEntry);
            result = d.result;
          }
          op.set(k.counter, rev);
          committing = true;
          const res = await op.commit();
          committing = false;
          if (!res.ok) return { done: false };
          return { done: true, value: result, committed: [from, rev] };
        });
        // Outside the lock: the wake-up touch and, now and then, a compaction.
        if (r.done && r.committed) await this.afterCommit(r.committed[0], r.committed[1]);
        return r;
      }, deadline.remaining());
      if (out.done) return out.value;
      conflictRetries.inc();
      if (deadline.expired()) {
        throw new KvBusyError(
          `Deno KV ${what} lost the race for the revision counter ${attempt} times in ` +
            `${budgetMs} ms: too many concurrent writers on this KV store; retry later`,
        );
      }
      this.#checkOpen();
      await sleep(backoff.next() / 4, this.closing);
    }
  }
}
