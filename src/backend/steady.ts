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
    const m = middle(had, peers);
    if (m.head === peers.length) return true;
    const set = new Set(had.slice(m.head, m.hadEnd));
    for (let i = m.head; i < m.end; i++) if (!set.has(peers[i])) return false;
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
    const { head, hadEnd, end } = middle(had, peers);
    const set = new Set(had.slice(head, hadEnd));
    const came: number[] = [];
    for (let i = head; i < end; i++) if (!set.has(peers[i])) came.push(i);
    const now = new Set(peers.slice(head, end));
    const gone: T[] = [];
    for (let i = head; i < hadEnd; i++) if (!now.has(had[i])) gone.push(this.#items[i] as T);
    return { tables: this.#tables, gone, came };
  }

  /** Forgets the last steady round: the next one runs the full diff. */
  reset(): void {
    this.#peers = null;
    this.#tables = [];
    this.#items = [];
  }
}

/**
 * Where `had` and `now` differ: both share their first `head` texts and all after `hadEnd` (in
 * `had`) and `end` (in `now`). The watcher keeps its order, so a round after a few events
 * compares the rest alone: no set of every peer's text.
 */
function middle(
  had: readonly string[],
  now: readonly string[],
): { head: number; hadEnd: number; end: number } {
  let head = 0;
  while (head < had.length && head < now.length && had[head] === now[head]) head++;
  let hadEnd = had.length;
  let end = now.length;
  while (hadEnd > head && end > head && had[hadEnd - 1] === now[end - 1]) hadEnd--, end--;
  return { head, hadEnd, end };
}
