/**
 * The KvStore a registry works on, and reopening it when its file is no longer the one at the
 * path (deleted, replaced, broken; see file_guard.ts). Every registry operation runs through
 * {@link ReopeningStore.track}: it checks the file first (at most once a second, at once after a
 * failure), hands the operation the current store, and is waited for by close().
 *
 * @example
 * ```ts
 * const h = new ReopeningStore(kv, file, closing.signal, (kv) => new KvStore(kv, keys, ...));
 * const rev = await h.track((s) => s.kv.get<number>(s.keys.counter));
 * h.problem(); // null, or why this node must not look ready
 * ```
 */
import { getLogger } from "@logtape/logtape";
import { RegistryError } from "../contract/registry.ts";
import type { KvStore } from "./commit.ts";
import { FileGuard, isBrokenFileError, KvFileError } from "./file_guard.ts";

const log = getLogger(["weft", "registry"]);

/** A local KV file: its guard, and how to open the path again. */
export interface KvFile {
  guard: FileGuard;
  open(): Promise<Deno.Kv>;
  /** Mutations run on a second handle of the file (see KvStore.writeKv): reopen both. */
  writeHandle?: boolean;
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

export class ReopeningStore {
  #store: KvStore;
  #inflight = new Set<Promise<unknown>>();
  #checkedAt = 0;
  #problem: string | null = null;
  /** Bumped on every reopen: watchers re-list (the new file has its own history). */
  #generation = 0;
  /**
   * Set by a reopen until a watcher has handled its list of the new file: until then this
   * node's lease may be missing there unnoticed, so the node must not look ready.
   */
  #relisting: string | null = null;
  /** The highest revision this registry has handed out (commits, lists, watch messages). */
  #seen = 0;

  /**
   * `kv` (and `writeKv`, the handle for mutations: see KvStore.writeKv): the opened store,
   * wrapped by `make` (which is also used for a reopened one); `file`:
   * the local file's guard (none for KV Connect); `closing`: aborts when the registry closes.
   */
  constructor(
    kv: Deno.Kv,
    private readonly file: KvFile | null,
    private readonly closing: AbortSignal,
    private readonly make: (kv: Deno.Kv, writeKv: Deno.Kv) => KvStore,
    writeKv: Deno.Kv = kv,
  ) {
    this.#store = make(kv, writeKv);
  }

  /** The store operations use now (replaced by a reopen). */
  get store(): KvStore {
    return this.#store;
  }

  /** Counts reopens: a watcher that saw another generation re-lists. */
  get generation(): number {
    return this.#generation;
  }

  /** Why the registry cannot be trusted now (its file deleted, replaced, broken), or null. */
  problem(): string | null {
    return this.#problem ?? this.#relisting;
  }

  /** Notes a revision handed out (carried into a reopened file: see carryRevision). */
  saw(revision: number): void {
    if (revision > this.#seen) this.#seen = revision;
  }

  /** A watcher has handled its list of the file of `generation`: ready again if still current. */
  relisted(generation: number): void {
    if (generation === this.#generation) this.#relisting = null;
  }

  /**
   * Runs `fn` on the current store, tracked so close() waits for it before closing the Kv under
   * it. First makes sure the open file is still the one at the path (see FileGuard); SQLite
   * errors that mean the file is broken mark it for reopening.
   */
  track<T>(fn: (s: KvStore) => Promise<T>): Promise<T> {
    if (this.closing.aborted) {
      return Promise.reject(new RegistryError("the KV registry is closed"));
    }
    const p = (async () => {
      await this.#checkFile();
      try {
        return await fn(this.#store);
      } catch (e) {
        if (this.file && isBrokenFileError(e)) {
          this.#problem = `KV file ${this.file.guard.path} is broken (${(e as Error).message})`;
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
    const f = this.file;
    if (!f || (this.#problem === null && Date.now() - this.#checkedAt < 1000)) return;
    this.#checkedAt = Date.now();
    const what = f.guard.problem();
    if (what === null && this.#problem === null) return;
    const why = what ? `KV file ${f.guard.path} ${what} under this agent` : this.#problem!;
    let kv: Deno.Kv;
    let writeKv: Deno.Kv;
    let st: Deno.FileInfo;
    try {
      st = f.guard.candidate();
      kv = await f.open();
      writeKv = kv;
      try {
        if (f.writeHandle) writeKv = await f.open();
        // Removed between the stat and the opens: they made a new file; not ours to use.
        FileGuard.same(f.guard.path, st);
        await kv.get(this.#store.keys.counter); // a file that is no database fails here
      } catch (e) {
        kv.close();
        if (writeKv !== kv) writeKv.close();
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
    this.#store = this.make(kv, writeKv);
    f.guard.rearm(st);
    this.#generation++;
    this.#problem = null;
    this.#relisting = `${why}; reopened it, re-listing its leases`;
    old.close();
    log.error("{why}; reopened the file now at the path: leases are re-listed and re-created", {
      why,
    });
  }

  /** Waits for the operations in flight, then closes the Kv (call after `closing` aborted). */
  async close(): Promise<void> {
    await Promise.allSettled([...this.#inflight]);
    this.#store.close();
  }
}
