/**
 * Queueing the writers of a local Deno KV file. Every lease mutation checks the one revision
 * counter (see commit.ts), so concurrent optimistic writers mostly lose and retry: with ~1000
 * nodes joining at once they ran out of their budget. Instead a writer holds an exclusive
 * `flock(2)` on a sibling file, `<kv file>.lock`, for the read-check-commit of one mutation:
 * writers on this host (processes, Workers, handles) wait their turn instead of conflicting.
 * Within one handle the waiters queue first-in first-out, so only one of them waits in the kernel,
 * and the lock passes from one to the next without leaving the handle, for up to
 * {@link MAX_TURNS} mutations or {@link MAX_HOLD_MS}: then it is released, so that the other
 * processes' writers get their turn.
 *
 * The lock file is never the database: closing any descriptor of a file drops the process's
 * POSIX locks on it, SQLite's included (see wake.ts). flock locks belong to the open file, so two
 * handles in one process exclude each other too, and a dead holder's lock goes with it. The file
 * is never removed (a new inode at the path would split the queue). The commit still checks the
 * counter, so writers without the lock (KV Connect, older agents, a lock file that cannot be
 * opened) stay correct, only slower under contention.
 *
 * Every wait is bounded: {@link WriteLock.acquire} returns null when its deadline passes (the
 * caller names the lock file in its error) or the registry closes. A kernel wait cannot be
 * cancelled, so a handle has at most one: the next waiter takes it over, and a lock granted with
 * nobody waiting is let go at once (an abandoned wait per timeout piled up thousands of threads
 * in flock(2), each taking its turn at the lock, and the queue stalled).
 *
 * @example
 * ```ts
 * const lock = new WriteLock("/var/lib/weft/registry.kv.lock");
 * const release = await lock.acquire(10_000); // null: still held by another writer after 10 s
 * try { ... read, check, commit ... } finally { release?.(); }
 * await lock.close();
 * ```
 */
import { getLogger } from "@logtape/logtape";
import { Deadline, settlesWithin, withTimeout } from "../../base/async.ts";
import { metrics } from "../../base/metrics.ts";

const log = getLogger(["weft", "registry"]);

const lockTimeouts = metrics.counter(
  "weft_registry_kv_write_lock_timeouts_total",
  "Deno KV writes that gave up waiting for the write lock file.",
);

/** Mutations in a row one handle may make without releasing the file lock, when it has waiters. */
export const MAX_TURNS = 32;
/** How long one handle may keep the file lock for its own waiters, ms. */
export const MAX_HOLD_MS = 10;

export class WriteLock {
  #file: Deno.FsFile | null = null;
  /** Set when the lock file cannot be used: writers go optimistic (said once). */
  #unusable = false;
  /** Settles when the last waiter in this handle has had its turn. */
  #tail: Promise<void> = Promise.resolve();
  /** The file lock is held by this handle (possibly between two of its waiters). */
  #held = false;
  #heldSince = 0;
  #turns = 0;
  /** Waiters in this handle that have not had their turn yet. */
  #waiting = 0;
  /** The kernel wait for the file lock, at most one per handle; it outlives a waiter's deadline. */
  #pending: Promise<void> | null = null;
  /** A waiter whose turn it is waits for {@link #pending}. */
  #turnWaiting = false;

  /** `path`: the lock file, `<kv file>.lock`; created (mode 0644) on first use. */
  constructor(readonly path: string) {}

  /** The lock file of the KV file at `kvPath`. */
  static of(kvPath: string): WriteLock {
    return new WriteLock(`${kvPath}.lock`);
  }

  /**
   * Waits for the lock, at most `ms`: first for this handle's earlier waiters, then for other
   * holders. Returns the release (call it once, after the commit), or null when the wait timed
   * out or `signal` aborted. Without a usable lock file it returns at this handle's turn
   * (optimistic writes).
   */
  async acquire(ms: number, signal?: AbortSignal): Promise<(() => void) | null> {
    const deadline = new Deadline(ms);
    const prev = this.#tail;
    let done!: () => void;
    this.#tail = new Promise<void>((r) => done = r);
    this.#waiting++;
    if (!(await settlesWithin(prev, deadline.remaining(), signal))) {
      // Keep the queue going past this waiter; with nobody after it, let the file lock go.
      prev.then(() => {
        if (--this.#waiting === 0 && !this.#pending) this.#unlock();
        done();
      });
      if (!signal?.aborted) lockTimeouts.inc();
      return null;
    }
    this.#waiting--;
    if (!this.#held) {
      const pending = this.#pending ?? this.#lock();
      if (!pending) return done; // no usable lock file: optimistic
      this.#turnWaiting = true;
      const got = await settlesWithin(pending, deadline.remaining(), signal);
      this.#turnWaiting = false;
      if (!this.#held) {
        if (got && this.#unusable) return done; // the lock failed: optimistic
        // The kernel wait goes on (it cannot be cancelled): the next waiter takes it over, and
        // with nobody left, the lock is let go as soon as it is granted.
        done();
        if (!signal?.aborted) lockTimeouts.inc();
        return null;
      }
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const keep = this.#waiting > 0 && ++this.#turns < MAX_TURNS &&
        Date.now() - this.#heldSince < MAX_HOLD_MS;
      if (!keep) this.#unlock();
      done();
    };
  }

  /** Starts the one kernel wait of this handle for the file lock (null: no usable file). */
  #lock(): Promise<void> | null {
    const f = this.#open();
    if (!f) return null;
    const p = f.lock(true).then(() => {
      this.#held = true;
      this.#heldSince = Date.now();
      this.#turns = 0;
      // Granted after its waiter gave up, with nobody else waiting: let it go at once.
      if (!this.#turnWaiting && this.#waiting === 0) this.#unlock();
    }, (e) => {
      this.#giveUp(`cannot lock it (${(e as Error).message})`);
    }).finally(() => {
      this.#pending = null;
    });
    this.#pending = p;
    return p;
  }

  #unlock(): void {
    if (!this.#held) return;
    this.#held = false;
    try {
      this.#file?.unlockSync();
    } catch { /* closed: the lock went with it */ }
  }

  #open(): Deno.FsFile | null {
    if (this.#unusable) return null;
    if (!this.#file) {
      try {
        this.#file = Deno.openSync(this.path, {
          read: true,
          write: true,
          create: true,
          mode: 0o644,
        });
      } catch (e) {
        this.#giveUp(`cannot open it (${(e as Error).message})`);
      }
    }
    return this.#file;
  }

  #giveUp(why: string): void {
    this.#unusable = true;
    log.warn(
      "KV write lock {path}: {why}; writers on this KV file race optimistically instead, " +
        "which fails under heavy contention (make the KV file's directory writable)",
      { path: this.path, why },
    );
    try {
      this.#file?.close();
    } catch { /* already closed */ }
    this.#file = null;
  }

  /** Closes the lock file, after at most 1 s for a kernel wait still going on. Idempotent. */
  async close(): Promise<void> {
    this.#held = false;
    try {
      this.#file?.close(); // a wait still going on keeps the file open until it ends
    } catch { /* already closed */ }
    this.#file = null;
    if (this.#pending) {
      await withTimeout(this.#pending, 1000, "lock wait").catch(() => {});
    }
  }
}
