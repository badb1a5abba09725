/**
 * Reaping: an expired lease reads as absent everywhere, and is deleted with a normal logged
 * delete so that every watcher, in every process, sees it go. Reads reap what they find expired;
 * each watch loop also scans for expired leases every `reapMs`.
 */
import { getLogger } from "@logtape/logtape";
import { metrics } from "../../base/metrics.ts";
import type { KvStore } from "./commit.ts";
import { isExpired, lastPart, type StoredLease } from "./layout.ts";

const log = getLogger(["weft", "registry"]);

const reapedTotal = metrics.counter(
  "weft_registry_kv_reaped_total",
  "Expired leases deleted from Deno KV by this process.",
);

/**
 * Deletes `key` if it is (still) expired, as a logged delete. Two reapers cannot both delete:
 * the commit checks the lease's versionstamp and the loser re-reads an absent key.
 */
async function reap(s: KvStore, key: string, budgetMs: number): Promise<boolean> {
  const reaped = await s.mutate<boolean>(key, `reap of expired lease ${key}`, (cur, now) => {
    if (!cur || !isExpired(cur, now)) return { kind: "return", value: false };
    return { kind: "delete", result: true };
  }, budgetMs);
  if (reaped) {
    reapedTotal.inc();
    log.debug("reaped expired lease {key}", { key });
  }
  return reaped;
}

/** Reaping is housekeeping: a short budget, and failure leaves it to the next reaper. */
export async function reapQuietly(s: KvStore, key: string): Promise<void> {
  try {
    await reap(s, key, 1000);
  } catch (e) {
    log.debug("reaping expired lease {key} failed, will retry later: {error}", {
      key,
      error: String(e),
    });
  }
}

/** Scans all leases and reaps the expired ones. */
export async function reapAll(s: KvStore): Promise<void> {
  const now = Date.now();
  const expired: string[] = [];
  await s.retryLocked("scan for expired leases", async () => {
    expired.length = 0;
    const it = s.kv.list<StoredLease>({ prefix: s.keys.subnets }, { batchSize: 1000 });
    for await (const e of it) {
      if (isExpired(e.value, now)) expired.push(lastPart(e.key));
    }
  }, 1000);
  for (const key of expired) await reapQuietly(s, key);
}
