/**
 * The Deno KV registry: flannel's lease semantics on a local SQLite KV file (several processes on
 * one host) or a KV Connect endpoint. Deno KV lacks what etcd gives for free, so the modules
 * beside this one build it: `layout.ts` (keys, values, TTL in the value), `commit.ts` (one atomic
 * commit per mutation, "database is locked" retries), `changelog.ts` (the change log, its
 * compaction and polling reader), `reaper.ts` (expired leases → logged deletes), `list.ts`
 * (a consistent list). This module is
 * the Registry over them: reads, writes and the watch loop.
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
import { Backoff, sleep } from "../../base/async.ts";
import {
  type Registry,
  RegistryError,
  type RegistryKey,
  type RegistryLease,
  type WatchMessage,
} from "../contract/registry.ts";
import { KvStore } from "./commit.ts";
import { listLeases } from "./list.ts";
import { keysOf, writtenSince } from "./partial_list.ts";
import { compactLog, pollLog } from "./changelog.ts";
import { ExpiryIndex, reapQuietly } from "./reaper.ts";
import { FileWake, touchAfterCommit } from "./wake.ts";
import { checkTtl, expiryOf, isExpired, KvKeys, type StoredLease, toLease } from "./layout.ts";
import { FileGuard, isBrokenFileError, KvFileError } from "./file_guard.ts";

const log = getLogger(["weft", "registry"]);

/** After a wake-up that showed no change: polls this many times, this far apart (see wake.ts). */
const SETTLE_POLLS = 5;
const SETTLE_MS = 1;
/**
 * How often a watcher of a local file without the wake-up looks at the file's stamp (see
 * {@link fileStamp}): a stat is microseconds, a counter read through Deno KV far more, so the
 * counter is read only when the stamp moved (and at the safety poll).
 */
const STAMP_POLL_MS = 15;

/**
 * Size, modification and change times of the KV file and its write-ahead log: every commit
 * appends to the log (or, after a checkpoint, rewrites it), so at least one of them moves.
 */
function fileStamp(path: string): string {
  const one = (p: string) => {
    try {
      const st = Deno.statSync(p);
      return `${st.size}/${st.mtime?.getTime()}/${st.ctime?.getTime()}`;
    } catch {
      return "-";
    }
  };
  return `${one(path)}|${one(`${path}-wal`)}`;
}

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
  /** How long one operation keeps retrying "database is locked" / lost races, ms. Default 10 000. */
  retryMs?: number;
}

/** A local KV file: its guard, and how to open the path again. */
export interface KvFile {
  guard: FileGuard;
  open(): Promise<Deno.Kv>;
}

/**
 * Revisions never go back for a watcher or a lease manager: the reopened file's counter moves
 * past its own, the one of the file left behind and every revision this registry has handed out
 * (`seen`: the file left behind may no longer be readable), so "our lease is missing at a later
 * revision" reads as lost, not as an old event.
 */
async function carryRevision(old: KvStore, kv: Deno.Kv, seen: number): Promise<void> {
  let before = seen;
  try {
    // A deleted file still reads.
    before = Math.max(before, (await old.kv.get<number>(old.keys.counter)).value ?? 0);
  } catch { /* broken: `seen` is what there is to carry */ }
  for (let i = 0; i < 10; i++) {
    const cur = await kv.get<number>(old.keys.counter);
    const next = Math.max(cur.value ?? 0, before) + 1;
    if ((await kv.atomic().check(cur).set(old.keys.counter, next).commit()).ok) return;
  }
}

export class KvRegistry implements Registry {
  readonly kind = "kv";
  readonly prefix: string;
  #store: KvStore;
  #pollMs: number;
  #idlePollMs: number;
  #reapMs: number;
  #wakePath: string | null;
  /** The local file (none for KV Connect): watchers poll its stamp, not the counter. */
  #path: string | null;
  #wake: FileWake | null | undefined;
  #keepLog: number;
  #keepLogMs: number;
  #closing = new AbortController();
  #inflight = new Set<Promise<unknown>>();
  #file: KvFile | null;
  #checkedAt = 0;
  #problem: string | null = null;
  /** Bumped on every reopen: watchers re-list (the new file has its own history). */
  #generation = 0;
  /**
   * Set by a reopen until a watcher has handled its list of the new file: until then this
   * node's lease may be missing there unnoticed, so the node must not look ready.
   */
  #relisting: string | null = null;
  #afterCommit: (from: number, to: number) => Promise<void>;
  /** The highest revision this registry has handed out (commits, lists, watch messages). */
  #seen = 0;

