/**
 * Gives the C heap back after a burst. A full list and reconcile of 5000 peers allocates (and
 * frees) tens of MiB of buffers outside V8's heap; glibc keeps those pages resident in its arenas
 * (an etcd agent with 5000 peers: 112 MiB RSS, 95 MiB once trimmed). The pages are freed only
 * when V8 has collected the buffers' JS objects, some time after the burst, so the trim runs at
 * the next two self-check ticks (5 s apart) after each full reconcile, never while idle: ~3 ms
 * each, per burst.
 *
 * @example
 * ```ts
 * const trim = new HeapTrim();
 * trim.burst();   // after a full reconcile
 * trim.tick();    // every self-check tick: trims while a burst is recent
 * ```
 */
import { releaseFreeHeap } from "../../ffi/libc/heap.ts";

/** Ticks after a burst that trim: the first may come before V8 collected the burst's garbage. */
const TRIMS_PER_BURST = 2;

export class HeapTrim {
  #due = 0;
  #trims = 0;

  /** How many trims ran (for tests). */
  get trims(): number {
    return this.#trims;
  }

  /** A burst of allocations just ended (a full list and reconcile). */
  burst(): void {
    this.#due = TRIMS_PER_BURST;
  }

  /** Called every self-check tick; trims while a burst is recent. Never throws. */
  tick(release: () => unknown = releaseFreeHeap): void {
    if (this.#due === 0) return;
    this.#due--;
    this.#trims++;
    try {
      release();
    } catch {
      // No glibc or no --allow-ffi: the memory stays resident, nothing else changes.
    }
  }
}
