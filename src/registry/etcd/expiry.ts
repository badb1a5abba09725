/**
 * Lease expiries: etcd stores a key's lease id, not its expiry, so lists look expiries up
 * (LeaseTimeToLive, in parallel) and remember them a while; our own grants are remembered
 * without asking. Watches only use what is remembered (see WatchedExpiry).
 */
import type { Etcd3 } from "etcd3";

/** How long a looked-up lease expiry is trusted (a foreign writer may keep a lease alive). */
const EXPIRY_CACHE_MS = 30_000;
/** Parallel LeaseTimeToLive calls per lookup batch. */
const LOOKUP_PARALLEL = 16;

export class ExpiryCache {
  readonly #cache = new Map<string, { expiresAt: number; until: number }>();

  constructor(
    private readonly client: Etcd3,
    private readonly call: <T>(fn: () => Promise<T>) => Promise<T>,
  ) {}

  /** Remembers the expiry of a lease granted at `t0` (epoch ms) for `ttlSeconds`. */
  granted(id: string, t0: number, ttlSeconds: number): number {
    const expiresAt = t0 + ttlSeconds * 1000;
    this.#cache.set(id, { expiresAt, until: Math.min(expiresAt, t0 + EXPIRY_CACHE_MS) });
    return expiresAt;
  }

  forget(id: string): void {
    this.#cache.delete(id);
  }

  /** Epoch-ms expiry per etcd lease id, asking etcd for those not remembered; 0 = already gone. */
  async lookup(ids: Iterable<string>): Promise<Map<string, number>> {
    const now = Date.now();
    const out = new Map<string, number>();
    const todo: string[] = [];
    for (const id of new Set(ids)) {
      const c = this.#cache.get(id);
      if (c && now < c.until) out.set(id, c.expiresAt);
      else todo.push(id);
    }
    this.prune(now);
    let next = 0;
    const worker = async () => {
      while (next < todo.length) {
        const id = todo[next++];
        const t0 = Date.now();
        const r = await this.client.leaseClient.leaseTimeToLive({ ID: id });
        const ttl = Number(r.TTL);
        // TTL -1: expired or revoked; etcd is about to delete (or has deleted) its keys.
        out.set(id, ttl > 0 ? this.granted(id, t0, ttl) : 0);
      }
    };
    await this.call(() =>
      Promise.all(Array.from({ length: Math.min(LOOKUP_PARALLEL, todo.length) }, worker))
    );
    return out;
  }

  /**
   * Drops what is no longer trusted. Called by lookups and full lists, which are O(leases)
   * anyway: without it the expiries looked up for one acquisition (5000 peers: ~0.8 MiB) stayed
   * for the life of the process, and watch events never prune (they must stay O(1)).
   */
  prune(now = Date.now()): void {
    for (const [id, c] of this.#cache) if (now >= c.until) this.#cache.delete(id);
  }

  /** How many expiries are remembered. */
  get size(): number {
    return this.#cache.size;
  }

  /** Expiries of the ids remembered (no calls to etcd). */
  cached(ids: Iterable<string>): Map<string, number> {
    const now = Date.now();
    const out = new Map<string, number>();
    for (const id of ids) {
      const c = this.#cache.get(id);
      if (c && now < c.until) out.set(id, c.expiresAt);
    }
    return out;
  }
}
