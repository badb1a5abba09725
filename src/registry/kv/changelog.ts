/**
 * The change log and its polling reader. Every lease mutation appends `["log", rev]` in its own
 * commit, so a watcher in any process replays changes in order by polling the revision counter
 * (`kv.watch()` does not fire for another process's writes). Compaction drops old entries; a
 * watcher whose history is gone (or whose store was reset) gets a snapshot instead.
 */
import { getLogger } from "@logtape/logtape";
import { metrics } from "../../base/metrics.ts";
import type { LeaseChange, RegistryLease, WatchMessage } from "../contract/registry.ts";
import type { KvStore } from "./commit.ts";
import { lastPart, type LogEntry, SCAN_BATCH } from "./layout.ts";

const log = getLogger(["weft", "registry"]);

const snapshotsTotal = metrics.counter(
  "weft_registry_kv_watch_snapshots_total",
  "Deno KV watch re-lists because the change log no longer held the watcher's position.",
);
const compactedTotal = metrics.counter(
  "weft_registry_kv_log_compacted_total",
  "Deno KV change-log entries removed by compaction.",
);

const MAX_BATCH = 500; // below KV's 1000-mutation / 1000-entry limits
const MAX_CHANGES_PER_MESSAGE = 1000;

/**
 * Drops change-log entries beyond the newest `keepLog` and those older than `keepLogMs`.
 * Returns how many were removed. Concurrent compactors are harmless (deletes are idempotent);
 * a watcher that needed a removed entry notices the gap and re-lists.
 */
export async function compactLog(s: KvStore, keepLog: number, keepLogMs: number) {
  const c = await s.retryLocked("read of revision", () => s.kv.get<number>(s.keys.counter));
  const keepFrom = (c.value ?? 0) - keepLog + 1;
  const ageCut = Date.now() - keepLogMs;
  let removed = 0;
  for (;;) {
    const batch = await s.retryLocked("scan of change log", async () => {
      const keys: Deno.KvKey[] = [];
      const it = s.kv.list<LogEntry>({ prefix: s.keys.log }, {
        limit: MAX_BATCH,
        batchSize: MAX_BATCH,
      });
      for await (const e of it) {
        if (lastPart<number>(e.key) >= keepFrom && e.value.at >= ageCut) break;
        keys.push(e.key);
      }
      return keys;
    });
    if (batch.length === 0) break;
    await s.retryLocked("compaction of change log", async () => {
      const op = s.kv.atomic();
      for (const k of batch) op.delete(k);
      await op.commit();
    });
    removed += batch.length;
    if (batch.length < MAX_BATCH) break;
  }
  if (removed > 0) {
    compactedTotal.inc(removed);
    log.debug("compacted {removed} change-log entries", { removed });
  }
  return removed;
}

/**
 * The change-log entries after revision `pos` up to `rev`, or null when they are not all there
 * (compacted away, or the counter moved without a log entry: a reopened file).
 */
export async function readLog(
  s: KvStore,
  pos: number,
  rev: number,
): Promise<Deno.KvEntry<LogEntry>[] | null> {
  const out: Deno.KvEntry<LogEntry>[] = [];
  const it = s.kv.list<LogEntry>({
    start: s.keys.logAt(pos + 1),
    end: s.keys.logAt(rev + 1),
  }, { batchSize: SCAN_BATCH });
  for await (const e of it) out.push(e);
  const contiguous = out.length === rev - pos &&
    out.every((e, i) => lastPart(e.key) === pos + 1 + i);
  return contiguous ? out : null;
}

/**
 * One poll: the messages that bring a watcher at `pos` up to date (none when nothing moved).
 * The log read must be gap-free from pos+1; a gap means compaction removed history (or the
 * store was reset), and the watcher gets a snapshot from `list` instead.
 */
export async function pollLog(
  s: KvStore,
  pos: number,
  list: () => Promise<{ leases: RegistryLease[]; revision: number }>,
): Promise<WatchMessage[]> {
  const c = await s.retryLocked("read of revision", () => s.kv.get<number>(s.keys.counter));
  const rev = c.value ?? 0;
  if (rev === pos) return [];
  if (rev > pos) {
    const entries = await s.retryLocked("read of change log", () => readLog(s, pos, rev));
    if (entries) return toMessages(entries);
    log.info("watch at revision {pos} fell behind the compacted change log; re-listing", { pos });
  } else {
    log.warn(
      "KV revision {rev} is below the watcher's {pos}: the store was reset or replaced; re-listing",
      { rev, pos },
    );
  }
  snapshotsTotal.inc();
  const snap = await list();
  return [{ kind: "snapshot", leases: snap.leases, revision: snap.revision }];
}

function toMessages(entries: Deno.KvEntry<LogEntry>[]): WatchMessage[] {
  const out: WatchMessage[] = [];
  for (let i = 0; i < entries.length; i += MAX_CHANGES_PER_MESSAGE) {
    const changes: LeaseChange[] = entries.slice(i, i + MAX_CHANGES_PER_MESSAGE).map((e) => {
      const revision = lastPart<number>(e.key);
      const l = e.value;
      return l.type === "put"
        ? {
          type: "put",
          lease: { key: l.key, value: l.value ?? "", revision, expiresAt: l.expiresAt ?? null },
        }
        : { type: "delete", key: l.key, revision };
    });
    const last = changes[changes.length - 1];
    out.push({
      kind: "changes",
      changes,
      revision: last.type === "put" ? last.lease.revision : last.revision,
    });
  }
  return out;
}
