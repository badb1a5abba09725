/**
 * Gives memory back after a burst. A full list and reconcile of 5000 peers allocates (and drops)
 * tens of MiB: V8 keeps the heap pages it grew to (the garbage is promoted, as the young
 * generation is small with `--optimize-for-size`, and nothing shrinks the heap while the agent
 * idles: each periodic re-list grew it further), and glibc keeps the freed buffers' pages in its
 * arenas. So at the next self-check tick after a full reconcile (5 s later) the agent runs one
 * memory-reducing full GC (V8's `gc()`, exposed by `--expose-gc` in src/base/v8_flags.ts) if the
 * heap grew by 4 MiB since the last one (or since the start), gives the C heap's free pages back (`malloc_trim`, ~3
 * ms), and trims once more a tick later; never while idle. An etcd agent with 5000 peers: 112 MiB
 * RSS → 84–86 MiB, and no growth from re-lists (it grew to 97 MiB in 3 minutes without the GC).
 *
 * @example
 * ```ts
 * const trim = new HeapTrim();
 * trim.burst();   // after a full reconcile
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
  /** Heap size after the last GC, or when the agent started: an agent with few peers never GCs. */
  #afterGc: number;

  constructor(
    readonly release: () => unknown = releaseFreeHeap,
    readonly collect: () => void = collectGarbage,
    readonly heapSize: () => number = heapBytes,
  ) {
    this.#afterGc = heapSize();
  }

  /** How many trims and collections ran (for tests). */
  get counts(): { trims: number; collects: number } {
    return { trims: this.#trims, collects: this.#collects };
  }

  /** A burst of allocations just ended (a full list and reconcile). */
  burst(): void {
    this.#due = TRIMS_PER_BURST;
  }

  /** Called every self-check tick; collects and trims while a burst is recent. Never throws. */
  tick(): void {
    if (this.#due === 0) return;
    try {
      if (this.#due === TRIMS_PER_BURST && this.heapSize() - this.#afterGc >= GC_GROWTH_BYTES) {
        this.#collects++;
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
