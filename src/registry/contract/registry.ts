/**
 * The seam between lease policy and storage. Two implementations (etcd v3 and Deno KV) give the
 * same semantics: TTL leases, create-only allocation, compare-and-put, and a revision-ordered watch
 * that resumes from a revision and asks for a re-list when history is gone.
 *
 * Keys here are relative to `<prefix>/subnets/` ("198.19.5.0-24"); values are raw strings, so a
 * malformed value from any writer reaches the lease layer, which logs and skips it.
 */

/** One stored lease, undecoded. */
export interface RegistryLease {
  key: string;
  value: string;
  /** Revision of the last write to this key (etcd mod_revision; KV change-log revision). */
  revision: number;
  /**
   * Epoch ms when the lease expires; null when it has no TTL (a reservation). Lists and gets
   * always carry it; a watch's put may carry 0 for a TTL lease whose expiry the registry does
   * not know without another round trip (etcd), since watchers need the value, not the expiry.
   */
  expiresAt: number | null;
}

export type LeaseChange =
  | { type: "put"; lease: RegistryLease }
  | { type: "delete"; key: string; revision: number };

/**
 * What a watch yields: ordered changes, or a full snapshot when the registry could not replay
 * history (compaction, a watcher too far behind). The consumer diffs a snapshot against its view.
 */
export type WatchMessage =
  | { kind: "changes"; changes: LeaseChange[]; revision: number }
  | { kind: "snapshot"; leases: RegistryLease[]; revision: number };

/** Raised for operations that cannot succeed by retrying (bad credentials, bad URL). */
export class RegistryError extends Error {
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
  getLease(key: string): Promise<RegistryLease | null>;
  /**
   * Writes `key` only if it does not exist. ttlSeconds null = no TTL.
   * Returns the stored lease, or null when the key already existed.
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
  close(): Promise<void>;
}
