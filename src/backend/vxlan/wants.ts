/**
 * Per peer lease, the entries it wants (with the key failures are recorded against) and their
 * text for the steady test (steady.ts), made once: the watcher hands the same lease object until
 * the lease changes, so a periodic reconcile of 5000 unchanged peers builds none of them again.
 * A new object of a programmed lease that wants the same (a re-list decodes every lease anew; a
 * renewal changes only the expiry) takes the wants of the programmed one: no entries and no
 * text rebuilt per peer in the round after a full re-list.
 *
 * @example
 * ```ts
 * const wants = new WantsCache({ all, devs, cache: () => !directRouting, programmed });
 * wants.of(lease).wants;    // [{ key, e }] per VTEP
 * wants.signature(lease);   // "<key>><entries as text>"
 * ```
 */
import type { Lease } from "../../lease/codec.ts";
import { entriesText, type PeerEntries, sameEntryInputs } from "./entries.ts";
import type { Want } from "./reconcile.ts";

/** A lease's wants, and the VTEPs' ifindexes they were made for (recreated VTEPs get new ones). */
export interface Wants {
  dev: number | undefined;
  dev6: number | undefined;
  wants: Want[];
  /** The entries of {@link wants}. */
  entries: PeerEntries[];
  /** The lease's key and entries as text ({@link entriesText}), made when first asked for. */
  sig?: string;
}

/** What the cache asks its backend. */
export interface WantsSource {
  /** Every entry the lease needs, both families; null: none usable. */
  all(l: Lease): PeerEntries[] | null;
  /** The IPv4 VTEP's ifindex now. */
  dev(): number | undefined;
  /** The IPv6 VTEP's ifindex now. */
  dev6(): number | undefined;
  /** Whether wants may be kept (not with DirectRouting: whether a peer is on-link can change). */
  cache(): boolean;
  /** The programmed lease under `key`, if any. */
  programmed(key: string): Lease | undefined;
}

export class WantsCache {
  #byLease = new WeakMap<Lease, Wants>();
  #src: WantsSource;

  constructor(src: WantsSource) {
    this.#src = src;
  }

  /** `l`'s wants, cached per lease object (and shared with an equal programmed one). */
  of(l: Lease): Wants {
    const dev = this.#src.dev();
    const dev6 = this.#src.dev6();
    const hit = this.#byLease.get(l);
    if (hit && hit.dev === dev && hit.dev6 === dev6) return hit;
    const cache = this.#src.cache();
    const had = cache ? this.#src.programmed(l.key) : undefined;
    const was = had && had !== l ? this.#byLease.get(had) : undefined;
    if (was && was.dev === dev && was.dev6 === dev6 && sameEntryInputs(had!, l)) {
      this.#byLease.set(l, was);
      return was;
    }
    const entries = this.#src.all(l) ?? [];
    const w: Wants = { dev, dev6, entries, wants: entries.map((e): Want => ({ key: l.key, e })) };
    if (cache) this.#byLease.set(l, w);
    return w;
  }

  /**
   * What the steady test (steady.ts) compares per peer: its key and wanted entries as text, so
   * a renewed lease (a new object, the same entries) keeps the round steady.
   */
  signature(l: Lease, w: Wants = this.of(l)): string {
    return w.sig ??= `${l.key}>${w.wants.map((x) => entriesText(x.e)).join(";")}`;
  }
}
