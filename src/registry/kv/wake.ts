/**
 * Waking KV watchers when the database changes, instead of polling on a short timer. A commit by
 * any process on this machine writes the SQLite file's `-wal` (or the file itself), so an inotify
 * watch on the file's directory is the trigger to read the change log; a slow safety poll covers
 * what inotify can miss (queue overflow, a file replaced under it).
 *
 * The watch is inotify through FFI (`ffi/libc/inotify.ts`), waited for with poll(2) on a thread
 * of Deno's blocking pool: an idle watch costs no CPU and no timer. It must never open the
 * database files: closing any descriptor of a file drops all of the process's POSIX locks on it,
 * SQLite's included. `Deno.watchFs` opens and closes every file it reports; SQLite's lock on
 * `-shm` went with it, another process opening the database took itself for the first and
 * truncated `-shm`, and the watching process died of SIGBUS reading its mapping.
 *
 * Events are only a hint: they are counted into a generation number, and a watcher polls when the
 * generation moved since its last poll, so a burst of events (one commit writes several frames,
 * our own writes fire too) costs one poll. A SQLite commit becomes visible only after its last
 * write to the WAL (the wal-index in `-shm` is mapped memory: no event), so an event can come
 * before the change is readable. Hence every weft commit ends with {@link touchAfterCommit}, an
 * event that comes after the change is visible; an event-triggered poll that found nothing is
 * also repeated shortly after (for writers without the touch).
 *
 * @example
 * ```ts
 * const wake = FileWake.start("/var/lib/weft/registry.kv"); // null: watch unavailable, poll
 * const seen = wake!.generation;
 * // ... poll the change log ...
 * await wake!.wait(seen, 1000, signal); // a change since `seen`, or 1 s, or abort
 * await wake!.close();
 * ```
 */
import { basename, dirname } from "node:path";
import { getLogger } from "@logtape/logtape";
import {
  addInotifyWatch,
  closeFd,
  IN_ATTRIB,
  IN_CREATE,
  IN_DELETE,
  IN_DELETE_SELF,
  IN_IGNORED,
  IN_MODIFY,
  IN_MOVE_SELF,
  IN_MOVED_FROM,
  IN_MOVED_TO,
  IN_ONLYDIR,
  IN_Q_OVERFLOW,
  openEventFd,
  openInotify,
  POLLIN,
  PollSet,
  readInotify,
  signalEventFd,
} from "../../../ffi/libc/mod.ts";

const log = getLogger(["weft", "registry"]);

/**
 * Sets the KV file's times after a commit: an inotify event that, unlike the WAL writes, comes
 * after the change is readable. Best effort (a read-only file only loses the early wake-up).
 */
export function touchAfterCommit(path: string): Promise<void> {
  const now = new Date();
  try {
    // Sync: one utimensat(2) by path (it never opens the file, see the module doc), microseconds;
    // the async form would add a hop through Deno's thread pool to every commit.
    Deno.utimeSync(path, now, now);
  } catch (e) {
    log.debug("cannot touch {path} after a commit: {error}", { path, error: String(e) });
  }
  return Promise.resolve();
}

/** What a change to the files in the directory shows up as (not reads, not opens). */
const MASK = IN_MODIFY | IN_ATTRIB | IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO |
  IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR;
/** poll() failures in a row (its errno is not readable) before the watch gives up: then polling. */
const MAX_FAILURES = 10;

export class FileWake {
  #gen = 0;
  /** The generation of the last event on the database file itself (a touch, a checkpoint). */
  #fileGen = 0;
  #waiters = new Set<() => void>();
  #inotify: number;
  /** Signalled by close() to end the wait in poll(). */
  #stopFd: number;
  #closing = false;
  #done: Promise<void>;
  #alive = true;

  private constructor(inotify: number, stopFd: number, names: Set<string>, file: string) {
    this.#inotify = inotify;
    this.#stopFd = stopFd;
    this.#done = this.#run(names, file);
  }

  async #run(names: Set<string>, file: string): Promise<void> {
    const ps = new PollSet([this.#inotify, this.#stopFd], POLLIN);
    const buf = new Uint8Array(4096);
    let failures = 0;
    try {
      while (!this.#closing) {
        if ((await ps.waitAsync(-1)) === 0) {
          if (++failures >= MAX_FAILURES) throw new Error(`poll() failed ${failures} times`);
          continue;
        }
        failures = 0;
        if (this.#closing) break;
        let changed = false;
        let fileChanged = false;
        for (
          let evs = readInotify(this.#inotify, buf);
          evs;
          evs = readInotify(this.#inotify, buf)
        ) {
          for (const ev of evs) {
            if (ev.mask & IN_Q_OVERFLOW) changed = fileChanged = true;
            else if (ev.mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF)) {
              throw new Error("the directory was removed or moved");
            } else if (names.has(ev.name)) {
              changed = true;
              if (ev.name === file) fileChanged = true;
            }
          }
        }
        if (changed) this.#bump(fileChanged);
      }
    } catch (e) {
      log.warn("file watch on the KV database stopped ({error}); watchers fall back to polling", {
        error: String(e),
      });
    } finally {
      // poll() has returned: nothing uses the fds any more.
      closeFd(this.#inotify);
      closeFd(this.#stopFd);
    }
    this.#alive = false;
    this.#bump();
  }

  /**
   * Watches the directory of the KV file at `path` (not the files: SQLite removes and recreates
   * `-wal`). Returns null when the watch cannot be set up (no FFI permission, inotify limits
   * `fs.inotify.max_user_instances` / `max_user_watches` reached), after saying so: watchers
   * then poll.
   */
  static start(path: string): FileWake | null {
    const base = basename(path);
    const names = new Set([base, `${base}-wal`, `${base}-shm`, `${base}-journal`]);
    let inotify = -1;
    try {
      inotify = openInotify();
      addInotifyWatch(inotify, dirname(path), MASK);
      return new FileWake(inotify, openEventFd(), names, base);
    } catch (e) {
      if (inotify >= 0) closeFd(inotify);
      log.info(
        "cannot watch {dir} for KV changes ({error}); watchers poll the file's stamp instead",
        { dir: dirname(path), error: (e as Error).message },
      );
      return null;
    }
  }

  /** False once the watch has ended (closed or failed): callers poll on their own. */
  get alive(): boolean {
    return this.#alive;
  }

  /** Counts change events seen so far; pass it to {@link wait}. */
  get generation(): number {
    return this.#gen;
  }

  /**
   * True when the database file itself changed after generation `seen`: with weft writers that is
   * {@link touchAfterCommit}, so a poll now sees every commit made before it (no settle polls).
   */
  fileChangedSince(seen: number): boolean {
    return this.#fileGen > seen;
  }

  #bump(file = false) {
    this.#gen++;
    if (file) this.#fileGen = this.#gen;
    const ws = [...this.#waiters];
    this.#waiters.clear();
    for (const w of ws) w();
  }

  /** Resolves once the generation moved past `seen`, after `ms`, or when `signal` aborts. */
  wait(seen: number, ms: number, signal: AbortSignal): Promise<void> {
    if (this.#gen !== seen || signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        this.#waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener("abort", done, { once: true });
      this.#waiters.add(done);
    });
  }

  /** Stops the watch and wakes every waiter. Idempotent. */
  async close(): Promise<void> {
    if (!this.#closing && this.#alive) {
      this.#closing = true;
      signalEventFd(this.#stopFd);
    }
    this.#closing = true;
    await this.#done;
  }
}
