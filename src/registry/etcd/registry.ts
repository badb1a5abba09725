/**
 * The etcd v3 registry, in flannel's layout: config at `<prefix>/config`, leases at
 * `<prefix>/subnets/<key>` with an etcd lease carrying the TTL (none for reservations). Built on
 * npm:etcd3's raw gRPC clients (KV, Lease, Watch) so that writes are never retried behind our back
 * and the watch resumes from exactly the revision we last delivered. This module holds the reads
 * and writes (transactions under fresh etcd leases); opening, errors, expiries and the watch live
 * beside it.
 *
 * @example
 * ```ts
 * const reg = await openEtcdRegistry({ endpoints: ["http://198.18.0.1:2379"] });
 * const mine = await reg.createLease("198.19.5.0-24", value, 86400); // null if taken
 * const { leases, revision } = await reg.listLeases();
 * for await (const msg of reg.watchLeases(revision, signal)) apply(msg);
 * await reg.close();
 * ```
 */
import { Buffer } from "node:buffer";
import { getLogger } from "@logtape/logtape";
import {
  type PeerList,
  type Registry,
  RegistryError,
  type RegistryKey,
  type RegistryLease,
  type WatchedExpiry,
  type WatchMessage,
} from "../contract/registry.ts";
import { Backoff, Deadline, sleep } from "../../base/async.ts";
import { connect, type Connection, type Credentials, type EtcdRegistryOptions } from "./client.ts";
import { classified } from "./errors.ts";
import { EtcdKeys } from "./keys.ts";
import { ExpiryCache } from "./expiry.ts";
import { listPages, type Page } from "./list.ts";
import type { WatchStream } from "./stream.ts";
import { toLease, watchLeases } from "./watch.ts";

const log = getLogger(["weft", "registry"]);

/**
 * How long a create waits for etcd to delete a key whose lease has expired (etcd's lessor looks
 * for expired leases every 500 ms, then revokes them through raft).
 */
const REAP_WAIT_MS = 3000;

export class EtcdRegistry implements Registry {
  readonly kind = "etcd";
  readonly prefix: string;
  readonly #conn: Connection;
  readonly #keys: EtcdKeys;
  readonly #expiries: ExpiryCache;
  readonly #streams = new Set<WatchStream>();
  readonly #page?: number;
  #closed = false;

  /**
   * Prefer `openEtcdRegistry`, which reads the TLS files. `credentials` holds their contents.
   * Throws RegistryError for bad endpoints or option combinations. Does not contact etcd.
   */
  constructor(opts: EtcdRegistryOptions, credentials?: Credentials) {
    this.#conn = connect(opts, credentials);
    this.prefix = this.#conn.prefix;
    this.#keys = new EtcdKeys(this.prefix);
    this.#page = opts.listPageSize;
    this.#expiries = new ExpiryCache(this.#conn.client, (fn) => this.#call(fn));
  }

  #call<T>(fn: () => Promise<T>): Promise<T> {
    return classified(this.#conn, fn);
  }

