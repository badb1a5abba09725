/**
 * The Deno KV registry: flannel's lease semantics on a local SQLite KV file (several processes on
 * one host) or a KV Connect endpoint.
 *
 * Deno KV lacks what etcd gives for free, so this module builds it:
 * - a revision counter key plus a change log (`["weft", prefix, "log", rev]`), written in the same
 *   atomic commit as every lease mutation, so watchers in any process replay changes in order
 *   (`kv.watch()` does not fire for another process's writes, so watchers poll the counter);
 * - TTLs kept in the value (KV's own `expireIn` is swept only after about a minute): expired
 *   leases read as absent and are reaped with a normal logged delete, so every watcher sees it;
 * - bounded, jittered retries for SQLite's "database is locked" under concurrent writers;
 * - log compaction; a watcher whose history is gone gets a snapshot instead.
 *
 * Layout under `["weft", prefix]`: `"rev"` → number, `"config"` → string,
 * `"subnets", key` → `{value, expiresAt, revision, writer}`,
 * `"log", rev` → `{type, key, value?, expiresAt?, at}`.
 *
 * @example
 * ```ts
 * const reg = await openKvRegistry({ path: "/var/lib/weft/registry.kv" });
 * await reg.createLease("198.19.5.0-24", '{"PublicIP":"198.18.0.3","PublicIPv6":null}', 86400);
 * const { revision } = await reg.listLeases();
 * for await (const msg of reg.watchLeases(revision, signal)) console.log(msg.kind);
 * await reg.close();
 * ```
 */
import { getLogger } from "@logtape/logtape";
import { dirname } from "node:path";
import { metrics } from "../base/metrics.ts";
import {
  type LeaseChange,
  type Registry,
  RegistryError,
  type RegistryLease,
  type WatchMessage,
} from "./registry.ts";

const log = getLogger(["weft", "registry"]);

const lockRetries = metrics.counter(
  "weft_registry_kv_lock_retries_total",
  'Deno KV operations retried after SQLite "database is locked".',
);
const conflictRetries = metrics.counter(
  "weft_registry_kv_conflict_retries_total",
  "Deno KV commits retried because another writer moved the revision counter first.",
);
const reapedTotal = metrics.counter(
  "weft_registry_kv_reaped_total",
  "Expired leases deleted from Deno KV by this process.",
);
const snapshotsTotal = metrics.counter(
  "weft_registry_kv_watch_snapshots_total",
  "Deno KV watch re-lists because the change log no longer held the watcher's position.",
);
const compactedTotal = metrics.counter(
  "weft_registry_kv_log_compacted_total",
  "Deno KV change-log entries removed by compaction.",
);

export interface KvRegistryOptions {
  /** Local SQLite KV file; parent directories are created. */
  path?: string;
  /** KV Connect URL (https://...); the token comes from env DENO_KV_ACCESS_TOKEN. */
  url?: string;
  /** Key namespace, as etcd's prefix. Default "/coreos.com/network". */
  prefix?: string;
  /** How often watchers poll the revision counter, ms (1..1000). Default 50. */
  pollMs?: number;
  /** How often a watch loop scans for expired leases to reap, ms. Default 1000. */
  reapMs?: number;
  /** Change-log entries kept: at most this many (the newest). Default 10 000. */
  keepLog?: number;
  /** Change-log entries older than this are dropped, ms. Default 600 000 (10 min). */
  keepLogMs?: number;
  /** Compact the log after every this many revisions (from the writing process). Default 500. */
  compactEvery?: number;
  /** How long one operation keeps retrying "database is locked" / lost races, ms. Default 10 000. */
  retryMs?: number;
}

/** Thrown when an operation could not commit within its retry budget (transient; retry later). */
export class KvBusyError extends Error {
  override name = "KvBusyError";
}

/** What is stored under a lease key. `writer` identifies the commit (see #mutate). */
interface StoredLease {
  value: string;
  expiresAt: number | null;
  revision: number;
  writer?: string;
}

/** One change-log entry; `at` (epoch ms) drives age-based compaction. */
interface LogEntry {
  type: "put" | "delete";
  key: string;
  value?: string;
  expiresAt?: number | null;
  at: number;
}

/** What a mutation decides after reading the current counter and lease. */
type Decision<T> =
  | { kind: "return"; value: T }
  | { kind: "put"; value: string; expiresAt: number | null; result: (l: RegistryLease) => T }
  | { kind: "delete"; result: T };

