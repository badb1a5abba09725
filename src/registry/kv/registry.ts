/**
 * The Deno KV registry: flannel's lease semantics on a local SQLite KV file (several processes on
 * one host) or a KV Connect endpoint. Deno KV lacks what etcd gives for free, so the modules
 * beside this one build it: `layout.ts` (keys, values, TTL in the value), `commit.ts` (one atomic
 * commit per mutation, "database is locked" retries), `write_lock.ts` (writers of a local file
 * queue on `<file>.lock`), `changelog.ts` (the change log, its compaction and polling reader),
 * `reaper.ts` (expired leases → logged deletes), `list.ts` (a consistent list), `reopen.ts` (the
 * file checked and reopened under every operation), `watch.ts` (the watch loop), `wake.ts`
 * (inotify wake-ups). This module is the Registry over them: options, reads and writes.
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
import {
  type PeerList,
  type Registry,
  RegistryError,
  type RegistryKey,
  type RegistryLease,
  type WatchMessage,
} from "../contract/registry.ts";
import { KvStore } from "./commit.ts";
import { listLeases } from "./list.ts";
import { LiveIndex } from "./changes.ts";
import { compactLog } from "./changelog.ts";
import { reapQuietly } from "./reaper.ts";
import { touchAfterCommit } from "./wake.ts";
import { checkTtl, expiryOf, isExpired, KvKeys, type StoredLease, toLease } from "./layout.ts";
import { type KvFile, ReopeningStore } from "./reopen.ts";
import { KvWatch } from "./watch.ts";
import { keysOf, ListedKeys, writtenSince } from "./partial_list.ts";
import { WriteLock } from "./write_lock.ts";

const log = getLogger(["weft", "registry"]);

export interface KvRegistryOptions {
  /** Local SQLite KV file; parent directories are created. */
  path?: string;
  /** KV Connect URL (https://...); the token comes from env DENO_KV_ACCESS_TOKEN. */
  url?: string;
  /** Key namespace, as etcd's prefix. Default "/coreos.com/network". */
  prefix?: string;
  /**
   * How often watchers poll without the wake-up, ms (1..1000), default 50: KV Connect reads the
   * revision counter this often; a local file's stamp is checked every min(15, pollMs) ms and the
   * counter read only when it moved (or at the idlePollMs safety poll).
   */
  pollMs?: number;
  /**
   * Local file: wake watchers on changes to the database files (inotify, see wake.ts) instead of
   * checking the file's stamp every min(15, pollMs) ms, with a safety poll every idlePollMs.
   * Default true; without inotify (no FFI permission, instance limit reached) watchers poll.
   */
  wakeOnChange?: boolean;
  /** The safety poll of a woken watcher, ms (pollMs..60 000). Default 1000. */
  idlePollMs?: number;
  /** How often a watch loop reaps the expired leases its expiry index says are due, ms. Default 1000. */
  reapMs?: number;
  /** Change-log entries kept: at most this many (the newest). Default 10 000. */
  keepLog?: number;
  /** Change-log entries older than this are dropped, ms. Default 600 000 (10 min). */
  keepLogMs?: number;
  /** Compact the log after every this many revisions (from the writing process). Default 500. */
  compactEvery?: number;
  /**
   * How long one operation keeps retrying "database is locked" / lost races and waits for the
   * write lock, ms. Default 10 000.
   */
  retryMs?: number;
  /**
   * Local file: writers queue on an exclusive lock of `<path>.lock` for each mutation's
   * read-check-commit (see write_lock.ts) instead of racing for the revision counter. Default
   * true; false only to measure the optimistic path.
   */
  writeLock?: boolean;
  /**
   * Local file: mutations read and commit on a second handle of the file, so that the
   * read-check-commit under the write lock never queues behind this registry's own lists (Deno
   * KV runs one handle's SQLite operations in order). Default true.
   */
  writeHandle?: boolean;
}

export class KvRegistry implements Registry {
  readonly kind = "kv";
  readonly prefix: string;
  #h: ReopeningStore;
  #watch: KvWatch;
  #lock: WriteLock | null;
  #keepLog: number;
  #keepLogMs: number;
  #closing = new AbortController();
  /** The live keys at the last full list, for lists since a revision (changes.ts). */
  #index: LiveIndex | null = null;
  /** The keys of the last full list, kept briefly for keys-only lists (partial_list.ts). */
  #keys = new ListedKeys();

