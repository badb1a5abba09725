/**
 * Gives the agent's parts (blackhole route, iptables rules: {@link Part}) each own lease, in the
 * order given, with the lease they were given before (`prev`, for what to remove). Readiness
 * names a part until its latest apply succeeded.
 *
 * @example
 * ```ts
 * const parts = new PartsApplier(state);
 * await parts.apply([blackholePart, iptablesPart], cfg, lease); // throws the first part's error
 * ```
 */
import type { NetworkConfig } from "../config/network.ts";
import type { Part } from "../backend/part.ts";
import type { Lease } from "../lease/codec.ts";
import type { ReadinessState } from "./readiness.ts";

export class PartsApplier {
  /** The lease the parts were last given (their `prev` on the next apply). */
  #partsLease: Lease | null = null;

  constructor(readonly state: ReadinessState) {}

  /**
   * Gives every part of `parts` the lease, in order. A part that throws stays not ready (named by /readyz)
   * and the error propagates: fatal at start, retried by the lease manager after a change.
   */
  async apply(parts: readonly Part[], cfg: NetworkConfig, lease: Lease): Promise<void> {
    const prev = this.#partsLease;
    for (const p of parts) {
      try {
        await p.apply(cfg, lease, prev);
        this.state.partsApplied.add(p);
      } catch (e) {
        this.state.partsApplied.delete(p);
        throw e;
      }
    }
    this.#partsLease = lease;
  }
}
