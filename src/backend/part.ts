/**
 * The seam between the agent and the parts of the datapath that follow the node's own lease
 * rather than its peers' (flannel's iptables chains, the blackhole route). The agent runs parts
 * the way it runs a backend: `apply()` whenever the lease is (re)acquired, `check()` every
 * `checkIntervalMs` through {@link runChecks}, `stop()` on shutdown; /readyz names a part whose
 * lease has not been applied.
 *
 * @example
 * ```ts
 * await part.apply(cfg, lease, null); // throws: the agent cannot start
 * const loop = runChecks(part, signal); // repairs until signal aborts
 * await loop;
 * await part.stop();
 * ```
 */
import { getLogger } from "@logtape/logtape";
import type { NetworkConfig } from "../config/network.ts";
import type { Lease } from "../lease/codec.ts";
import { sleep } from "../base/async.ts";

const log = getLogger(["weft", "agent"]);

export interface Part {
  /** What the part keeps in place, for logs and /readyz: "iptables rules", "blackhole route". */
  readonly name: string;
  /** How often `check()` runs, in ms; 0: never (nothing to keep). */
  readonly checkIntervalMs: number;
  /**
   * The node holds `lease` (`prev`: the lease applied before, null at start): brings the part's
   * state in line with it, dropping what belonged to `prev`'s subnet. Throws when it could not;
   * at start that stops the agent, after a lease change the lease manager retries.
   */
  apply(cfg: NetworkConfig, lease: Lease, prev: Lease | null): Promise<void>;
  /**
   * Repairs what was changed under the part since the last apply or check, logs and counts what
   * it repaired, and returns true when it repaired something. Throws when the check failed.
   */
  check(): Promise<boolean>;
  /**
   * What keeps the node not ready although the part applied (found by the last check), or
   * null; parts without such a state leave it out.
   */
  problem?(): string | null;
  /** Ends work in flight; the kernel state stays (as flannel leaves it on shutdown). */
  stop(): Promise<void>;
}

/** Calls `part.check()` every `checkIntervalMs` until `signal` aborts; failures are logged. */
export async function runChecks(part: Part, signal: AbortSignal): Promise<void> {
  const ms = part.checkIntervalMs;
  if (ms <= 0) return;
  while (!signal.aborted) {
    await sleep(ms, signal);
    if (signal.aborted) return;
    try {
      await part.check();
    } catch (e) {
      log.error("{part} check failed: {error}; retrying in {s} s", {
        part: part.name,
        error: (e as Error).message,
        s: ms / 1000,
      });
    }
  }
}