  /**
   * Use openKvRegistry(); this takes an already opened Kv, which close() will close. `path`, when
   * given, is the local file it was opened from (watched for changes, see wakeOnChange; its
   * writers queue, see writeLock); `file`: that file's guard, which notices it deleted or
   * replaced (none for KV Connect); `writeKv`: a second handle of the file for mutations (see
   * writeHandle), also closed by close().
   */
  constructor(
    kv: Deno.Kv,
    opts: Omit<KvRegistryOptions, "url"> = {},
    file: KvFile | null = null,
    writeKv: Deno.Kv = kv,
  ) {
    this.prefix = (opts.prefix ?? "/coreos.com/network").replace(/\/+$/, "");
    const pollMs = opts.pollMs ?? 50;
    const idlePollMs = opts.idlePollMs ?? 1000;
    const wakePath = opts.path && opts.wakeOnChange !== false ? opts.path : null;
    this.#keepLog = opts.keepLog ?? 10_000;
    this.#keepLogMs = opts.keepLogMs ?? 600_000;
    const every = opts.compactEvery ?? 500;
    if (!(pollMs >= 1 && pollMs <= 1000)) {
      throw new RegistryError(`KV pollMs ${opts.pollMs} is out of range: give 1..1000 ms`);
    }
    if (!(idlePollMs >= pollMs && idlePollMs <= 60_000)) {
      throw new RegistryError(
        `KV idlePollMs ${opts.idlePollMs} is out of range: give ${pollMs}..60000 ms`,
      );
    }
    if (!(this.#keepLog >= 1)) {
      throw new RegistryError(`KV keepLog ${opts.keepLog} is out of range: give at least 1`);
    }
    // Compacts when a commit passes a multiple of `every` (a create over an expired lease
    // takes two revisions).
    const afterCommit = async (from: number, to: number) => {
      this.#h.saw(to);
      if (wakePath) await touchAfterCommit(wakePath);
      if (Math.floor(to / every) > Math.floor(from / every)) await this.#compactQuietly();
    };
    const keys = new KvKeys(this.prefix);
    const retryMs = opts.retryMs ?? 10_000;
    this.#lock = opts.path && opts.writeLock !== false ? WriteLock.of(opts.path) : null;
    const signal = this.#closing.signal;
    this.#h = new ReopeningStore(
      kv,
      file,
      signal,
      (kv, w) => new KvStore(kv, keys, retryMs, signal, afterCommit, this.#lock, w),
      writeKv,
    );
    this.#watch = new KvWatch(this.#h, {
      pollMs,
      idlePollMs,
      reapMs: opts.reapMs ?? 1000,
      path: opts.path ?? null,
      wake: wakePath !== null,
    }, signal);
  }

  /** Why the registry cannot be trusted now (its file deleted, replaced, broken), or null. */
  problem(): string | null {
    return this.#h.problem();
  }

  getConfig(): Promise<string | null> {
    return this.#h.track((s) => {
      return s.retryLocked(
        "read of config",
        async () => (await s.kv.get<string>(s.keys.config)).value,
      );
    }).then((v) => v ?? null);
  }

  putConfig(text: string): Promise<void> {
    return this.#h.track((s) => {
      return s.retryLocked("write of config", async () => {
        await s.kv.set(s.keys.config, text);
      });
    });
  }

  listLeases(): Promise<{ leases: RegistryLease[]; revision: number }> {
    return this.#h.track(async (s) => {
      const r = await listLeases(s, this.#closing.signal);
      this.#h.saw(r.revision);
      this.#keys.listed(r);
      // The acquisition's list indexes too: its check after the create (listPeerLeases since
      // this list) then reads the change log, not every lease again.
      this.#index = LiveIndex.of(r, s);
      return r;
    });
  }

  /**
   * As listLeases: expiries live in the values, so they cost nothing here. A full list (this
   * or listLeases) indexes the live keys, so that a list `since` a revision reads only the change log after it
   * (changes.ts), not every lease; when the log cannot say, it lists in full.
   */
  async listPeerLeases(since?: number): Promise<PeerList> {
    const idx = this.#index;
    if (since !== undefined && idx) {
      const r = await this.#h.track((s) => idx.writtenSince(s, since));
      if (r) {
        this.#h.saw(r.revision);
        return r;
      }
    }
    const list = await this.#h.track(async (s) => {
      const r = await listLeases(s, this.#closing.signal);
      this.#h.saw(r.revision);
      this.#index = LiveIndex.of(r, s);
      return r;
    });
    return { ...writtenSince(list, since), count: list.leases.length };
  }

  /** From the last list's keys and the change log since (see ListedKeys), else a list. */
  async listLeaseKeys(): Promise<{ keys: RegistryKey[]; revision: number }> {
    const r = await this.#h.track((s) =>
      s.retryLocked("read of change log", () => this.#keys.keys(s))
    );
    if (r) {
      this.#h.saw(r.revision);
      return r;
    }
    return keysOf(await this.listLeases());
  }

  getLease(key: string): Promise<RegistryLease | null> {
    return this.#h.track(async (s) => {
      const e = await s.retryLocked(
        `read of lease ${key}`,
        () => s.kv.get<StoredLease>(s.keys.lease(key)),
      );
      if (!e.value) return null;
      if (isExpired(e.value, Date.now())) {
        await reapQuietly(s, key);
        return null;
      }
      return toLease(key, e.value);
    });
  }

  /**
   * An expired lease counts as absent: it is overwritten in one atomic commit that logs its
   * delete and then the new put (two revisions), as etcd shows a reap followed by a create.
   */
  createLease(
    key: string,
    value: string,
    ttlSeconds: number | null,
  ): Promise<RegistryLease | null> {
    checkTtl(ttlSeconds);
    return this.#h.track((s) =>
      s.mutate<RegistryLease | null>(
        key,
        `create of lease ${key}`,
        (cur, now, amb, w) => {
          if (cur && amb && cur.writer === w) return { kind: "return", value: toLease(key, cur) };
          if (cur && !isExpired(cur, now)) return { kind: "return", value: null };
          const expiresAt = expiryOf(ttlSeconds, now);
          return { kind: "put", value, expiresAt, replacesExpired: cur !== null, result: (l) => l };
        },
      )
    );
  }

  updateLease(
    key: string,
    value: string,
    ttlSeconds: number | null,
    expectRevision: number,
  ): Promise<RegistryLease | null> {
    checkTtl(ttlSeconds);
    return this.#h.track((s) =>
      s.mutate<RegistryLease | null>(
        key,
        `update of lease ${key}`,
        (cur, now, amb, w) => {
          if (cur && amb && cur.writer === w) return { kind: "return", value: toLease(key, cur) };
          // An expired lease is gone, as in etcd: renewing it fails and the caller re-creates.
          if (!cur || isExpired(cur, now) || cur.revision !== expectRevision) {
            return { kind: "return", value: null };
          }
          return { kind: "put", value, expiresAt: expiryOf(ttlSeconds, now), result: (l) => l };
        },
      )
    );
  }

  deleteLease(key: string, expectRevision?: number): Promise<boolean> {
    return this.#h.track((s) =>
      s.mutate<boolean>(key, `delete of lease ${key}`, (cur, now, amb) => {
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

  /** Compacts the change log now (see compactLog); returns how many entries were removed. */
  compact(): Promise<number> {
    return this.#h.track((s) => compactLog(s, this.#keepLog, this.#keepLogMs));
  }

  async #compactQuietly(): Promise<void> {
    try {
      await compactLog(this.#h.store, this.#keepLog, this.#keepLogMs);
    } catch (e) {
      log.warn("change-log compaction failed, will retry at a later revision: {error}", {
        error: String(e),
      });
    }
  }

  /** Yields changes after `fromRevision` until `signal` aborts or the registry closes (watch.ts). */
  watchLeases(fromRevision: number, signal: AbortSignal): AsyncIterable<WatchMessage> {
    return this.#watch.watch(fromRevision, signal);
  }

  /** Stops watch loops, waits for KV operations in flight, closes the Kv. Idempotent. */
  async close(): Promise<void> {
    if (this.#closing.signal.aborted) return;
    this.#closing.abort();
    this.#keys.clear();
    await this.#watch.close();
    await this.#h.close();
    await this.#lock?.close();
  }
}