  get #client() {
    return this.#conn.client;
  }

  async getConfig(): Promise<string | null> {
    const r = await this.#call(() => this.#client.kv.range({ key: this.#keys.config }));
    return r.kvs.length ? r.kvs[0].value.toString() : null;
  }

  async putConfig(text: string): Promise<void> {
    await this.#call(() =>
      this.#client.kv.put({ key: this.#keys.config, value: Buffer.from(text) })
    );
  }

  /** Full lists read `subnets/` in pages (list.ts): the whole reply is never held at once. */
  #pages<T>(decode: (page: Page) => T[] | Promise<T[]>) {
    return listPages(
      {
        client: this.#client,
        keys: this.#keys,
        call: (fn) => this.#call(fn),
        pageSize: this.#page,
      },
      decode,
    );
  }

  async listLeases(): Promise<{ leases: RegistryLease[]; revision: number }> {
    const { items, revision } = await this.#pages(async (page) => {
      const exp = await this.#expiries.lookup(
        page.filter((x) => x.kv.lease !== "0").map((x) => x.kv.lease),
      );
      const now = Date.now();
      // Every id was looked up, so the fallback (0: gone) is never used; 0 reads as expired.
      return page.map(({ kv, rel }) => toLease(kv, rel, exp, 0))
        .filter((l) => l.expiresAt === null || l.expiresAt > now);
    });
    return { leases: items, revision };
  }

  async listPeerLeases(since?: number): Promise<PeerList> {
    // Only expiries already known (own grants, earlier lookups); etcd removes expired keys.
    this.#expiries.prune();
    const decode = (page: Page) => {
      const exp = this.#expiries.cached(
        page.filter((x) => x.kv.lease !== "0").map((x) => x.kv.lease),
      );
      return page.map(({ kv, rel }) => toLease<WatchedExpiry>(kv, rel, exp, "unknown"));
    };
    if (since !== undefined) {
      // One read-only transaction, so both ranges see one revision: the keys written after
      // `since` (etcd filters by mod revision before replying: only what changed crosses the
      // wire) and how many keys there are in all (a count, no keys).
      const range = { key: this.#keys.subnets, range_end: this.#keys.subnetsEnd };
      const r = await this.#call(() =>
        this.#client.kv.txn({
          compare: [],
          success: [
            { request_range: { ...range, min_mod_revision: since + 1 } },
            { request_range: { ...range, count_only: true } },
          ],
        })
      );
      const [written, all] = r.responses.map((x) => x.response_range);
      if (!written || !all) throw new Error(`etcd answered a read of two ranges without them`);
      const page = written.kvs.flatMap((kv) => {
        const rel = this.#keys.rel(kv.key);
        return rel === null ? [] : [{ kv, rel }];
      });
      return {
        leases: decode(page),
        count: Number(all.count),
        revision: Number(r.header.revision),
      };
    }
    const { items, revision } = await this.#pages(decode);
    return { leases: items, count: items.length, revision };
  }

  async listLeaseKeys(): Promise<{ keys: RegistryKey[]; revision: number }> {
    const r = await this.#call(() =>
      this.#client.kv.range({
        key: this.#keys.subnets,
        range_end: this.#keys.subnetsEnd,
        keys_only: true,
      })
    );
    const keys = r.kvs.flatMap((kv) => {
      const key = this.#keys.rel(kv.key);
      return key === null ? [] : [{ key, revision: Number(kv.mod_revision) }];
    });
    return { keys, revision: Number(r.header.revision) };
  }

  async getLease(key: string): Promise<RegistryLease | null> {
    const r = await this.#call(() => this.#client.kv.range({ key: this.#keys.lease(key) }));
    if (!r.kvs.length) return null;
    const kv = r.kvs[0];
    const exp = await this.#expiries.lookup(kv.lease === "0" ? [] : [kv.lease]);
    const l = toLease(kv, key, exp, 0);
    return l.expiresAt === null || l.expiresAt > Date.now() ? l : null;
  }

  /** Grants an etcd lease for `ttlSeconds` ("0" = none); returns its id and expiry. */
  async #grant(ttlSeconds: number | null): Promise<{ id: string; expiresAt: number | null }> {
    if (ttlSeconds === null) return { id: "0", expiresAt: null };
    if (!Number.isInteger(ttlSeconds) || ttlSeconds <= 0) {
      throw new RegistryError(
        `lease TTL ${ttlSeconds} s is not a positive whole number of seconds`,
      );
    }
    const t0 = Date.now();
    const g = await this.#call(() => this.#client.leaseClient.leaseGrant({ TTL: ttlSeconds }));
    // etcd may raise a TTL below its minimum; the granted one is what counts.
    return { id: g.ID, expiresAt: this.#expiries.granted(g.ID, t0, Number(g.TTL)) };
  }

  /** Frees a lease whose put did not happen; failure only leaves it to expire, so just log. */
  async #revoke(id: string): Promise<void> {
    if (id === "0") return;
    this.#expiries.forget(id);
    try {
      await this.#client.leaseClient.leaseRevoke({ ID: id });
    } catch (e) {
      log.debug("revoking unused etcd lease {id} failed (it will expire): {error}", {
        id,
        error: (e as Error).message,
      });
    }
  }

  /** put `key` under a fresh lease if `compare` holds; null when it did not. */
  async #putIf(
    key: string,
    value: string,
    ttlSeconds: number | null,
    compare: { target: "Version" | "Mod"; version?: number; mod_revision?: number },
  ): Promise<RegistryLease | null> {
    const k = this.#keys.lease(key);
    const lease = await this.#grant(ttlSeconds);
    // On an error here the put may or may not have happened, so the lease is not revoked: revoking
    // would delete a key we might own. Unused, it just expires.
    const r = await this.#call(() =>
      this.#client.kv.txn({
        compare: [{ key: k, result: "Equal", ...compare }],
        success: [{ request_put: { key: k, value: Buffer.from(value), lease: lease.id } }],
      })
    );
    if (!r.succeeded) {
      await this.#revoke(lease.id);
      return null;
    }
    return { key, value, revision: Number(r.header.revision), expiresAt: lease.expiresAt };
  }

  /**
   * Create-only. When the key is held by a lease that has expired, etcd's own reaper is about to
   * delete it: wait for that delete (bounded by REAP_WAIT_MS) and create after it, so watchers
   * see the old lease's delete and then the new put. The key is never deleted from here, so a
   * live lease (one that was renewed meanwhile) is never lost.
   */
  async createLease(
    key: string,
    value: string,
    ttlSeconds: number | null,
  ): Promise<RegistryLease | null> {
    const deadline = new Deadline(REAP_WAIT_MS);
    const backoff = new Backoff();
    while (true) {
      const r = await this.#putIf(key, value, ttlSeconds, { target: "Version", version: 0 });
      if (r) return r;
      if (deadline.expired() || !(await this.#heldByExpiredLease(key))) return null;
      await sleep(Math.min(backoff.next(), deadline.remaining()));
    }
  }

  /** Whether `key` is absent or held by an etcd lease that has expired (not yet deleted). */
  async #heldByExpiredLease(key: string): Promise<boolean> {
    const r = await this.#call(() => this.#client.kv.range({ key: this.#keys.lease(key) }));
    if (!r.kvs.length) return true;
    const id = r.kvs[0].lease;
    if (id === "0") return false;
    const exp = (await this.#expiries.lookup([id])).get(id) ?? 0;
    return exp <= Date.now();
  }

  /**
   * Re-puts under a new etcd lease, as flannel renews. The old etcd lease is not revoked: once the
   * put commits it holds nothing and just expires, while revoking it any earlier (or after a failed
   * compare) would delete the key.
   */
  updateLease(
    key: string,
    value: string,
    ttlSeconds: number | null,
    expectRevision: number,
  ): Promise<RegistryLease | null> {
    return this.#putIf(key, value, ttlSeconds, { target: "Mod", mod_revision: expectRevision });
  }

  async deleteLease(key: string, expectRevision?: number): Promise<boolean> {
    const k = this.#keys.lease(key);
    if (expectRevision === undefined) {
      const r = await this.#call(() => this.#client.kv.deleteRange({ key: k }));
      return Number(r.deleted) > 0;
    }
    const r = await this.#call(() =>
      this.#client.kv.txn({
        compare: [{ key: k, result: "Equal", target: "Mod", mod_revision: expectRevision }],
        success: [{ request_delete_range: { key: k } }],
      })
    );
    return r.succeeded && Number(r.responses[0]?.response_delete_range?.deleted ?? 0) > 0;
  }

  watchLeases(fromRevision: number, signal: AbortSignal): AsyncIterable<WatchMessage> {
    return watchLeases(
      {
        conn: this.#conn,
        keys: this.#keys,
        expiries: this.#expiries,
        streams: this.#streams,
        closed: () => this.#closed,
        call: (fn) => this.#call(fn),
        listLeases: () => this.listPeerLeases(),
      },
      fromRevision,
      signal,
    );
  }

  close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      for (const s of this.#streams) s.close();
      this.#streams.clear();
      this.#client.close();
    }
    return Promise.resolve();
  }
}
