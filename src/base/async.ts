/**
 * The one home for waiting: abortable sleeps, exponential backoff (the registry retry policy is
 * 100 ms doubling to 5 s), timeouts on promises and deadlines, so that every loop stops promptly
 * on shutdown and none leaks timers or abort listeners.
 *
 * @example
 * ```ts
 * const backoff = new Backoff();
 * while (!signal.aborted) {
 *   try { return await op(); } catch { await sleep(backoff.next(), signal); }
 * }
 * const config = await withTimeout(registry.getConfig(), 5000, "reading the config");
 * ```
 */

/**
 * The longest delay one `setTimeout` honours (2^31−1 ms, ~24.8 days); a longer one fires after
 * 1 ms, which turned a 30-day lease TTL into a renewal loop. Longer waits are chained from pieces.
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** The timer functions a wait uses; tests inject fakes to check long waits without waiting. */
export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(id: unknown): void;
}

const realTimers: Timers = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (id) => clearTimeout(id as number),
};

/**
 * Calls `fn` once after `ms` (any length: chained in pieces of at most MAX_TIMER_MS; NaN or
 * negative means at once, Infinity never); returns a function that cancels it.
 */
export function longTimeout(fn: () => void, ms: number, timers: Timers = realTimers): () => void {
  let left = Number.isNaN(ms) ? 0 : Math.max(0, ms);
  let id: unknown;
  const arm = () => {
    const piece = Math.min(left, MAX_TIMER_MS);
    id = timers.setTimeout(() => {
      left -= piece;
      if (left > 0) arm();
      else fn();
    }, piece);
  };
  arm();
  return () => timers.clearTimeout(id);
}

/**
 * Resolves after `ms` (any length, see longTimeout), or at once when `signal` aborts; removes
 * its listener either way.
 */
export function sleep(ms: number, signal?: AbortSignal, timers?: Timers): Promise<void> {
  return new Promise<void>((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      cancel();
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const cancel = longTimeout(done, ms, timers);
    signal?.addEventListener("abort", done, { once: true });
  });
}

/**
 * Exponential backoff: 100 ms doubling to 5 s by default; `reset()` after a success. With
 * `jitter`, each delay is drawn from [d/2, d] so that many processes retrying one lock spread out.
 */
export class Backoff {
  #next: number;
  constructor(readonly first = 100, readonly max = 5000, readonly jitter = false) {
    this.#next = first;
  }
  /** The delay to wait now; the following one doubles. */
  next(): number {
    const d = this.#next;
    this.#next = Math.min(this.#next * 2, this.max);
    return this.jitter ? d / 2 + Math.random() * d / 2 : d;
  }
  reset(): void {
    this.#next = this.first;
  }
}

/** A promise that did not settle in time; the message names what and how long. */
export class TimeoutError extends Error {
  override name = "TimeoutError";
}

/**
 * Settles like `p`, or rejects with a TimeoutError "<what>: no answer within N s" after `ms`.
 * `p` itself is not cancelled (its eventual rejection is swallowed).
 */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let cancel = () => {};
  const t = new Promise<never>((_, reject) => {
    cancel = longTimeout(
      () => reject(new TimeoutError(`${what}: no answer within ${ms / 1000} s`)),
      ms,
    );
  });
  p.catch(() => {});
  return Promise.race([p, t]).finally(() => cancel());
}

/** A point in time to finish by: what is left of a budget shared by several steps. */
export class Deadline {
  readonly at: number;
  constructor(ms: number, readonly now: () => number = Date.now) {
    this.at = now() + ms;
  }
  /** Milliseconds left, never negative. */
  remaining(): number {
    return Math.max(0, this.at - this.now());
  }
  expired(): boolean {
    return this.remaining() === 0;
  }
}

/** Settles like `p`, or resolves to `undefined` as soon as `signal` aborts (no listener kept). */
export function abortable<T>(p: Promise<T>, signal: AbortSignal): Promise<T | undefined> {
  if (signal.aborted) {
    p.catch(() => {});
    return Promise.resolve(undefined);
  }
  let onAbort: () => void = () => {};
  const aborted = new Promise<undefined>((resolve) => {
    onAbort = () => resolve(undefined);
    signal.addEventListener("abort", onAbort, { once: true });
  });
  p.catch(() => {});
  return Promise.race([p, aborted]).finally(() => signal.removeEventListener("abort", onAbort));
}

/**
 * True when `p` settles (resolved or rejected) within `ms` and before `signal` aborts; false
 * otherwise. `p` itself is not cancelled: a bounded wait on something that may never finish.
 */
export async function settlesWithin(
  p: Promise<unknown>,
  ms: number,
  signal?: AbortSignal,
): Promise<boolean> {
  const settled = p.then(() => true, () => true);
  const waited = signal ? abortable(settled, signal).then((v) => v ?? false) : settled;
  try {
    return await withTimeout(waited, ms, "a bounded wait");
  } catch (e) {
    if (e instanceof TimeoutError) return false;
    throw e;
  }
}
