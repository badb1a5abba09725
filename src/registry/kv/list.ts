/**
 * A consistent list of the Deno KV leases: the state at exactly one revision, expired leases
 * left out (and reaped with logged deletes).
 */
import { Deadline, sleep } from "../../base/async.ts";
import type { RegistryLease } from "../contract/registry.ts";
import { conflictRetries, KvBusyError, type KvStore, lockBackoff } from "./commit.ts";
import { isExpired, lastPart, type LogEntry, type StoredLease, toLease } from "./layout.ts";
import { readLog } from "./changelog.ts";
import { reapQuietly } from "./reaper.ts";

/**
 * Reads the counter, lists, reads the counter again: every lease mutation bumps the counter and
 * appends its change-log entry in the same commit, so an unchanged counter proves the list is
 * the state at that revision, and a counter that moved is caught up with: the log entries between
 * the two reads say the last state of every key written meanwhile. A list of thousands of leases
 * thus never has to find a moment without writers (it used to retry until it did). Retried only
 * when the log between the two reads is not all there (compacted, or a reopened file).
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
    let leases: RegistryLease[] = [];
    let expired: string[] = [];
    const got = await s.retryLocked("list of leases", async () => {
      leases = [];
      expired = [];
      now = Date.now();
      const c1 = await s.kv.get<number>(s.keys.counter);
      // KV's largest batch: fewer reads between the two counter reads.
      const it = s.kv.list<StoredLease>({ prefix: s.keys.subnets }, { batchSize: 1000 });
      for await (const e of it) {
        const key = lastPart<string>(e.key);
        if (isExpired(e.value, now)) expired.push(key);
        else leases.push(toLease(key, e.value));
      }
      const c2 = await s.kv.get<number>(s.keys.counter);
      const from = c1.value ?? 0, to = c2.value ?? 0;
      if (c1.versionstamp === c2.versionstamp) return { revision: from };
      if (to < from) return null;
      const log = await readLog(s, from, to);
      if (!log) return null;
      // The last entry of each key written meanwhile is its state at `to`.
      const last = new Map<string, { e: LogEntry; revision: number }>();
      for (const e of log) last.set(e.value.key, { e: e.value, revision: lastPart<number>(e.key) });
      leases = leases.filter((l) => !last.has(l.key));
      expired = expired.filter((k) => !last.has(k));
      for (const [key, { e, revision }] of last) {
        if (e.type !== "put") continue;
        const stored: StoredLease = {
          value: e.value ?? "",
          expiresAt: e.expiresAt ?? null,
          revision,
        };
        if (isExpired(stored, now)) expired.push(key);
        else leases.push(toLease(key, stored));
      }
      // In key order, as a list without writers gives.
      leases.sort((a, b) => a.key < b.key ? -1 : a.key > b.key ? 1 : 0);
      return { revision: to };
    }, deadline.remaining());
    if (got) {
      for (const key of expired) await reapQuietly(s, key);
      return { leases, revision: got.revision };
    }
    conflictRetries.inc();
    if (deadline.expired()) {
      throw new KvBusyError(
        `Deno KV list of leases could not read the change log between its two reads of the ` +
          `revision counter (${attempt} tries in ${s.retryMs} ms: compacted away under it?); ` +
          `retry later`,
      );
    }
    await sleep(backoff.next(), signal);
  }
}
