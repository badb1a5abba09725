/**
 * The Deno KV watch loop: replays the change log (changelog.ts) from a revision, woken by changes
 * to the database files (wake.ts) with a slow safety poll, or polling the local file's stamp, or
 * (KV Connect) the revision counter; it reaps the expired leases its expiry index says are due
 * (reaper.ts) and re-lists after the file was reopened (reopen.ts).
 *
 * @example
 * ```ts
 * const w = new KvWatch(handle, { pollMs: 50, idlePollMs: 1000, reapMs: 1000, path, wake: true }, closing.signal);
 * for await (const msg of w.watch(revision, signal)) console.log(msg.kind);
 * await w.close();
 * ```
 */
import { getLogger } from "@logtape/logtape";
import { Backoff, sleep } from "../../base/async.ts";
import type { WatchMessage } from "../contract/registry.ts";
import { listLeases } from "./list.ts";
import { pollLog } from "./changelog.ts";
import { ExpiryIndex } from "./reaper.ts";
import { FileWake } from "./wake.ts";
import type { ReopeningStore } from "./reopen.ts";

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

/** How a watch loop waits (see KvRegistryOptions for each). */
export interface WatchTiming {
  pollMs: number;
  idlePollMs: number;
  reapMs: number;
  /** The local file (null: KV Connect, poll the counter every pollMs). */
  path: string | null;
  /** Wake on changes to the local file (inotify) instead of polling its stamp. */
  wake: boolean;
}

export class KvWatch {
  #wake: FileWake | null | undefined;

  constructor(
    private readonly h: ReopeningStore,
    private readonly t: WatchTiming,
    private readonly closing: AbortSignal,
  ) {}

  /** The file watch shared by this registry's watch loops (null: none, poll). */
  #fileWake(): FileWake | null {
    if (this.#wake === undefined) {
      this.#wake = this.t.path && this.t.wake ? FileWake.start(this.t.path) : null;
    }
    return this.#wake?.alive ? this.#wake : null;
  }

  /**
   * Yields changes after `fromRevision`: reads the change log when the database files change
   * (and every idlePollMs regardless), or every pollMs without a file watch; reaps the expired
   * leases its expiry index says are due every reapMs. Errors back off 100 ms doubling to 5 s and
   * never end the watch; it ends when `signal` aborts or the registry closes.
   */
  async *watch(fromRevision: number, signal: AbortSignal): AsyncIterable<WatchMessage> {
    const stop = AbortSignal.any([signal, this.closing]);
    const { path, pollMs, idlePollMs, reapMs } = this.t;
    const backoff = new Backoff();
    const expiry = new ExpiryIndex();
    let indexed = false;
    let pos = fromRevision;
    let failures = 0;
    let lastReap = 0;
    let generation = this.h.generation;
    // Polls left to confirm a wake-up: a commit is visible only after its last write.
    let settle = 0;
    // The file's stamp at the poll before (see fileStamp; only without the wake-up).
    let prevStamp = "";
    while (!stop.aborted) {
      const wake = this.#fileWake();
      const seen = wake?.generation ?? 0;
      const stamp = !wake && path ? fileStamp(path) : "";
      let msgs: WatchMessage[];
      let fresh = false;
      try {
        msgs = await this.h.track(async (s) => {
          if (generation !== this.h.generation) {
            fresh = true;
            // Reopened: the file has its own history; start from a full list of it.
            generation = this.h.generation;
            const snap = await listLeases(s, stop);
            return [{ kind: "snapshot", leases: snap.leases, revision: snap.revision }];
          }
          if (!indexed || Date.now() - lastReap >= reapMs) {
            lastReap = Date.now();
            if (indexed) await expiry.reapDue(s, lastReap);
            else await expiry.rebuild(s);
            indexed = true;
          }
          return await pollLog(s, pos, () => listLeases(s, stop));
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
        this.h.saw(pos);
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
      if (fresh) this.h.relisted(generation);
      if (!wake && !path) {
        await sleep(pollMs, stop);
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
        await this.#stampMoves(path!, stamp, Math.min(idlePollMs, reapMs), stop);
        continue;
      }
      if (msgs.length) settle = 0;
      else if (settle > 0) {
        settle--;
        await sleep(SETTLE_MS, stop);
        continue;
      }
      const idle = Math.min(idlePollMs, reapMs);
      await wake.wait(seen, idle, stop);
      // Only WAL writes (a writer without the touch, or its touch still to come): confirm.
      if (wake.generation !== seen && !wake.fileChangedSince(seen)) settle = SETTLE_POLLS;
    }
  }

  /**
   * Returns when the stamp of the file at `path` differs from `stamp`, or after `maxMs`, or on
   * abort. One interval timer per wait, not a promise per tick: a tick is then a stat or two.
   */
  #stampMoves(path: string, stamp: string, maxMs: number, stop: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const until = Date.now() + maxMs;
      const done = () => {
        clearInterval(id);
        stop.removeEventListener("abort", done);
        resolve();
      };
      const id = setInterval(() => {
        if (Date.now() >= until || fileStamp(path) !== stamp) done();
      }, Math.min(STAMP_POLL_MS, this.t.pollMs));
      stop.addEventListener("abort", done, { once: true });
      if (stop.aborted) done();
    });
  }

  /** Stops the file watch (call after `closing` aborted). */
  async close(): Promise<void> {
    await this.#wake?.close();
  }
}
