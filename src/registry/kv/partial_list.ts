/**
 * The Deno KV answers to the partial lists of the Registry contract: the leases written after a
 * revision, and the keys alone. A KV file is local, so both are the one consistent list
 * (`list.ts`) narrowed afterwards: same answers as etcd's filtered ranges, none of their saving.
 */
import type { RegistryKey, RegistryLease } from "../contract/registry.ts";

type Listed = { leases: RegistryLease[]; revision: number };

/** `list` without the leases last written at or before `since` (all of it when undefined). */
export function writtenSince(list: Listed, since: number | undefined): Listed {
  if (since === undefined) return list;
  return { leases: list.leases.filter((l) => l.revision > since), revision: list.revision };
}

/** The keys of `list` with their revisions. */
export function keysOf(list: Listed): { keys: RegistryKey[]; revision: number } {
  return {
    keys: list.leases.map((l) => ({ key: l.key, revision: l.revision })),
    revision: list.revision,
  };
}