const MAX_BATCH = 500; // below KV's 1000-mutation / 1000-entry limits
const MAX_CHANGES_PER_MESSAGE = 1000;

/** SQLite contention surfaces as a TypeError with this text; it is always worth retrying. */
function isLocked(e: unknown): boolean {
  return e instanceof Error && /database is locked|database table is locked|SQLITE_BUSY/i.test(
    e.message,
  );
}

/** Resolves after `ms` or as soon as `signal` aborts; never leaves a timer behind. */
function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}

/** Jittered exponential backoff for lock/conflict retries: 5 ms doubling to 200 ms. */
function retryDelay(attempt: number): number {
  const cap = Math.min(200, 5 * 2 ** Math.min(attempt, 6));
  return cap / 2 + Math.random() * cap / 2;
}

function isExpired(s: StoredLease, now: number): boolean {
  return s.expiresAt !== null && s.expiresAt <= now;
}

function toLease(key: string, s: StoredLease): RegistryLease {
  return { key, value: s.value, revision: s.revision, expiresAt: s.expiresAt };
}

function checkTtl(ttlSeconds: number | null): void {
  if (ttlSeconds !== null && !(Number.isFinite(ttlSeconds) && ttlSeconds > 0)) {
    throw new RangeError(`lease TTL ${ttlSeconds} s is invalid: give a positive number or null`);
  }
}

export class KvRegistry implements Registry {
  readonly kind = "kv";
  readonly prefix: string;
  #kv: Deno.Kv;
  #base: Deno.KvKey;
  #counterKey: Deno.KvKey;
  #pollMs: number;
  #reapMs: number;
  #keepLog: number;
  #keepLogMs: number;
  #compactEvery: number;
  #retryMs: number;
  #closing = new AbortController();
  #inflight = new Set<Promise<unknown>>();

  /** Use openKvRegistry(); this takes an already opened Kv, which close() will close. */
  constructor(kv: Deno.Kv, opts: Omit<KvRegistryOptions, "path" | "url"> = {}) {
    this.#kv = kv;
    this.prefix = (opts.prefix ?? "/coreos.com/network").replace(/\/+$/, "");
    this.#base = ["weft", this.prefix];
    this.#counterKey = [...this.#base, "rev"];
    this.#pollMs = opts.pollMs ?? 50;
    this.#reapMs = opts.reapMs ?? 1000;
    this.#keepLog = opts.keepLog ?? 10_000;
    this.#keepLogMs = opts.keepLogMs ?? 600_000;
    this.#compactEvery = opts.compactEvery ?? 500;
    this.#retryMs = opts.retryMs ?? 10_000;
    if (!(this.#pollMs >= 1 && this.#pollMs <= 1000)) {
      throw new RegistryError(`KV pollMs ${opts.pollMs} is out of range: give 1..1000 ms`);
    }
    if (!(this.#keepLog >= 1)) {
      throw new RegistryError(`KV keepLog ${opts.keepLog} is out of range: give at least 1`);
    }
  }

  #leaseKey(key: string): Deno.KvKey {
    return [...this.#base, "subnets", key];
  }

  #logKey(rev: number): Deno.KvKey {
    return [...this.#base, "log", rev];
  }

  /** Runs `fn`, tracked so close() waits for it before closing the Kv under it. */
  #track<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#closing.signal.aborted) {
      return Promise.reject(new RegistryError("the KV registry is closed"));
    }
    const p = fn();
    this.#inflight.add(p);
    const drop = () => this.#inflight.delete(p);
    p.then(drop, drop);
    return p;
  }

