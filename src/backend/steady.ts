/**
 * The periodic reconcile's shortcut when nothing changed (issue #12: 5000 peers, ≤ 50 ms a
 * round). A backend reads its kernel tables through `DumpMemo`s (ffi/libnl/dump.ts), which hand
 * back the very array of the last read while a table stands still. When the peers are the same
 * lease objects (the watcher keeps a lease's object until the lease changes) and every table is
 * the same array as in the last round that found nothing to do, this round would find nothing
 * either: the diff is skipped. Anything else (a lease changed, an entry removed or altered by
 * hand, an event applied in between) runs the full diff, which repairs it.
 *
 * @example
 * ```ts
 * const tables = [nl.routeList({}, memo)];
 * if (this.#steady.holds(peers, tables)) return; // nothing to do
 * const done = diffAndRepair(peers, tables);
 * if (done === 0) this.#steady.settle(peers, tables);
 * else this.#steady.reset();
 * ```
 */
import type { Lease } from "../lease/codec.ts";

export class SteadyRounds {
  #peers: Set<Lease> | null = null;
  #tables: readonly unknown[] = [];

  /** Whether `peers` and `tables` are what {@link settle} recorded (peers in any order). */
  holds(peers: readonly Lease[], tables: readonly unknown[]): boolean {
    const had = this.#peers;
    if (!had || had.size !== peers.length || tables.length !== this.#tables.length) return false;
    for (let i = 0; i < tables.length; i++) if (tables[i] !== this.#tables[i]) return false;
    for (const p of peers) if (!had.has(p)) return false;
    return true;
  }

  /** Records a round that changed nothing: its peers, and the tables it read. */
  settle(peers: readonly Lease[], tables: readonly unknown[]): void {
    this.#peers = new Set(peers);
    this.#tables = tables;
  }

  /** Forgets the last steady round: the next one runs the full diff. */
  reset(): void {
    this.#peers = null;
    this.#tables = [];
  }
}
