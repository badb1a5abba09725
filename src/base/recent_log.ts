/**
 * The last warnings and errors this process logged, kept in memory for `/status` ("last
 * errors"): a bounded ring filled by a logging sink (log.ts), so every module's problems show
 * without each one reporting them twice.
 *
 * @example
 * ```ts
 * recentProblems.add({ at: Date.now(), level: "error", logger: "weft.agent", msg: "…" });
 * recentProblems.list(); // oldest first, at most 20
 * ```
 */

export interface LoggedProblem {
  /** Epoch ms. */
  at: number;
  level: string;
  logger: string;
  msg: string;
}

export class RecentProblems {
  #items: LoggedProblem[] = [];
  constructor(readonly capacity = 20) {}
  add(p: LoggedProblem): void {
    this.#items.push(p);
    if (this.#items.length > this.capacity) this.#items.shift();
  }
  /** Oldest first. */
  list(): LoggedProblem[] {
    return [...this.#items];
  }
}

/** The process-wide ring that setupLogging fills with warning and error records. */
export const recentProblems: RecentProblems = new RecentProblems();
