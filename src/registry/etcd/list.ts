/**
 * Full lists of `subnets/` in pages: `limit` keys per range call, every page read at the first
 * page's revision, so the list is one consistent snapshot but the whole reply (5000 leases: ~1 MiB
 * of protobuf, HTTP/2 frames and decoded key/value Buffers at once) is never in memory together.
 * Each page is handed to `decode` and dropped before the next is asked for; only what `decode`
 * returns is kept.
 *
 * @example
 * ```ts
 * const { items, revision } = await listPages(ctx, (page) => page.map(({ kv, rel }) => rel));
 * ```
 */
import { Buffer } from "node:buffer";
import type { Etcd3, IKeyValue } from "etcd3";
import { getLogger } from "@logtape/logtape";
import type { EtcdKeys } from "./keys.ts";

const log = getLogger(["weft", "registry"]);

/** Keys per range call of a full list. */
export const LIST_PAGE = 500;

/** A full list re-starts from a fresh revision at most this often when etcd compacts under it. */
const COMPACTED_RETRIES = 3;

/** One page: stored keys directly under subnets/, with their key relative to it. */
export type Page = { kv: IKeyValue; rel: string }[];

export interface ListContext {
  client: Etcd3;
  keys: EtcdKeys;
  call<T>(fn: () => Promise<T>): Promise<T>;
  /** Keys per page; LIST_PAGE unless a test asks for small pages. */
  pageSize?: number;
}

/** Every lease key under subnets/ at one revision, decoded a page at a time. */
export async function listPages<T>(
  ctx: ListContext,
  decode: (page: Page) => T[] | Promise<T[]>,
): Promise<{ items: T[]; revision: number }> {
  for (let attempt = 1;; attempt++) {
    try {
      return await listOnce(ctx, decode);
    } catch (e) {
      // The pinned revision was compacted between two pages: the next try starts at the head.
      if (attempt >= COMPACTED_RETRIES || !/compacted/i.test((e as Error).message)) throw e;
      log.debug("etcd compacted the lease list's revision between pages; listing again");
    }
  }
}

async function listOnce<T>(
  ctx: ListContext,
  decode: (page: Page) => T[] | Promise<T[]>,
): Promise<{ items: T[]; revision: number }> {
  const limit = ctx.pageSize ?? LIST_PAGE;
  const items: T[] = [];
  let from: Buffer = ctx.keys.subnets;
  let revision: string | undefined;
  while (true) {
    const r = await ctx.call(() =>
      ctx.client.kv.range({ key: from, range_end: ctx.keys.subnetsEnd, limit, revision })
    );
    revision ??= r.header.revision;
    const page: Page = [];
    for (const kv of r.kvs) {
      const rel = ctx.keys.rel(kv.key);
      if (rel !== null) page.push({ kv, rel });
    }
    for (const x of await decode(page)) items.push(x);
    if (!r.more || r.kvs.length === 0) break;
    // The next page starts right after this page's last key ("\0" is the least suffix).
    from = Buffer.concat([r.kvs[r.kvs.length - 1].key, Buffer.from([0])]);
  }
  return { items, revision: Number(revision) };
}
