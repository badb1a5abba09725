/**
 * How the Deno KV registry lays out its data under `["weft", prefix]`, and the pure rules on it:
 * `"rev"` → number (the revision counter), `"config"` → string,
 * `"subnets", key` → StoredLease, `"log", rev` → LogEntry (the change log watchers replay).
 * TTLs are kept in the value (KV's own `expireIn` is swept only after about a minute).
 */
import type { Expiry, RegistryLease } from "../contract/registry.ts";

/** What is stored under a lease key. `writer` identifies the commit (see KvStore.mutate). */
export interface StoredLease {
  value: string;
  expiresAt: Expiry;
  revision: number;
  writer?: string;
}

/** One change-log entry; `at` (epoch ms) drives age-based compaction. */
export interface LogEntry {
  type: "put" | "delete";
  key: string;
  value?: string;
  expiresAt?: Expiry;
  at: number;
}

/**
 * Entries per KV read for scans that need no consistent view (the reaper's index, the change
 * log). KV's maximum (1000) made each scan of 5000 leases leave ~10 MiB more resident memory
 * outside the JS heap than this does. The consistent list (list.ts) keeps 1000: fewer reads
 * between its two counter reads.
 */
export const SCAN_BATCH = 250;

/** The KV keys of one registry prefix. */
export class KvKeys {
  readonly base: Deno.KvKey;
  readonly counter: Deno.KvKey;
  readonly config: Deno.KvKey;
  readonly subnets: Deno.KvKey;
  readonly log: Deno.KvKey;

  constructor(readonly prefix: string) {
    this.base = ["weft", prefix];
    this.counter = [...this.base, "rev"];
    this.config = [...this.base, "config"];
    this.subnets = [...this.base, "subnets"];
    this.log = [...this.base, "log"];
  }

  lease(key: string): Deno.KvKey {
    return [...this.subnets, key];
  }

  logAt(rev: number): Deno.KvKey {
    return [...this.log, rev];
  }
}

/** The last part of a KV key: the lease key of a subnets entry, the revision of a log entry. */
export function lastPart<T extends string | number>(key: Deno.KvKey): T {
  return key[key.length - 1] as T;
}

export function isExpired(s: StoredLease, now: number): boolean {
  return s.expiresAt !== null && s.expiresAt <= now;
}

export function toLease(key: string, s: StoredLease): RegistryLease {
  return { key, value: s.value, revision: s.revision, expiresAt: s.expiresAt };
}

export function checkTtl(ttlSeconds: number | null): void {
  if (ttlSeconds !== null && !(Number.isFinite(ttlSeconds) && ttlSeconds > 0)) {
    throw new RangeError(`lease TTL ${ttlSeconds} s is invalid: give a positive number or null`);
  }
}

/** The expiry of a lease written `now` with `ttlSeconds` (null: none). */
export function expiryOf(ttlSeconds: number | null, now: number): Expiry {
  return ttlSeconds === null ? null : now + ttlSeconds * 1000;
}
