/**
 * Gives memory back after a burst. A full list and reconcile of 5000 peers allocates (and drops)
 * tens of MiB: V8 keeps the heap pages it grew to (the garbage is promoted, as the young
 * generation is small with `--optimize-for-size`, and nothing shrinks the heap while the agent
 * idles: each periodic re-list grew it further), and glibc keeps the freed buffers' pages in its
 * arenas. So 1 s after a full reconcile starts (`SETTLE_MS`) the agent runs one memory-reducing
 * full GC (V8's `gc()`, exposed by `--expose-gc` in src/base/v8_flags.ts) if the heap grew by 4
 * MiB since the last one (or since the start), gives the C heap's free pages back (`malloc_trim`,
 * ~3 ms), and trims once more at the next self-check tick; never while idle. An etcd agent with
 * 5000 peers: 112 MiB RSS → 84–86 MiB, and no growth from re-lists (it grew to 97 MiB in 3
 * minutes without the GC). Until that first trim a periodic re-list of 5000 peers holds ~10 MiB
 * more (its garbage): waiting for the next 5 s self-check tick, as before, kept it for up to 5 s
 * of every reconcile interval; the settle timer keeps it ~1 s.
 *
 * The settle trim after the agent's first burst (its first list and reconcile) always collects,
 * whatever the growth: by then the garbage of starting up is dead (module loading; on etcd,
 * protobufjs parsing etcd3's rpc.proto and grpc-js setting up), and without a full GC V8 kept it
 * while idle (its memory reducer, ~30 s in, freed only part). An idle etcd agent with no peers:
 * V8 heap 19.3 → 14.5 MiB, anonymous memory −2.5 to −5.5 MiB, RSS −2 to −4 MiB (bench/README.md
 * "scale.ts", session 8); the price is one full GC, once: 20–50 ms of CPU on etcd (load ~18).
 *
 * @example
 * ```ts
 * const trim = new HeapTrim();
 * trim.burst();   // a full reconcile starts: collects and trims 1 s later
 * trim.tick();    // every self-check tick: collects and trims while a burst is recent
 * ```
 */
import { getHeapStatistics } from "node:v8";
import { releaseFreeHeap } from "../../ffi/libc/heap.ts";

/** Ticks after a burst that trim: the GC of the first frees buffers the second trims too. */
const TRIMS_PER_BURST = 2;

/**
 * The full GC runs only once the heap has grown this much since the last one: it costs ~60 ms of
 * CPU with 5000 peers, and one re-list grows the heap by 1–3 MiB, so it runs every few re-lists.
 */
const GC_GROWTH_BYTES = 4 * 1024 * 1024;

/**
 * The first trim after a burst, this long after it: a re-list's garbage is dead by then (the
 * reconcile works on the peers taken from it), and a reconcile that takes longer leaves its own
 * to V8's GCs and the next tick's trim.
 */
export const SETTLE_MS = 1000;

function heapBytes(): number {
  return getHeapStatistics().total_heap_size;
}

type GcOptions = { type: "major"; execution: "sync"; flavor: "last-resort" };

/** V8's memory-reducing full GC when `--expose-gc` is set; a no-op otherwise. */
export function collectGarbage(): void {
  const gc = (globalThis as { gc?: (o: GcOptions) => void }).gc;
  gc?.({ type: "major", execution: "sync", flavor: "last-resort" });
}

export class HeapTrim {
  #due = 0;
  #trims = 0;
  #collects = 0;
  /** The first burst's settle trim is still to come (it collects whatever the growth). */
  #startup = true;
  #settle?: ReturnType<typeof setTimeout>;
  /** Heap size after the last GC, or when the agent started: an agent with few peers never GCs. */
  #afterGc: number;

  constructor(
    readonly release: () => unknown = releaseFreeHeap,
    readonly collect: () => void = collectGarbage,
    readonly heapSize: () => number = heapBytes,
    /** Delay of the first trim after a burst; null: only ticks trim (tests drive them). */
    readonly settleMs: number | null = SETTLE_MS,
  ) {
    this.#afterGc = heapSize();
  }

  /** How many trims and collections ran (for tests). */
  get counts(): { trims: number; collects: number } {
    return { trims: this.#trims, collects: this.#collects };
  }

  /** A burst of allocations just ended (a full list; its reconcile starts). */
  burst(): void {
    this.#due = TRIMS_PER_BURST;
    if (this.settleMs === null) return;
    clearTimeout(this.#settle);
    // Unref'd: it must not keep a stopping agent's process alive.
    const id = setTimeout(() => this.#trim(this.#startup), this.settleMs);
    Deno.unrefTimer(id as unknown as number);
    this.#settle = id;
  }

  /** Called every self-check tick; collects and trims while a burst is recent. Never throws. */
  tick(): void {
    this.#trim(false);
  }

  /** `force`: collect on this trim whatever the growth (the startup's settle trim). */
  #trim(force: boolean): void {
    if (this.#due === 0) return;
    try {
      const grown = this.heapSize() - this.#afterGc >= GC_GROWTH_BYTES;
      if (this.#due === TRIMS_PER_BURST && (force || grown)) {
        this.#collects++;
        this.#startup = false;
        this.collect();
        this.#afterGc = this.heapSize();
      }
      this.#trims++;
      this.release();
    } catch {
      // No glibc, or no --allow-ffi: the memory stays resident, nothing else changes.
    } finally {
      this.#due--;
    }
  }
}
