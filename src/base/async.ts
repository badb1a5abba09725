/**
 * Abortable waits and the registry retry backoff (100 ms doubling to 5 s), shared so that every
 * loop stops promptly on shutdown and none leaks abort listeners.
 *
 * @example
 * ```ts
 * const backoff = new Backoff();
 * while (!signal.aborted) {
 *   try { return await op(); } catch { await sleep(backoff.next(), signal); }
 * }
 * ```
 */

/** Resolves after `ms`, or at once when `signal` aborts; removes its listener either way. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise<void>((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}

/** Exponential backoff: 100 ms doubling to 5 s by default; `reset()` after a success. */
export class Backoff {
  #next: number;
  constructor(readonly first = 100, readonly max = 5000) {
    this.#next = first;
  }
  /** The delay to wait now; the following one doubles. */
  next(): number {
    const d = this.#next;
    this.#next = Math.min(this.#next * 2, this.max);
    return d;
  }
  reset(): void {
    this.#next = this.first;
  }
}
