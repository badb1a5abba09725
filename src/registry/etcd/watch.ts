/**
 * The etcd lease watch: one stream on `subnets/` from a revision, resumed from the last revision
 * delivered after any error (reconnecting with Backoff, 100 ms doubling to 5 s), and a re-list
 * delivered as a snapshot when etcd compacted the history the watch needed.
 */
import { ClientClosedError, type Etcd3, type IKeyValue, type IWatchResponse } from "etcd3";
import { getLogger } from "@logtape/logtape";
import {
  type LeaseChange,
  RegistryError,
  type RegistryLease,
  type WatchedExpiry,
  type WatchMessage,
} from "../contract/registry.ts";
import { metrics } from "../../base/metrics.ts";
import { abortable, Backoff, sleep } from "../../base/async.ts";
import { classify, Compacted } from "./errors.ts";
import type { Connection } from "./client.ts";
import type { EtcdKeys } from "./keys.ts";
import type { ExpiryCache } from "./expiry.ts";
import { WatchStream } from "./stream.ts";

const log = getLogger(["weft", "registry"]);

const watchRestarts = metrics.counter(
  "weft_etcd_watch_restarts_total",
  "etcd lease watch streams re-opened after an error.",
);
const watchResyncs = metrics.counter(
  "weft_etcd_watch_resyncs_total",
  "Full lease re-lists after etcd compacted the history the watch needed.",
);

/** What the watch needs from its registry. */
export interface WatchContext {
  conn: Connection;
  keys: EtcdKeys;
  expiries: ExpiryCache;
  /** Open streams, cancelled by close(). */
  streams: Set<WatchStream>;
  closed(): boolean;
  call<T>(fn: () => Promise<T>): Promise<T>;
  listLeases(): Promise<{ leases: RegistryLease<WatchedExpiry>[]; revision: number }>;
}

/** A stored key as a lease, with its expiry from `exp` (`fallback` for ids not in it). */
export function toLease<E extends WatchedExpiry>(
  kv: IKeyValue,
  rel: string,
  exp: Map<string, number>,
  fallback: E,
): RegistryLease<number | null | E> {
  return {
    key: rel,
    value: kv.value.toString(),
    revision: Number(kv.mod_revision),
    expiresAt: kv.lease === "0" ? null : (exp.get(kv.lease) ?? fallback),
  };
}

export async function* watchLeases(
  ctx: WatchContext,
  fromRevision: number,
  signal: AbortSignal,
): AsyncGenerator<WatchMessage> {
  let last = fromRevision;
  const backoff = new Backoff();
  let resync = false;
  /** Compactions seen since the last watch etcd accepted; guards a re-list loop. */
  let compactions = 0;
  while (!signal.aborted && !ctx.closed()) {
    let stream: WatchStream | undefined;
    try {
      if (resync) {
        const snap = await abortable(ctx.listLeases(), signal);
        if (!snap) return;
        resync = false;
        last = snap.revision;
        watchResyncs.inc();
        yield { kind: "snapshot", leases: snap.leases, revision: snap.revision };
        continue;
      }
      stream = await openWatch(ctx, last + 1, signal);
      if (!stream) return;
      backoff.reset();
      while (true) {
        const res = await stream.next();
        if (!res) return;
        if (res.compact_revision !== "0") throw new Compacted(Number(res.compact_revision));
        if (res.canceled) {
          throw new Error(
            `etcd cancelled the lease watch: ${res.cancel_reason || "no reason given"}`,
          );
        }
        compactions = 0;
        if (res.events.length === 0) {
          // A progress notification: everything up to the header revision has been sent.
          if (!res.created) last = Math.max(last, Number(res.header.revision));
          continue;
        }
        if (signal.aborted) return;
        const msg = changes(ctx, res);
        // The last event's revision, not the header's: for a watcher catching up the header is
        // the store's head, and the rest of history is still to come.
        last = msg.revision;
        if (msg.changes.length) yield msg;
      }
    } catch (e) {
      if (signal.aborted || ctx.closed() || e instanceof ClientClosedError) return;
      if (e instanceof Compacted) {
        log.info(
          "etcd compacted the history after revision {last} (compact revision {compacted}); " +
            "re-listing leases",
          { last, compacted: e.compactRevision },
        );
        resync = true;
        // Compacted again right after a re-list: someone compacts at head; do not spin.
        if (++compactions > 1) await sleep(backoff.next(), signal);
        continue;
      }
      const err = classify(e, ctx.conn);
      if (err instanceof RegistryError) throw err;
      watchRestarts.inc();
      const delay = backoff.next();
      log.warn("etcd lease watch from revision {from} failed: {error}; retrying in {ms} ms", {
        from: last + 1,
        error: (e as Error).message,
        ms: delay,
      });
      await sleep(delay, signal);
    } finally {
      if (stream) dropStream(ctx, stream);
    }
  }
}

