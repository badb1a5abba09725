/**
 * The agent's periodic loop: every 5 s the heap trim tick, a retry of a failed subnet.env write,
 * the first reconcile if the initial one failed, and the backend's device check (device deleted,
 * entries removed: repaired and counted); every reconcile interval a fresh list of the registry
 * and a full reconcile against it, which repairs anything a missed event or a manual change left.
 * A failing device check takes readiness away until one passes.
 *
 * @example
 * ```ts
 * await selfChecks(signal, { backend, watcher, state, heapTrim, reconcileIntervalMs, ... });
 * ```
 */
import { getLogger } from "@logtape/logtape";
import type { Backend } from "../backend/backend.ts";
import { sleep } from "../base/async.ts";
import { metrics } from "../base/metrics.ts";
import type { Lease } from "../lease/codec.ts";
import type { PeerWatcher } from "../lease/watch.ts";
import type { HeapTrim } from "./heap_trim.ts";
import type { ReadinessState } from "./readiness.ts";

const log = getLogger(["weft", "agent"]);

const repairs = metrics.counter(
  "weft_datapath_repairs_total",
  "Times a self-check found the datapath damaged (device deleted, route removed) and repaired it.",
);

/** How many times a self-check repaired the datapath (for /status). */
export function datapathRepairs(): number {
  return repairs.get();
}

/** What the loop works on, and the agent's callbacks it reports through. */
export interface SelfCheckDeps {
  backend: Backend;
  watcher: PeerWatcher;
  state: ReadinessState;
  heapTrim: HeapTrim;
  reconcileIntervalMs: number;
  /** Writes subnet.env for the current lease again (subnet_env_writer.ts). */
  retryEnv(): Promise<void>;
  /** A full reconcile of the backend with `peers` (peer_sync.ts). */
  reconcile(peers: Lease[]): Promise<void>;
  /** The peers are programmed (readiness). */
  markSynced(): void;
  /** Readiness may have changed (sd_notify once ready). */
  notifyReady(): void;
}

/** Runs until `signal` aborts; never throws for a failed round. */
export async function selfChecks(signal: AbortSignal, d: SelfCheckDeps) {
  const { backend, watcher, state } = d;
  let lastFull = Date.now();
  while (!signal.aborted) {
    await sleep(5000, signal);
    d.heapTrim.tick();
    if (state.subnetEnvError) {
      await d.retryEnv().then(() => d.notifyReady(), () => {});
    }
    // Never reconcile before the first list: an empty peer set would wipe every route.
    if (signal.aborted || !watcher.listed) continue;
    try {
      if (!state.peersSynced) {
        await d.reconcile(watcher.takePeers());
        lastFull = Date.now();
        d.markSynced();
      }
      if (backend.check && await backend.check()) {
        repairs.inc();
        log.warn("datapath was damaged (device or entries removed); repaired");
      }
      state.datapathBroken = "";
    } catch (e) {
      state.datapathBroken = `datapath self-check failed: ${(e as Error).message}`;
      log.error("{msg}; retrying in 5 s", { msg: state.datapathBroken });
      continue;
    }
    if (Date.now() - lastFull < d.reconcileIntervalMs) continue;
    lastFull = Date.now();
    try {
      if (await watcher.relist()) await d.reconcile(watcher.takePeers());
    } catch (e) {
      // The registry may be down: the datapath stays as it is and the next interval retries.
      log.debug("periodic reconciliation skipped: {error}", { error: (e as Error).message });
    }
  }
}
