/**
 * Collects per-peer datapath failures so one bad peer never blocks the others; the batch then
 * fails with one message listing them (the agent logs it and the next reconciliation retries).
 */
/** Some peers could not be programmed; the others were. Retried by the next reconciliation. */
export class PeerFailuresError extends Error {
  override name = "PeerFailuresError";
  constructor(message: string, readonly count: number) {
    super(message);
  }
}

export class PeerFailures {
  #errors: string[] = [];

  /** Runs `fn`; a failure is recorded against `peer` instead of thrown. */
  run(peer: string, fn: () => void): void {
    try {
      fn();
    } catch (e) {
      this.add(peer, e);
    }
  }

  /** Records `e` against `peer` (a failure found without running a function, e.g. in a batch). */
  add(peer: string, e: unknown): void {
    this.#errors.push(`${peer}: ${(e as Error).message}`);
  }

  throwIfAny(what: string): void {
    if (this.#errors.length === 0) return;
    const shown = this.#errors.slice(0, 5).join("; ");
    const more = this.#errors.length > 5 ? ` (and ${this.#errors.length - 5} more)` : "";
    throw new PeerFailuresError(
      `${what} failed for ${this.#errors.length} peer(s): ${shown}${more}`,
      this.#errors.length,
    );
  }
}
