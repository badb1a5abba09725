/**
 * The Deno KV answers to the partial lists of the Registry contract: the keys alone, caught up
 * from the change log after a recent list (the leases written since a revision are answered by
 * the live-key index, `changes.ts`); otherwise the one consistent list (`list.ts`) narrowed
 * afterwards (Deno KV has no keys-only read: a list always reads and deserialises the values).
 */
import type { RegistryKey, RegistryLease } from "../contract/registry.ts";
import { readLog } from "./changelog.ts";
import type { KvStore } from "./commit.ts";
import { isExpired, lastPart, type StoredLease, toLease } from "./layout.ts";

type Listed = { leases: RegistryLease[]; revision: number };

/**
 * Past this many revisions since `since`, the change log is not read: its entries carry the
 * values, so reading more of them than there are leases costs more than the list.
 */
export const MAX_LOG_SINCE = 1000;

/** `list` without the leases last written at or before `since` (all of it when undefined). */
export function writtenSince(list: Listed, since: number | undefined): Listed {
  if (since === undefined) return list;
  return { leases: list.leases.filter((l) => l.revision > since), revision: list.revision };
}

/**
 * The last state of every key written after `since` (null: deleted, or expired), from the
 * change log: the counter is read first, and every mutation up to it committed its log entry
 * with its counter bump, so the log from `since` + 1 to the counter is exactly what changed.
 * Null when the log does not say (more than {@link MAX_LOG_SINCE} revisions, compacted away, a
 * reopened file): the caller lists.
 */
async function changedSince(
  s: KvStore,
  since: number,
): Promise<{ last: Map<string, RegistryLease | null>; revision: number } | null> {
  const c = await s.kv.get<number>(s.keys.counter);
  const rev = c.value ?? 0;
  if (rev < since || rev - since > MAX_LOG_SINCE) return null;
  const log = rev === since ? [] : await readLog(s, since, rev);
  if (!log) return null;
  const last = new Map<string, RegistryLease | null>();
  const now = Date.now();
  for (const { key, value: e } of log) {
    if (e.type !== "put") {
      last.set(e.key, null);
      continue;
    }
    const stored: StoredLease = {
      value: e.value ?? "",
      expiresAt: e.expiresAt ?? null,
      revision: lastPart<number>(key),
    };
    last.set(e.key, isExpired(stored, now) ? null : toLease(e.key, stored));
  }
  return { last, revision: rev };
}

/** How long the keys of a list are kept for {@link ListedKeys.keys}, ms: an acquisition's span. */
export const KEYS_KEPT_MS = 10_000;

/**
 * The lease keys a recent full list saw, for the keys-only list of an acquisition after a lost
 * race: those keys caught up from the change log instead of every lease read (and deserialised)
 * again. Kept {@link KEYS_KEPT_MS} after the list, then dropped (an idle agent keeps nothing).
 */
export class ListedKeys {
  #at: { revision: number; keys: Map<string, number> } | null = null;
  #timer: ReturnType<typeof setTimeout> | null = null;

  /** Notes the keys of a full list (a newer revision replaces an older one). */
  listed(list: Listed): void {
    if (this.#at && this.#at.revision >= list.revision) return;
    this.#keep(list.revision, new Map(list.leases.map((l) => [l.key, l.revision])));
  }

  /** The keys now, from the last list and the change log since; null: list instead. */
  async keys(s: KvStore): Promise<{ keys: RegistryKey[]; revision: number } | null> {
    const at = this.#at;
    if (!at) return null;
    const c = await changedSince(s, at.revision);
    if (!c) return null;
    const keys = new Map(at.keys);
    for (const [key, l] of c.last) l ? keys.set(key, l.revision) : keys.delete(key);
    if (c.revision > (this.#at?.revision ?? -1)) this.#keep(c.revision, keys);
    const out = [...keys].map(([key, revision]) => ({ key, revision }));
    out.sort((a, b) => a.key < b.key ? -1 : a.key > b.key ? 1 : 0);
    return { keys: out, revision: c.revision };
  }

  #keep(revision: number, keys: Map<string, number>): void {
    this.#at = { revision, keys };
    this.clear(false);
    const t = setTimeout(() => this.clear(), KEYS_KEPT_MS);
    Deno.unrefTimer(t);
    this.#timer = t;
  }

  /** Drops the keys (and with `all`, the kept keys too: on close). */
  clear(all = true): void {
    if (all) this.#at = null;
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
  }
}

/** The keys of `list` with their revisions. */
export function keysOf(list: Listed): { keys: RegistryKey[]; revision: number } {
  return {
    keys: list.leases.map((l) => ({ key: l.key, revision: l.revision })),
    revision: list.revision,
  };
}
