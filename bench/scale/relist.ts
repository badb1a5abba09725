/**
 * The periodic full reconciliation's registry side with many peers: PeerWatcher.relist() (list +
 * decode + snapshot) and takePeers() (the peer set handed to the backend), timed in CPU over
 * several rounds on a registry that already holds the leases.
 *
 * @example
 * ```ts
 * const r = await relistCost(registry, 5); // { firstMs, cpuMsPerRound, wallMsPerRound, peers }
 * ```
 */
import { cpuUsage } from "node:process";
import type { Registry } from "../../src/registry/contract/registry.ts";
import { PeerWatcher } from "../../src/lease/watch.ts";

export interface RelistCost {
  peers: number;
  /** The first relist (cold caches: on etcd, every lease's TTL is looked up). */
  firstCpuMs: number;
  /** Mean over the following rounds. */
  cpuMsPerRound: number;
  wallMsPerRound: number;
}

export async function relistCost(reg: Registry, rounds: number): Promise<RelistCost> {
  const w = new PeerWatcher(reg, { ownKey: () => null, accept: () => true });
  const cpuMs = () => {
    const u = cpuUsage();
    return (u.user + u.system) / 1000;
  };
  let c0 = cpuMs();
  await w.relist();
  let peers = w.takePeers().length;
  const firstCpuMs = cpuMs() - c0;
  c0 = cpuMs();
  const t0 = performance.now();
  for (let i = 0; i < rounds; i++) {
    await w.relist();
    peers = w.takePeers().length;
  }
  return {
    peers,
    firstCpuMs,
    cpuMsPerRound: (cpuMs() - c0) / rounds,
    wallMsPerRound: (performance.now() - t0) / rounds,
  };
}
