/**
 * The registry's exact lease set at one revision, as the peer watcher last proved it: every key
 * with its decoded lease, or with the revision of a value that does not decode (the registry
 * counts it all the same). A full list sets it; a list of only what was written since, with the
 * registry's count, brings it forward ({@link VerifiedSet.advance}), so a periodic re-list of 5000
 * unchanged peers reads a count and nothing else instead of every lease.
 *
 * @example
 * ```ts
 * const v = VerifiedSet.of(full.leases, full.revision, decode);
 * if (!v.advance(await registry.listPeerLeases(v.revision), decode)) relistInFull();
 * ```
 */
import type { PeerList, RegistryLease, WatchedExpiry } from "../registry/contract/registry.ts";
import type { Lease } from "./codec.ts";

/** Decodes a listed lease (null: it does not decode, or is not for this node). */
export type Decode = (r: RegistryLease<WatchedExpiry>) => Lease | null;

export class VerifiedSet {
  private constructor(readonly set: Map<string, Lease | number>, public revision: number) {}

  /** The set a full list read at `revision`. */
  static of(rs: RegistryLease<WatchedExpiry>[], revision: number, decode: Decode): VerifiedSet {
    const set = new Map<string, Lease | number>();
    for (const r of rs) set.set(r.key, decode(r) ?? r.revision);
    return new VerifiedSet(set, revision);
  }

  /**
   * Brings the set forward to `r` (a list of what was written after `revision`) when its count
   * proves nothing else changed; false when it does not (a lease was deleted or expired since,
   * or a key is not a lease: list in full), and the set is left as it was.
   *
   * Why a count is enough: the registry's set at `r.revision` is `r.leases` plus those keys of
   * this set that were not written since and still exist. Any write after `revision` (a create
   * after a delete, a renewal, a value rewritten with the same content) moves the key's revision
   * past it, so it is in `r.leases` with its new value; a key not written since is exactly as
   * this set has it. So only deletions and expiries go unseen, and each one makes `r.count`
   * smaller than this set's keys plus the new ones: equal counts prove there were none.
   * Compaction does not matter (nothing is read at an old revision). An O(1) check of the
   * newest revision alone would not do: it proves that nothing changed since the revision a
   * watch applied, not that the watch applied everything before it.
   */
  advance(r: PeerList, decode: Decode): boolean {
    let fresh = 0;
    for (const l of r.leases) if (!this.set.has(l.key)) fresh++;
    if (this.set.size + fresh !== r.count) return false;
    for (const l of r.leases) this.set.set(l.key, decode(l) ?? l.revision);
    this.revision = r.revision;
    return true;
  }
}
