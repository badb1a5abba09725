/**
 * Waking KV watchers when the database changes, instead of polling on a short timer. A commit by
 * any process on this machine writes the SQLite file's `-wal` (or the file itself), so an inotify
 * watch (`Deno.watchFs`) on the file's directory is the trigger to read the change log; a slow
 * safety poll covers what inotify can miss (queue overflow, a file replaced under it).
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
 * wake!.close();
 * ```
 */
import { basename, dirname } from "node:path";
import { getLogger } from "@logtape/logtape";

const log = getLogger(["weft", "registry"]);

/**
 * Sets the KV file's times after a commit: an inotify event that, unlike the WAL writes, comes
 * after the change is readable. Best effort (a read-only file only loses the early wake-up).
 */
export async function touchAfterCommit(path: string): Promise<void> {
  const now = new Date();
  try {
    await Deno.utime(path, now, now);
  } catch (e) {
    log.debug("cannot touch {path} after a commit: {error}", { path, error: String(e) });
  }
}

export class FileWake {
  #gen = 0;
  /** The generation of the last event on the database file itself (a touch, a checkpoint). */
  #fileGen = 0;
  #waiters = new Set<() => void>();
  #watcher: Deno.FsWatcher;
  #done: Promise<void>;
  #alive = true;

  private constructor(watcher: Deno.FsWatcher, names: Set<string>, file: string) {
    this.#watcher = watcher;
    this.#done = (async () => {
      try {
        for await (const ev of watcher) {
          if (ev.kind === "access") continue;
          if (ev.paths.length && !ev.paths.some((p) => names.has(basename(p)))) continue;
          this.#bump(ev.paths.some((p) => basename(p) === file));
        }
      } catch (e) {
        log.warn("file watch on the KV database stopped ({error}); watchers fall back to polling", {
          error: String(e),
        });
      }
      this.#alive = false;
      this.#bump();
    })();
  }

  /**
   * Watches the directory of the KV file at `path` (not the files: SQLite removes and recreates
   * `-wal`). Returns null when the watch cannot be set up (no permission, inotify instance
   * limit `fs.inotify.max_user_instances` reached), after saying so: watchers then poll.
   */
  static start(path: string): FileWake | null {
    const base = basename(path);
    const names = new Set([base, `${base}-wal`, `${base}-shm`, `${base}-journal`]);
    try {
      return new FileWake(Deno.watchFs(dirname(path), { recursive: false }), names, base);
    } catch (e) {
      log.info(
        "cannot watch {dir} for KV changes ({error}); watchers poll instead (raise " +
          "fs.inotify.max_user_instances if that is the limit)",
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

  /** Stops the watch and wakes every waiter. */
  async close(): Promise<void> {
    try {
      this.#watcher.close();
    } catch { /* already closed */ }
    await this.#done;
  }
}
