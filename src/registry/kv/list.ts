/**
 * A consistent list of the Deno KV leases: the state at exactly one revision, expired leases
 * left out (and reaped with logged deletes).
 */
import { Deadline, sleep } from "../../base/async.ts";
import type { RegistryLease } from "../contract/registry.ts";
import { conflictRetries, KvBusyError, type KvStore, lockBackoff } from "./commit.ts";
import { isExpired, lastPart, type StoredLease, toLease } from "./layout.ts";
import { reapQuietly } from "./reaper.ts";

/**
 * Reads the counter, lists, reads the counter again: every lease mutation bumps the counter, so
 * an unchanged versionstamp proves the list is exactly the state at that revision. A list can
 * span several KV reads, hence the check. A list that raced with writers twice takes the write
 * lock for its next tries (writers wait for it, see write_lock.ts): with thousands of leases and
 * a steady stream of writers it would otherwise never see a quiet moment.
 */
export async function listLeases(
  s: KvStore,
  signal: AbortSignal,
): Promise<{ leases: RegistryLease[]; revision: number }> {
  const deadline = new Deadline(s.retryMs);
  const backoff = lockBackoff();
  for (let attempt = 1;; attempt++) {
    let now = 0;
    // Converted as they arrive: KV entries (key arrays, versionstamps) are not kept for 5000 leases.
    const leases: RegistryLease[] = [];
    const expired: string[] = [];
    const read = async () => {
      leases.length = 0;
      expired.length = 0;
      now = Date.now();
      const c1 = await s.kv.get<number>(s.keys.counter);
      // KV's largest batch: fewer reads between the two counter reads, so writers race it less.
      const it = s.kv.list<StoredLease>({ prefix: s.keys.subnets }, { batchSize: 1000 });
      for await (const e of it) {
        const key = lastPart<string>(e.key);
        if (isExpired(e.value, now)) expired.push(key);
        else leases.push(toLease(key, e.value));
      }
      const c2 = await s.kv.get<number>(s.keys.counter);
      return c1.versionstamp === c2.versionstamp ? { revision: c1.value ?? 0 } : null;
    };
    const got = await s.retryLocked(
      "list of leases",
      () => attempt > 2 ? s.exclusive("list of leases", deadline.remaining(), read) : read(),
      deadline.remaining(),
    );
    if (got) {
      for (const key of expired) await reapQuietly(s, key);
      return { leases, revision: got.revision };
    }
    conflictRetries.inc();
    if (deadline.expired()) {
      throw new KvBusyError(
        `Deno KV list of leases kept racing with writers (${attempt} tries in ` +
          `${s.retryMs} ms) and never got a consistent view; retry later`,
      );
    }
    await sleep(backoff.next(), signal);
  }
}
