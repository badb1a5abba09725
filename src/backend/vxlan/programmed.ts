/**
 * The peers a vxlan backend has programmed, and how many of them name each FDB entry
 * (`<VTEP ifindex>/<MAC>`): two leases naming one VTEP (a stale duplicate of a live peer) share
 * its FDB entry, which must outlive the stale one. Kept by +1/−1 per lease that comes, goes or
 * changes, so neither an event nor a periodic round with 5000 unchanged peers recounts (or
 * rebuilds) every peer.
 *
 * @example
 * ```ts
 * const p = new ProgrammedPeers((l) => entriesOf(l));
 * p.set(lease);                 // an added event
 * p.remove(lease.key);          // a removed one
 * p.sharedFdb(entries);         // whether another programmed peer still names its FDB entry
 * p.take(peers);                // a reconcile: exactly `peers` now
 * ```
 */
import type { Lease } from "../../lease/codec.ts";
import type { PeerEntries } from "./entries.ts";

export class ProgrammedPeers {
  #peers = new Map<string, Lease>();
  #fdbUsers = new Map<string, number>();
  /** A lease's entries as programmed (the same answer for one lease while the VTEPs stand). */
  #entriesOf: (l: Lease) => readonly PeerEntries[];

  constructor(entriesOf: (l: Lease) => readonly PeerEntries[]) {
    this.#entriesOf = entriesOf;
  }

  get size(): number {
    return this.#peers.size;
  }

  get(key: string): Lease | undefined {
    return this.#peers.get(key);
  }

  values(): IterableIterator<Lease> {
    return this.#peers.values();
  }

  /** `l` is programmed now (in place of the lease of its key before). */
  set(l: Lease): void {
    const had = this.#peers.get(l.key);
    if (had) this.#count(had, -1);
    this.#count(l, 1);
    this.#peers.set(l.key, l);
  }

  /** The lease under `key` is no longer programmed. */
  remove(key: string): void {
    const had = this.#peers.get(key);
    if (!had) return;
    this.#peers.delete(key);
    this.#count(had, -1);
  }

  /** Whether a programmed peer names `e`'s FDB entry. */
  sharedFdb(e: PeerEntries): boolean {
    return e.fdb !== undefined && this.#fdbUsers.has(fdbKey(e));
  }

  /**
   * Makes `peers` (distinct keys, as the watcher hands them) the programmed peers: only leases
   * that differ from the programmed ones are counted. `fresh`: forget and count every peer (the
   * VTEPs were recreated, or a lease's entries can change without the lease: DirectRouting).
   */
  take(peers: readonly Lease[], fresh = false): void {
    if (fresh) {
      this.#peers = new Map();
      this.#fdbUsers = new Map();
    }
    for (const p of peers) if (this.#peers.get(p.key) !== p) this.set(p);
    if (this.#peers.size === peers.length) return;
    const keep = new Set<string>();
    for (const p of peers) keep.add(p.key);
    for (const k of [...this.#peers.keys()]) if (!keep.has(k)) this.remove(k);
  }

  #count(l: Lease, d: number) {
    for (const e of this.#entriesOf(l)) {
      if (!e.fdb) continue;
      const k = fdbKey(e);
      const n = (this.#fdbUsers.get(k) ?? 0) + d;
      if (n > 0) this.#fdbUsers.set(k, n);
      else this.#fdbUsers.delete(k);
    }
  }
}

/** The FDB entry's identity of `e` (VTEP ifindex and MAC). */
function fdbKey(e: PeerEntries): string {
  return `${e.dev}/${e.fdb!.mac}`;
}
