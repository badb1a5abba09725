/**
 * The agent's start-up retry around registry operations (read the leases, acquire one): retried
 * with a backoff (200 ms doubling to 5 s, base/async.ts) until it succeeds or the agent stops;
 * errors an operator must act on (out of subnets, bad config: a {@link FatalError}) are thrown at
 * once.
 *
 * @example
 * ```ts
 * const lease = await retryRegistry(signal, "acquire a lease", () => mgr.acquire(attrs));
 * if (!lease) return; // stopped while retrying
 * ```
 */
import { getLogger } from "@logtape/logtape";
import { Backoff, sleep } from "../base/async.ts";
import { FatalError } from "../base/errors.ts";

const log = getLogger(["weft", "agent"]);

/**
 * Runs `fn` until it succeeds (its result) or `signal` aborts (undefined); each failure is logged
 * as "cannot `what`: ...; retrying in N ms".
 */
export async function retryRegistry<T>(
  signal: AbortSignal,
  what: string,
  fn: () => Promise<T>,
): Promise<T | undefined> {
  const backoff = new Backoff(200);
  while (!signal.aborted) {
    try {
      return await fn();
    } catch (e) {
      if (e instanceof FatalError) throw e;
      if (signal.aborted) break;
      const ms = backoff.next();
      log.warn("cannot {what}: {error}; retrying in {ms} ms", {
        what,
        error: (e as Error).message,
        ms,
      });
      await sleep(ms, signal);
    }
  }
  return undefined;
}