  /**
   * Use openKvRegistry(); this takes an already opened Kv, which close() will close. `path`, when
   * given, is the local file it was opened from (watched for changes, see wakeOnChange); `file`:
   * that file's guard, which notices it deleted or replaced (none for KV Connect).
   */
  constructor(
    kv: Deno.Kv,
    opts: Omit<KvRegistryOptions, "url"> = {},
    file: KvFile | null = null,
  ) {
    this.#file = file;
    this.prefix = (opts.prefix ?? "/coreos.com/network").replace(/\/+$/, "");
    this.#pollMs = opts.pollMs ?? 50;
    this.#idlePollMs = opts.idlePollMs ?? 1000;
    this.#wakePath = opts.path && opts.wakeOnChange !== false ? opts.path : null;
    this.#path = opts.path ?? null;
    this.#reapMs = opts.reapMs ?? 1000;
    this.#keepLog = opts.keepLog ?? 10_000;
    this.#keepLogMs = opts.keepLogMs ?? 600_000;
    const every = opts.compactEvery ?? 500;
    if (!(this.#pollMs >= 1 && this.#pollMs <= 1000)) {
      throw new RegistryError(`KV pollMs ${opts.pollMs} is out of range: give 1..1000 ms`);
    }
    if (!(this.#idlePollMs >= this.#pollMs && this.#idlePollMs <= 60_000)) {
      throw new RegistryError(
        `KV idlePollMs ${opts.idlePollMs} is out of range: give ${this.#pollMs}..60000 ms`,
      );
    }
    if (!(this.#keepLog >= 1)) {
      throw new RegistryError(`KV keepLog ${opts.keepLog} is out of range: give at least 1`);
    }
    // Compacts when a commit passes a multiple of `every` (a create over an expired lease
    // takes two revisions).
    const afterCommit = async (from: number, to: number) => {
      this.#saw(to);
      if (this.#wakePath) await touchAfterCommit(this.#wakePath);
      if (Math.floor(to / every) > Math.floor(from / every)) await this.#compactQuietly();
    };
    this.#afterCommit = afterCommit;
    const keys = new KvKeys(this.prefix);
    this.#store = new KvStore(kv, keys, opts.retryMs ?? 10_000, this.#closing.signal, afterCommit);
  }

  #saw(revision: number): void {
    if (revision > this.#seen) this.#seen = revision;
  }

  /** Why the registry cannot be trusted now (its file deleted, replaced, broken), or null. */
  problem(): string | null {
    return this.#problem ?? this.#relisting;
  }

  /**
   * Runs `fn`, tracked so close() waits for it before closing the Kv under it. First makes sure
   * the open file is still the one at the path (see FileGuard); SQLite errors that mean the file
   * is broken mark it for reopening.
   */
  #track<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#closing.signal.aborted) {
      return Promise.reject(new RegistryError("the KV registry is closed"));
    }
    const p = (async () => {
      await this.#checkFile();
      try {
        return await fn();
      } catch (e) {
        if (this.#file && isBrokenFileError(e)) {
          this.#problem = `KV file ${this.#file.guard.path} is broken (${(e as Error).message})`;
          this.#checkedAt = 0;
        }
        throw e;
      }
    })();
    this.#inflight.add(p);
    const drop = () => this.#inflight.delete(p);
    p.then(drop, drop);
    return p;
  }

  /**
   * At most once a second (at once after a failure): the file at the path is still the open one.
   * When it is not, opens the path again if a usable file is there; else throws KvFileError.
   */
  async #checkFile(): Promise<void> {
    const f = this.#file;
    if (!f || (this.#problem === null && Date.now() - this.#checkedAt < 1000)) return;
    this.#checkedAt = Date.now();
    const what = f.guard.problem();
    if (what === null && this.#problem === null) return;
    const why = what ? `KV file ${f.guard.path} ${what} under this agent` : this.#problem!;
    let kv: Deno.Kv;
    let st: Deno.FileInfo;
    try {
      st = f.guard.candidate();
      kv = await f.open();
      try {
        // Removed between the stat and the open: this open made a new file; not ours to use.
        FileGuard.same(f.guard.path, st);
        await kv.get(this.#store.keys.counter); // a file that is no database fails here
      } catch (e) {
        kv.close();
        throw e;
      }
    } catch (e) {
      const msg = `${why}; no usable KV file at the path (${(e as Error).message}): this node ` +
        `is not ready until one is back (restore it, or let an agent started with ` +
        `--net-config-path make a new one)`;
      if (msg !== this.#problem) log.error("{msg}", { msg });
      this.#problem = msg;
      throw new KvFileError(msg);
    }
    const old = this.#store;
    await carryRevision(old, kv, this.#seen);
    this.#store = new KvStore(kv, old.keys, old.retryMs, this.#closing.signal, this.#afterCommit);
    f.guard.rearm(st);
    this.#generation++;
    this.#problem = null;
    this.#relisting = `${why}; reopened it, re-listing its leases`;
    try {
      old.kv.close();
    } catch { /* already closed */ }
    log.error("{why}; reopened the file now at the path: leases are re-listed and re-created", {
      why,
    });
  }

  getConfig(): Promise<string | null> {
    return this.#track(() => {
      const s = this.#store;
      return s.retryLocked(
        "read of config",
        async () => (await s.kv.get<string>(s.keys.config)).value,
      );
    }).then((v) => v ?? null);
  }

  putConfig(text: string): Promise<void> {
    return this.#track(() => {
      const s = this.#store;
      return s.retryLocked("write of config", async () => {
        await s.kv.set(s.keys.config, text);
      });
    });
  }

  listLeases(): Promise<{ leases: RegistryLease[]; revision: number }> {
    return this.#track(async () => {
      const r = await listLeases(this.#store, this.#closing.signal);
      this.#saw(r.revision);
      return r;
    });
  }

  /** As listLeases: expiries live in the values, so they cost nothing here. */
  async listPeerLeases(since?: number): Promise<{ leases: RegistryLease[]; revision: number }> {
    return writtenSince(await this.listLeases(), since);
  }

  async listLeaseKeys(): Promise<{ keys: RegistryKey[]; revision: number }> {
    return keysOf(await this.listLeases());
  }

  getLease(key: string): Promise<RegistryLease | null> {
    return this.#track(async () => {
      const s = this.#store;
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
    return this.#track(() =>
      this.#store.mutate<RegistryLease | null>(
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
    return this.#track(() =>
      this.#store.mutate<RegistryLease | null>(
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
    return this.#track(() =>
      this.#store.mutate<boolean>(key, `delete of lease ${key}`, (cur, now, amb) => {
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
    return this.#track(() => compactLog(this.#store, this.#keepLog, this.#keepLogMs));
  }

  async #compactQuietly(): Promise<void> {
    try {
      await compactLog(this.#store, this.#keepLog, this.#keepLogMs);
    } catch (e) {
      log.warn("change-log compaction failed, will retry at a later revision: {error}", {
        error: String(e),
      });
    }
  }

  /** The file watch shared by this registry's watch loops (null: none, poll every pollMs). */
  #fileWake(): FileWake | null {
    if (this.#wake === undefined) {
      this.#wake = this.#wakePath ? FileWake.start(this.#wakePath) : null;
    }
    return this.#wake?.alive ? this.#wake : null;
  }

  /**
   * Yields changes after `fromRevision`: reads the change log when the database files change
   * (and every idlePollMs regardless), or every pollMs without a file watch; reaps the expired
   * leases its expiry index says are due every reapMs. Errors back off 100 ms doubling to 5 s and
   * never end the watch; it ends when `signal` aborts or the registry closes.
   */
  async *watchLeases(fromRevision: number, signal: AbortSignal): AsyncIterable<WatchMessage> {
    const stop = AbortSignal.any([signal, this.#closing.signal]);
    const backoff = new Backoff();
    const expiry = new ExpiryIndex();
    let indexed = false;
    let pos = fromRevision;
    let failures = 0;
    let lastReap = 0;
    let generation = this.#generation;
    // Polls left to confirm a wake-up: a commit is visible only after its last write.
    let settle = 0;
    // The file's stamp at the poll before (see fileStamp; only without the wake-up).
    let prevStamp = "";
    while (!stop.aborted) {
      const wake = this.#fileWake();
      const seen = wake?.generation ?? 0;
      const stamp = !wake && this.#path ? fileStamp(this.#path) : "";
      let msgs: WatchMessage[];
      let fresh = false;
      try {
        msgs = await this.#track(async () => {
          if (generation !== this.#generation) {
            fresh = true;
            // Reopened: the file has its own history; start from a full list of it.
            generation = this.#generation;
            const snap = await listLeases(this.#store, stop);
            return [{ kind: "snapshot", leases: snap.leases, revision: snap.revision }];
          }
          if (!indexed || Date.now() - lastReap >= this.#reapMs) {
            lastReap = Date.now();
            if (indexed) await expiry.reapDue(this.#store, lastReap);
            else await expiry.rebuild(this.#store);
            indexed = true;
          }
          return await pollLog(this.#store, pos, () => listLeases(this.#store, stop));
        });
        failures = 0;
        backoff.reset();
      } catch (e) {
        if (stop.aborted) break;
        failures++;
        const delay = backoff.next();
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
        this.#saw(pos);
        if (m.kind === "snapshot") expiry.reset(m.leases);
        else {
          for (const c of m.changes) {
            if (c.type === "delete") expiry.delete(c.key, c.revision);
            // The KV change log always knows the expiry ("unknown" is etcd's).
            else if (c.lease.expiresAt !== "unknown") {
              expiry.put(c.lease.key, c.lease.expiresAt, c.lease.revision);
            }
          }
        }
        yield m;
      }
      // The consumer has handled the new file's list (a missing own lease is noticed by now).
      if (fresh && generation === this.#generation) this.#relisting = null;
      if (!wake && !this.#path) {
        await sleep(this.#pollMs, stop);
        continue;
      }
      if (!wake) {
        // A stamp that moved without a change to read: a commit not visible yet (its log write
        // comes before the shared index is updated), or only a checkpoint; look again shortly.
        if (msgs.length) settle = 0;
        else if (stamp !== prevStamp && settle === 0) settle = SETTLE_POLLS;
        prevStamp = stamp;
        if (settle > 0) {
          settle--;
          await sleep(SETTLE_MS, stop);
          continue;
        }
        await this.#stampMoves(stamp, Math.min(this.#idlePollMs, this.#reapMs), stop);
        continue;
      }
      if (msgs.length) settle = 0;
      else if (settle > 0) {
        settle--;
        await sleep(SETTLE_MS, stop);
        continue;
      }
      const idle = Math.min(this.#idlePollMs, this.#reapMs);
      await wake.wait(seen, idle, stop);
      // Only WAL writes (a writer without the touch, or its touch still to come): confirm.
      if (wake.generation !== seen && !wake.fileChangedSince(seen)) settle = SETTLE_POLLS;
    }
  }

  /**
   * Returns when the file's stamp differs from `stamp`, or after `maxMs`, or on abort. One
   * interval timer per wait, not a promise per tick: a tick is then a stat or two.
   */
  #stampMoves(stamp: string, maxMs: number, stop: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const until = Date.now() + maxMs;
      const done = () => {
        clearInterval(id);
        stop.removeEventListener("abort", done);
        resolve();
      };
      const id = setInterval(() => {
        if (Date.now() >= until || fileStamp(this.#path!) !== stamp) done();
      }, Math.min(STAMP_POLL_MS, this.#pollMs));
      stop.addEventListener("abort", done, { once: true });
      if (stop.aborted) done();
    });
  }

  /** Stops watch loops, waits for KV operations in flight, closes the Kv. Idempotent. */
  async close(): Promise<void> {
    if (this.#closing.signal.aborted) return;
    this.#closing.abort();
    await this.#wake?.close();
    await Promise.allSettled([...this.#inflight]);
    this.#store.kv.close();
  }
}
