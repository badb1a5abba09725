/**
 * Hands peer lease changes to the backend and accounts for them: incremental events as they
 * arrive (counted, with their latency from the registry event to the datapath), and full
 * reconciles after a list. A failure is logged and counted, never thrown for single peers: the
 * next reconciliation retries.
 *
 * @example
 * ```ts
 * await applyPeerEvents(backend, events, performance.now());
 * await reconcilePeers(backend, watcher.takePeers(), heapTrim);
 * ```
 */
import { getLogger } from "@logtape/logtape";
import type { Backend } from "../backend/backend.ts";
import { PeerFailuresError } from "../backend/peer_errors.ts";
import { metrics } from "../base/metrics.ts";
import { type Lease, leaseAddressText, leaseSubnetText } from "../lease/codec.ts";
import type { PeerEvent } from "../lease/watch.ts";
import type { HeapTrim } from "./heap_trim.ts";

const log = getLogger(["weft", "agent"]);

const applied = metrics.counter(
  "weft_peer_events_applied_total",
  "Peer lease events applied to the datapath.",
);
const applyErrors = metrics.counter(
  "weft_peer_apply_errors_total",
  "Datapath updates for peer events that failed (repaired by the next reconciliation).",
);
const applyLatency = metrics.histogram(
  "weft_peer_apply_latency_seconds",
  "Time from receiving a peer lease change to its datapath entries being in place.",
  [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
);

/**
 * Applies a batch of peer events received at `at` (performance.now()); a failure is logged and
 * counted, and the next reconciliation repairs it.
 */
export async function applyPeerEvents(backend: Backend, evs: PeerEvent[], at: number) {
  try {
    await backend.apply(evs);
    applied.inc(evs.length);
    const s = (performance.now() - at) / 1000;
    for (let i = 0; i < evs.length; i++) applyLatency.observe(s);
    for (const e of evs) {
      log.info("peer {what} {subnet} at {ip}", {
        what: e.type,
        subnet: leaseSubnetText(e.lease),
        ip: leaseAddressText(e.lease),
      });
    }
  } catch (e) {
    applyErrors.inc(evs.length);
    log.error("could not program {n} peer change(s): {error}; the next reconciliation retries", {
      n: evs.length,
      error: (e as Error).message,
    });
  }
}

/**
 * Reconciles the backend with `peers`. Peers that could not be programmed are logged and
 * counted and do not fail the whole (one unreachable peer must not keep a node unready);
 * the next reconciliation retries them. Other errors (device gone) are thrown. Marks a burst
 * for `heapTrim` (heap_trim.ts).
 */
export async function reconcilePeers(backend: Backend, peers: Lease[], heapTrim: HeapTrim) {
  heapTrim.burst();
  try {
    await backend.reconcile(peers);
  } catch (e) {
    if (!(e instanceof PeerFailuresError)) throw e;
    applyErrors.inc(e.count);
    log.warn("{error}; retried at the next reconciliation", { error: e.message });
  }
}
