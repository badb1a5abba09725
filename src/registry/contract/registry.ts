/**
 * The seam between lease policy and storage. Two implementations (etcd v3 and Deno KV) give the
 * same semantics: TTL leases, create-only allocation, compare-and-put, and a revision-ordered watch
 * that resumes from a revision and asks for a re-list when history is gone.
 *
 * Keys here are relative to `<prefix>/subnets/` ("198.19.5.0-24"); values are raw strings, so a
 * malformed value from any writer reaches the lease layer, which logs and skips it.
 */
import { FatalError } from "../../base/errors.ts";

/**
 * When a lease expires, as every read and write of it knows: epoch ms, or null when it has no TTL
 * (a reservation).
 */
export type Expiry = number | null;

/**
 * What a watch's put knows about the expiry: etcd sends a TTL lease's id but not its expiry, and
 * looking it up would cost a round trip per event, while watchers need the value, not the expiry.
 * `"unknown"` says so explicitly; it is never 0 and never a time.
 */
export type WatchedExpiry = Expiry | "unknown";

/** One stored lease, undecoded. `E` is `Expiry` except in a watch's puts (`WatchedLease`). */
export interface RegistryLease<E extends WatchedExpiry = Expiry> {
  key: string;
  value: string;
  /** Revision of the last write to this key (etcd mod_revision; KV change-log revision). */
  revision: number;
  /** See `Expiry`: lists, gets, creates and updates always know it. */
  expiresAt: E;
}

/** A lease as a watch's put carries it: its expiry may be `"unknown"`. */
export type WatchedLease = RegistryLease<WatchedExpiry>;

/** A stored lease's key and the revision of its last write, without its value. */
export interface RegistryKey {
  key: string;
  revision: number;
}

export type LeaseChange =
  | { type: "put"; lease: WatchedLease }
  | { type: "delete"; key: string; revision: number };

/**
 * What a watch yields: ordered changes, or a full snapshot when the registry could not replay
 * history (compaction, a watcher too far behind). The consumer diffs a snapshot against its view.
 */
export type WatchMessage =
  | { kind: "changes"; changes: LeaseChange[]; revision: number }
  | { kind: "snapshot"; leases: RegistryLease<WatchedExpiry>[]; revision: number };

/**
 * What listPeerLeases returns. `count` is how many leases a full list would return at `revision`
 * (with `since`, most of them are not in `leases`). It is what makes a partial list a proof: a
 * reader that knows the exact set at `since` and gets `count` = (that set minus the keys written
 * since, plus `leases`) knows that nothing else was deleted, so the set at `revision` is exactly
 * that (see PeerWatcher.relist). etcd counts every key under `subnets/`, so a key that is not a
 * lease (one with a "/" below it) makes the counts differ, and such a reader lists in full.
 */
export interface PeerList {
  leases: RegistryLease<WatchedExpiry>[];
  count: number;
  revision: number;
}

/** Raised for operations that cannot succeed by retrying (bad credentials, bad URL). */
export class RegistryError extends FatalError {
  override name = "RegistryError";
}

export interface Registry {
  /** "etcd" or "kv", for logs and metrics. */
  readonly kind: string;
  /** The network config text, or null when none is stored. */
  getConfig(): Promise<string | null>;
  putConfig(text: string): Promise<void>;
  /** All leases (expired ones excluded) and the revision they were read at. */
  listLeases(): Promise<{ leases: RegistryLease[]; revision: number }>;
  /**
   * Like listLeases, for watchers, which need the values, not the expiries: a TTL lease's expiry
   * may be "unknown" (etcd keeps only a lease id per key; looking each up is one call per lease).
   * With `since`: only the leases written after that revision (deletes are not reported), so a
   * node that listed at `since` reads what changed instead of every lease again.
   */
  listPeerLeases(since?: number): Promise<PeerList>;
  /**
   * Every lease key with its revision, without values (etcd: a keys-only range), for choosing a
   * free subnet: the key is the subnet. A TTL lease that has just expired may still be listed
   * until the registry deletes it (etcd: within about a second), as by listPeerLeases.
   */
  listLeaseKeys(): Promise<{ keys: RegistryKey[]; revision: number }>;
  getLease(key: string): Promise<RegistryLease | null>;
  /**
   * Writes `key` only if it does not exist. ttlSeconds null = no TTL.
   * Returns the stored lease, or null when the key already existed.
   *
   * A lease that expired but is not yet deleted counts as absent: the create succeeds, and
   * watchers see the old lease's delete first and then the new put (a higher revision), as etcd
   * shows it when its lease reaper runs before the create.
   */
  createLease(key: string, value: string, ttlSeconds: number | null): Promise<RegistryLease | null>;
  /**
   * Writes `key` only if its revision is still `expectRevision` (renewal, takeover of one's own
   * lease). ttlSeconds null = no TTL. Returns the stored lease, or null when the compare failed.
   */
  updateLease(
    key: string,
    value: string,
    ttlSeconds: number | null,
    expectRevision: number,
  ): Promise<RegistryLease | null>;
  /** Deletes `key` (if `expectRevision` is given, only while it is unchanged). True if deleted. */
  deleteLease(key: string, expectRevision?: number): Promise<boolean>;
  /**
   * Changes after `fromRevision`, in revision order, until `signal` aborts. Reconnects with
   * backoff (100 ms doubling to 5 s) internally; never throws for transient errors.
   */
  watchLeases(fromRevision: number, signal: AbortSignal): AsyncIterable<WatchMessage>;
  /**
   * Why the store cannot be trusted now although it may answer (a Deno KV file deleted or
   * replaced under the agent), or null. Readiness reports it; an outage is not such a problem.
   */
  problem?(): string | null;
  close(): Promise<void>;
}
