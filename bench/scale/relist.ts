/**
 * The cost of the agent's periodic full reconciliation with many peers. {@link relistCost}: its
 * registry side, PeerWatcher.relist() (after the first, full one: what was written since and the
 * registry's count, see src/lease/verified.ts) and takePeers() (the peer set handed to the
 * backend), timed in CPU over several rounds on a registry that already holds the leases. {@link roundCost}: the whole round including the backend's reconcile against a kernel
 * that already holds every peer's entries, in a scratch namespace (`round_child.ts`).
 *
 * @example
 * ```ts
 * const r = await relistCost(registry, 5); // { firstMs, cpuMsPerRound, wallMsPerRound, peers }
 * const w = await roundCost({ kind: "kv", backend: "vxlan", peers: 5000, rounds: 10, runId, dir });
 * w.cpuMsPerRound; // relist + takePeers + VxlanBackend.reconcile, CPU ms
 * ```
 */
import { cpuUsage } from "node:process";
import type { Registry } from "../../src/registry/contract/registry.ts";
import { PeerWatcher } from "../../src/lease/watch.ts";
import { deleteNs, denoInNs } from "../../test/kit/netns.ts";
import { type EtcdProc, startEtcd } from "../../test/kit/etcd.ts";
import { run } from "../../test/kit/proc.ts";
import { createScratchNs } from "../datapath/programming.ts";
import { REPO } from "../datapath/hosts.ts";
import { V8_FLAGS } from "../../src/base/v8_flags.ts";

export interface RelistCost {
  peers: number;
  /** The first relist: a full list, every lease decoded. */
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

/** One measured periodic round with the backend (see round_child.ts), per registry × backend. */
export interface RoundCost {
  registry: string;
  backend: string;
  peers: number;
  rounds: number;
  /** The first relist + reconcile, which programs every peer (the agent's start). */
  firstCpuMs: number;
  cpuMsPerRound: number;
  wallMsPerRound: number;
  /** CPU per round of each step. */
  parts: { relist: number; takePeers: number; reconcile: number };
  /** The registry's list alone (inside relist). */
  listCpuMs: number;
  /** The kernel tables the reconcile reads, read alone (inside reconcile). */
  kernelReadCpuMs: number;
  /** The reconcile's CPU ms of each round (see round_child.ts). */
  reconcileCpuMs?: number[];
  /** Periodic full diffs, every entry present (the round after a repair; round_child.ts). */
  fullCpuMs?: number[];
  /** A new backend's first reconcile with every entry present (a restart; round_child.ts). */
  restartCpuMs?: number[];
  /** Rounds each after one peer event applied (round_child.ts `--event-rounds`): CPU ms. */
  event?: {
    cpuMsPerRound: number | null;
    reconcileCpuMsPerRound: number | null;
    reconcileCpuMs: number[];
  };
  /** Whether a full GC ran before each measured round (round_child.ts `--gc-between`). */
  gcBetween?: boolean;
  /** The V8 flags the round ran with (comma-separated; set by roundCost). */
  v8Flags?: string;
}

/**
 * The agent's whole periodic round (relist + takePeers + backend reconcile with every peer
 * already programmed), with weft's V8 flags (or `v8Flags`, comma-separated), in a scratch namespace of its own (`<harness>-<runId>-prog`, veth `ext0`),
 * `round_child.ts` inside it; on etcd, a fresh etcd in the same namespace. The namespace and etcd
 * go at the end, also on failure.
 */
export async function roundCost(o: {
  kind: "kv" | "etcd";
  backend: "vxlan" | "host-gw";
  peers: number;
  rounds: number;
  /** Unique per call: names the namespace. */
  runId: string;
  dir: string;
  /** Comma-separated V8 flags for the round child; default weft's (src/base/v8_flags.ts). */
  v8Flags?: string;
  /** A memory-reducing full GC before each measured round (round_child.ts `--gc-between`). */
  gcBetween?: boolean;
}): Promise<RoundCost> {
  const v8Flags = o.v8Flags ?? V8_FLAGS.join(",");
  const ns = await createScratchNs({ runId: o.runId });
  let etcd: EtcdProc | null = null;
  try {
    if (o.kind === "etcd") etcd = await startEtcd({ netns: ns });
    const r = await run(
      denoInNs(ns, [
        `${REPO}bench/scale/round_child.ts`,
        "--registry",
        o.kind,
        ...(etcd
          ? ["--etcd-endpoint", etcd.endpoint]
          : ["--kv-path", `${o.dir}/round-${o.runId}.kv`]),
        "--backend",
        o.backend,
        "--peers",
        String(o.peers),
        "--rounds",
        String(o.rounds),
        "--event-rounds",
        String(o.rounds),
        ...(o.gcBetween ? ["--gc-between"] : []),
      ], { flags: v8Flags ? [`--v8-flags=${v8Flags}`] : [] }),
      { timeoutMs: 600_000, cwd: REPO },
    );
    if (r.code !== 0) throw new Error(`round_child: ${r.stderr.trim().slice(-1500)}`);
    return { ...JSON.parse(r.stdout) as RoundCost, v8Flags };
  } finally {
    await etcd?.cleanup();
    await deleteNs(ns);
  }
}