function dropStream(ctx: WatchContext, stream: WatchStream): void {
  stream.close();
  ctx.streams.delete(stream);
}

/**
 * Opens a stream watching subnets/ from `start`; resolves once etcd acknowledged it, or to
 * undefined when `signal` aborted or the registry closed meanwhile.
 */
async function openWatch(
  ctx: WatchContext,
  start: number,
  signal: AbortSignal,
): Promise<WatchStream | undefined> {
  const client: Etcd3 = ctx.conn.client;
  // A plain read first: it refreshes an expired auth token (etcd's simple tokens last 5 min and
  // die with a restart, and the watch stream presents whatever token etcd3 cached), and it fails
  // fast when etcd is down.
  const ok = await abortable(
    ctx.call(() => client.kv.range({ key: ctx.keys.config, count_only: true })),
    signal,
  );
  if (!ok) return undefined;
  const raw = await abortable(ctx.call(() => client.watchClient.watch()), signal);
  if (!raw) return undefined;
  const stream = new WatchStream(raw, signal);
  ctx.streams.add(stream);
  try {
    if (ctx.closed()) throw new ClientClosedError("Watch");
    stream.write({
      create_request: {
        key: ctx.keys.subnets,
        range_end: ctx.keys.subnetsEnd,
        start_revision: start,
        progress_notify: true,
      },
    });
    const created = await stream.next(10_000);
    if (!created) throw new ClientClosedError("Watch");
    if (created.compact_revision !== "0") throw new Compacted(Number(created.compact_revision));
    if (!created.created || created.canceled) {
      throw new Error(
        `etcd refused the lease watch from revision ${start}: ${
          created.cancel_reason || "no reason"
        }`,
      );
    }
    return stream;
  } catch (e) {
    dropStream(ctx, stream);
    if (e instanceof ClientClosedError) return undefined;
    throw e;
  }
}

/** One watch response as one batch of changes (events of other keys skipped). */
function changes(ctx: WatchContext, res: IWatchResponse): WatchMessage & { kind: "changes" } {
  const evs = res.events.flatMap((ev) => {
    const rel = ctx.keys.rel(ev.kv.key);
    return rel === null ? [] : [{ ev, rel }];
  });
  // No LeaseTimeToLive round trip per new lease here: peers need the value, not the expiry,
  // and the lookup delayed every peer event (2-6 ms) and cost N² calls per renewal round.
  // Expiries already known (our own grants, earlier lists) are filled in; others are "unknown".
  const exp = ctx.expiries.cached(
    evs.filter(({ ev }) => ev.type === "Put" && ev.kv.lease !== "0").map(({ ev }) => ev.kv.lease),
  );
  const changes: LeaseChange[] = evs.map(({ ev, rel }) =>
    ev.type === "Put"
      ? { type: "put", lease: toLease(ev.kv, rel, exp, "unknown" as const) }
      : { type: "delete", key: rel, revision: Number(ev.kv.mod_revision) }
  );
  const revision = Number(res.events[res.events.length - 1].kv.mod_revision);
  return { kind: "changes", changes, revision };
}
