/**
 * The periodic reconcile's shortcut when nothing changed (issue #12: 5000 peers, ≤ 50 ms a
 * round). A backend reads its kernel tables through `DumpMemo`s (ffi/libnl/dump.ts), which hand
 * back the very array of the last read while a table stands still. When every peer wants what it
 * wanted (compared as one text per peer: its key and its entries, made once per lease object) and
 * every table is the same array as in the last round that found nothing to do, this round would
 * find nothing either: the diff is skipped. A renewed lease (new expiry, same entries) keeps the
 * round steady; anything else (a peer added, gone or changed, an entry removed or altered by
 * hand or by an event applied in between) is diffed and repaired: when a few things changed,
 * only they ({@link since}, the memos' `changeSince`, the backends' incremental diff), else all.
 *
 * @example
 * ```ts
 * const tables = [nl.routeList({}, memo)];
 * const sigs = peers.map((p) => `${p.key}>${wantedText(p)}`);
 * if (this.#steady.holds(sigs, tables)) return; // nothing to do
 * const done = diffAndRepair(peers, tables);
 * if (done === 0) this.#steady.settle(sigs, tables);
 * else this.#steady.reset();
 * ```
 */
export class SteadyRounds {
  #peers: readonly string[] | null = null;
  /** The same peers as a set, made only when a round hands them in another order. */
  #set: Set<string> | null = null;
  #tables: readonly unknown[] = [];
  /** Per peer of the settled round, what the backend handed with its text (its lease). */
  #items: readonly unknown[] = [];

  /**
   * Whether `peers` (one distinct text per peer: its key and what it wants in the kernel, in any
   * order) and `tables` are what {@link settle} recorded.
   */
  holds(peers: readonly string[], tables: readonly unknown[]): boolean {
    const had = this.#peers;
    if (!had || had.length !== peers.length || tables.length !== this.#tables.length) return false;
    for (let i = 0; i < tables.length; i++) if (tables[i] !== this.#tables[i]) return false;
    let i = 0;
    while (i < peers.length && peers[i] === had[i]) i++; // the watcher's order is stable
    if (i === peers.length) return true;
    const set = this.#set ??= new Set(had);
    for (; i < peers.length; i++) if (!set.has(peers[i])) return false;
    return true;
  }

  /**
   * Records a round that changed nothing: its peers, the tables it read, and per peer an item
   * (its lease) for {@link since}.
   */
  settle(
    peers: readonly string[],
    tables: readonly unknown[],
    items: readonly unknown[] = [],
  ): void {
    this.#peers = [...peers];
    this.#set = null;
    this.#tables = tables;
    this.#items = [...items];
  }

  /**
   * Against the settled round: its tables, the items of its peers whose text is not in `peers`
   * (gone or changed), and the indexes into `peers` of those whose text is new; null when no
   * round is settled.
   */
  since<T>(
    peers: readonly string[],
  ): { tables: readonly unknown[]; gone: T[]; came: number[] } | null {
    const had = this.#peers;
    if (!had) return null;
    const set = this.#set ??= new Set(had);
    const came: number[] = [];
    for (let i = 0; i < peers.length; i++) if (!set.has(peers[i])) came.push(i);
    const now = new Set(peers);
    const gone: T[] = [];
    for (let i = 0; i < had.length; i++) if (!now.has(had[i])) gone.push(this.#items[i] as T);
    return { tables: this.#tables, gone, came };
  }

  /** The items of the settled round's peers ({@link settle}). */
  items<T>(): readonly T[] {
    return this.#items as T[];
  }

  /** Forgets the last steady round: the next one runs the full diff. */
  reset(): void {
    this.#peers = null;
    this.#set = null;
    this.#tables = [];
    this.#items = [];
  }
}