  /**
   * Retries `fn` while SQLite reports "database is locked", with jittered backoff, until the
   * budget runs out.
   */
  async #retryLocked<T>(
    what: string,
    fn: () => Promise<T>,
    budgetMs = this.#retryMs,
  ): Promise<T> {
    const deadline = Date.now() + budgetMs;
    for (let attempt = 0;; attempt++) {
      try {
        return await fn();
      } catch (e) {
        if (!isLocked(e)) throw e;
        lockRetries.inc();
        if (Date.now() >= deadline) {
          throw new KvBusyError(
            `Deno KV ${what} still failed with "database is locked" after ${attempt + 1} ` +
              `attempts in ${budgetMs} ms: too many processes write this KV file; retry later`,
          );
        }
        if (this.#closing.signal.aborted) throw new RegistryError("the KV registry is closed");
        await sleep(retryDelay(attempt), this.#closing.signal);
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
  async #mutate<T>(
    key: string,
    what: string,
    decide: (
      cur: StoredLease | null,
      now: number,
      ambiguous: boolean,
      writer: string,
    ) => Decision<T>,
    budgetMs = this.#retryMs,
  ): Promise<T> {
    const lk = this.#leaseKey(key);
    const writer = crypto.randomUUID();
    const deadline = Date.now() + budgetMs;
    // Set while a commit is in flight; still set on the next attempt only if that commit threw.
    let committing = false;
    let ambiguous = false;
    for (let attempt = 0;; attempt++) {
      const out = await this.#retryLocked(what, async () => {
        ambiguous ||= committing;
        committing = false;
        const [c, cur] = await this.#kv.getMany<[number, StoredLease]>([this.#counterKey, lk]);
        const now = Date.now();
        const d = decide(cur.value, now, ambiguous, writer);
        if (d.kind === "return") return { done: true as const, value: d.value };
        const rev = (c.value ?? 0) + 1;
        const op = this.#kv.atomic().check(c).check(cur).set(this.#counterKey, rev);
        let result: T;
        if (d.kind === "put") {
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
          op.set(lk, stored).set(this.#logKey(rev), entry);
          result = d.result(toLease(key, stored));
        } else {
          const entry: LogEntry = { type: "delete", key, at: now };
          op.delete(lk).set(this.#logKey(rev), entry);
          result = d.result;
        }
        committing = true;
        const res = await op.commit();
        committing = false;
        if (!res.ok) return { done: false as const };
        if (rev % this.#compactEvery === 0) await this.#compactQuietly();
        return { done: true as const, value: result };
      }, Math.max(0, deadline - Date.now()));
      if (out.done) return out.value;
      conflictRetries.inc();
      if (Date.now() >= deadline) {
        throw new KvBusyError(
          `Deno KV ${what} lost the race for the revision counter ${attempt + 1} times in ` +
            `${budgetMs} ms: too many concurrent writers on this KV store; retry later`,
        );
      }
      if (this.#closing.signal.aborted) throw new RegistryError("the KV registry is closed");
      await sleep(retryDelay(attempt) / 4, this.#closing.signal);
    }
  }

  getConfig(): Promise<string | null> {
    return this.#track(() =>
      this.#retryLocked("read of config", async () => {
        const e = await this.#kv.get<string>([...this.#base, "config"]);
        return e.value ?? null;
      })
    );
  }

  putConfig(text: string): Promise<void> {
    return this.#track(() =>
      this.#retryLocked("write of config", async () => {
        await this.#kv.set([...this.#base, "config"], text);
      })
    );
  }

  listLeases(): Promise<{ leases: RegistryLease[]; revision: number }> {
    return this.#track(() => this.#list());
  }

  /**
   * Reads the counter, lists, reads the counter again: every lease mutation bumps the counter, so
   * an unchanged versionstamp proves the list is exactly the state at that revision. A list can
   * span several KV reads, hence the check.
   */
  async #list(): Promise<{ leases: RegistryLease[]; revision: number }> {
    const deadline = Date.now() + this.#retryMs;
    for (let attempt = 0;; attempt++) {
      const got = await this.#retryLocked("list of leases", async () => {
        const c1 = await this.#kv.get<number>(this.#counterKey);
        const entries: Deno.KvEntry<StoredLease>[] = [];
        const it = this.#kv.list<StoredLease>({ prefix: [...this.#base, "subnets"] }, {
          batchSize: 1000,
        });
        for await (const e of it) entries.push(e);
        const c2 = await this.#kv.get<number>(this.#counterKey);
        return c1.versionstamp === c2.versionstamp ? { entries, revision: c1.value ?? 0 } : null;
      }, Math.max(0, deadline - Date.now()));
      if (got) {
        const now = Date.now();
        const leases: RegistryLease[] = [];
        const expired: string[] = [];
        for (const e of got.entries) {
          const key = e.key[e.key.length - 1] as string;
          if (isExpired(e.value, now)) expired.push(key);
          else leases.push(toLease(key, e.value));
        }
        for (const key of expired) await this.#reapQuietly(key);
        return { leases, revision: got.revision };
      }
      conflictRetries.inc();
      if (Date.now() >= deadline) {
        throw new KvBusyError(
          `Deno KV list of leases kept racing with writers (${attempt + 1} tries in ` +
            `${this.#retryMs} ms) and never got a consistent view; retry later`,
        );
      }
      await sleep(retryDelay(attempt), this.#closing.signal);
    }
  }

  getLease(key: string): Promise<RegistryLease | null> {
    return this.#track(async () => {
      const e = await this.#retryLocked(
        `read of lease ${key}`,
        () => this.#kv.get<StoredLease>(this.#leaseKey(key)),
      );
      if (!e.value) return null;
      if (isExpired(e.value, Date.now())) {
        await this.#reapQuietly(key);
        return null;
      }
      return toLease(key, e.value);
    });
  }

  createLease(
    key: string,
    value: string,
    ttlSeconds: number | null,
  ): Promise<RegistryLease | null> {
    checkTtl(ttlSeconds);
    return this.#track(() =>
      this.#mutate<RegistryLease | null>(key, `create of lease ${key}`, (cur, now, amb, writer) => {
        if (cur && amb && cur.writer === writer) {
          return { kind: "return", value: toLease(key, cur) };
        }
        // An expired lease counts as absent: it may be overwritten, in the same atomic commit.
        if (cur && !isExpired(cur, now)) return { kind: "return", value: null };
        return {
          kind: "put",
          value,
          expiresAt: ttlSeconds === null ? null : now + ttlSeconds * 1000,
          result: (l) => l,
        };
      })
    );
  }

  updateLease(
    key: string,
    value: string,
    ttlSeconds: number | null,
    expectRevision: number,
  ): Promise<RegistryLease | null> {
    checkTtl(ttlSeconds);
    return this.#track(() =>
      this.#mutate<RegistryLease | null>(key, `update of lease ${key}`, (cur, now, amb, writer) => {
        if (cur && amb && cur.writer === writer) {
          return { kind: "return", value: toLease(key, cur) };
        }
        // An expired lease is gone, as in etcd: renewing it fails and the caller re-creates.
        if (!cur || isExpired(cur, now) || cur.revision !== expectRevision) {
          return { kind: "return", value: null };
        }
        return {
          kind: "put",
          value,
          expiresAt: ttlSeconds === null ? null : now + ttlSeconds * 1000,
          result: (l) => l,
        };
      })
    );
  }

  deleteLease(key: string, expectRevision?: number): Promise<boolean> {
    return this.#track(() =>
      this.#mutate<boolean>(key, `delete of lease ${key}`, (cur, now, amb) => {
        // After an ambiguous failure, absence most likely means our own delete landed.
        if (!cur) return { kind: "return", value: amb };
        // Expired reads as absent, but deleting it here (logged) saves a reaper the work.
        if (isExpired(cur, now)) return { kind: "delete", result: false };
        if (expectRevision !== undefined && cur.revision !== expectRevision) {
          return { kind: "return", value: false };
        }
        return { kind: "delete", result: true };
      })
    );
  }

  /**
   * Deletes `key` if it is (still) expired, as a logged delete. Two reapers cannot both delete:
   * the commit checks the lease's versionstamp and the loser re-reads an absent key.
   */
  #reap(key: string, budgetMs: number): Promise<boolean> {
    return this.#mutate<boolean>(key, `reap of expired lease ${key}`, (cur, now) => {
      if (!cur || !isExpired(cur, now)) return { kind: "return", value: false };
      return { kind: "delete", result: true };
    }, budgetMs).then((reaped) => {
      if (reaped) {
        reapedTotal.inc();
        log.debug("reaped expired lease {key}", { key });
      }
      return reaped;
    });
  }

  /** Reaping is housekeeping: a short budget, and failure leaves it to the next reaper. */
  async #reapQuietly(key: string): Promise<void> {
    try {
      await this.#reap(key, 1000);
    } catch (e) {
      log.debug("reaping expired lease {key} failed, will retry later: {error}", {
        key,
        error: String(e),
      });
    }
  }

  /** Scans all leases and reaps the expired ones. */
  async #reapAll(): Promise<void> {
    const now = Date.now();
    const expired: string[] = [];
    await this.#retryLocked("scan for expired leases", async () => {
      expired.length = 0;
      const it = this.#kv.list<StoredLease>({ prefix: [...this.#base, "subnets"] }, {
        batchSize: 1000,
      });
      for await (const e of it) {
        if (isExpired(e.value, now)) expired.push(e.key[e.key.length - 1] as string);
      }
    }, 1000);
    for (const key of expired) await this.#reapQuietly(key);
  }

  /**
   * Drops change-log entries beyond the newest `keepLog` and those older than `keepLogMs`.
   * Returns how many were removed. Concurrent compactors are harmless (deletes are idempotent);
   * a watcher that needed a removed entry notices the gap and re-lists.
   */
  compact(): Promise<number> {
    return this.#track(() => this.#compact());
  }

  async #compact(): Promise<number> {
    const c = await this.#retryLocked(
      "read of revision",
      () => this.#kv.get<number>(this.#counterKey),
    );
    const keepFrom = (c.value ?? 0) - this.#keepLog + 1;
    const ageCut = Date.now() - this.#keepLogMs;
    let removed = 0;
    for (;;) {
      const batch = await this.#retryLocked("scan of change log", async () => {
        const keys: Deno.KvKey[] = [];
        const it = this.#kv.list<LogEntry>({ prefix: [...this.#base, "log"] }, {
          limit: MAX_BATCH,
          batchSize: MAX_BATCH,
        });
        for await (const e of it) {
          const rev = e.key[e.key.length - 1] as number;
          if (rev >= keepFrom && e.value.at >= ageCut) break;
          keys.push(e.key);
        }
        return keys;
      });
      if (batch.length === 0) break;
      await this.#retryLocked("compaction of change log", async () => {
        const op = this.#kv.atomic();
        for (const k of batch) op.delete(k);
        await op.commit();
      });
      removed += batch.length;
      if (batch.length < MAX_BATCH) break;
    }
    if (removed > 0) {
      compactedTotal.inc(removed);
      log.debug("compacted {removed} change-log entries", { removed });
    }
    return removed;
  }

  async #compactQuietly(): Promise<void> {
    try {
      await this.#compact();
    } catch (e) {
      log.warn("change-log compaction failed, will retry at a later revision: {error}", {
        error: String(e),
      });
    }
  }

  /**
   * One poll: the messages that bring a watcher at `pos` up to date (none when nothing moved).
   * The log read must be gap-free from pos+1; a gap means compaction removed history (or the
   * store was reset), and the watcher gets a snapshot instead.
   */
  async #poll(pos: number): Promise<WatchMessage[]> {
    const c = await this.#retryLocked(
      "read of revision",
      () => this.#kv.get<number>(this.#counterKey),
    );
    const rev = c.value ?? 0;
    if (rev === pos) return [];
    if (rev > pos) {
      const entries = await this.#retryLocked("read of change log", async () => {
        const out: Deno.KvEntry<LogEntry>[] = [];
        const it = this.#kv.list<LogEntry>({
          start: this.#logKey(pos + 1),
          end: this.#logKey(rev + 1),
        }, { batchSize: 1000 });
        for await (const e of it) out.push(e);
        return out;
      });
      const contiguous = entries.length === rev - pos &&
        entries.every((e, i) => e.key[e.key.length - 1] === pos + 1 + i);
      if (contiguous) return this.#toMessages(entries);
      log.info("watch at revision {pos} fell behind the compacted change log; re-listing", { pos });
    } else {
      log.warn(
        "KV revision {rev} is below the watcher's {pos}: the store was reset or replaced; re-listing",
        { rev, pos },
      );
    }
    snapshotsTotal.inc();
    const snap = await this.#list();
    return [{ kind: "snapshot", leases: snap.leases, revision: snap.revision }];
  }

  #toMessages(entries: Deno.KvEntry<LogEntry>[]): WatchMessage[] {
    const out: WatchMessage[] = [];
    for (let i = 0; i < entries.length; i += MAX_CHANGES_PER_MESSAGE) {
      const changes: LeaseChange[] = entries.slice(i, i + MAX_CHANGES_PER_MESSAGE).map((e) => {
        const revision = e.key[e.key.length - 1] as number;
        const l = e.value;
        return l.type === "put"
          ? {
            type: "put",
            lease: { key: l.key, value: l.value ?? "", revision, expiresAt: l.expiresAt ?? null },
          }
          : { type: "delete", key: l.key, revision };
      });
      const last = changes[changes.length - 1];
      out.push({
        kind: "changes",
        changes,
        revision: last.type === "put" ? last.lease.revision : last.revision,
      });
    }
    return out;
  }

  /**
   * Polls the counter every pollMs and yields changes after `fromRevision`; also reaps expired
   * leases every reapMs. Errors back off 100 ms doubling to 5 s and never end the watch; it ends
   * when `signal` aborts or the registry closes.
   */
  async *watchLeases(fromRevision: number, signal: AbortSignal): AsyncIterable<WatchMessage> {
    const stop = AbortSignal.any([signal, this.#closing.signal]);
    let pos = fromRevision;
    let failures = 0;
    let lastReap = 0;
    while (!stop.aborted) {
      let msgs: WatchMessage[];
      try {
        msgs = await this.#track(async () => {
          if (Date.now() - lastReap >= this.#reapMs) {
            lastReap = Date.now();
            await this.#reapAll();
          }
          return await this.#poll(pos);
        });
        failures = 0;
      } catch (e) {
        if (stop.aborted) break;
        failures++;
        const delay = Math.min(5000, 100 * 2 ** (failures - 1));
        log.warn("KV watch poll failed (attempt {failures}), retrying in {delay} ms: {error}", {
          failures,
          delay,
          error: String(e),
        });
        await sleep(delay, stop);
        continue;
      }
      for (const m of msgs) {
        if (stop.aborted) return;
        pos = m.revision;
        yield m;
      }
      await sleep(this.#pollMs, stop);
    }
  }

  /** Stops watch loops, waits for KV operations in flight, closes the Kv. Idempotent. */
  async close(): Promise<void> {
    if (this.#closing.signal.aborted) return;
    this.#closing.abort();
    await Promise.allSettled([...this.#inflight]);
    this.#kv.close();
  }
}

/**
 * Opens a KV registry on a local file (`path`) or a KV Connect endpoint (`url`). Errors that
 * retrying cannot fix (no token, bad URL, unwritable directory) are RegistryErrors.
 */
export async function openKvRegistry(opts: KvRegistryOptions): Promise<KvRegistry> {
  if (opts.path && opts.url) {
    throw new RegistryError(
      `Deno KV: both a file path (${opts.path}) and a URL (${opts.url}) were given; pick one`,
    );
  }
  let target: string;
  if (opts.url) {
    let u: URL;
    try {
      u = new URL(opts.url);
    } catch {
      throw new RegistryError(`Deno KV Connect URL "${opts.url}" is not a valid URL`);
    }
    if (u.protocol !== "https:" && u.protocol !== "http:") {
      throw new RegistryError(
        `Deno KV Connect URL "${opts.url}" must be http(s)://; for a local file give a path`,
      );
    }
    let token: string | undefined;
    try {
      token = Deno.env.get("DENO_KV_ACCESS_TOKEN");
    } catch (e) {
      throw new RegistryError(
        `cannot read DENO_KV_ACCESS_TOKEN for ${opts.url} (${(e as Error).message}); ` +
          `run with --allow-env`,
      );
    }
    if (!token) {
      throw new RegistryError(
        `Deno KV Connect URL ${opts.url} needs an access token: set DENO_KV_ACCESS_TOKEN`,
      );
    }
    target = opts.url;
  } else if (opts.path) {
    try {
      await Deno.mkdir(dirname(opts.path), { recursive: true });
    } catch (e) {
      throw new RegistryError(
        `cannot create the directory for KV file ${opts.path}: ${(e as Error).message}`,
      );
    }
    target = opts.path;
  } else {
    throw new RegistryError("Deno KV registry needs a file path or a KV Connect URL");
  }
  // A fresh file opened by several processes at once can hit the lock while creating its schema.
  const deadline = Date.now() + (opts.retryMs ?? 10_000);
  for (let attempt = 0;; attempt++) {
    try {
      const kv = await Deno.openKv(target);
      try {
        return new KvRegistry(kv, opts);
      } catch (e) {
        kv.close();
        throw e;
      }
    } catch (e) {
      if (e instanceof RegistryError) throw e;
      if (isLocked(e) && Date.now() < deadline) {
        lockRetries.inc();
        await sleep(retryDelay(attempt));
        continue;
      }
      throw new RegistryError(`cannot open Deno KV ${target}: ${(e as Error).message}`);
    }
  }
}
