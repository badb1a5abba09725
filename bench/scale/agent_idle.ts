/**
 * One real agent's idle cost with many peers: `--peers` leases (/29, alloc, written with
 * `../lib/lease_writer.ts`'s writeLeases) in a fresh registry, one `weft run --backend alloc`
 * agent on loopback with weft's V8 flags, next to the same agent with no peers (its own fresh
 * registry), both idle for the same window: RSS, anonymous memory and CPU. Memory is sampled every
 * second of the window and reported as the median (what the agent holds while idle) and the
 * maximum (a periodic re-list's garbage, until the agent's heap trim a second later): one sample
 * at the end of the window read a re-list in flight now and then (+10 MiB with 5000 etcd peers).
 * With several `v8Flags` sets, one such pair per set runs in the same window (each agent its own
 * fresh registry), so the sets' figures are compared under the same load.
 *
 * @example
 * ```ts
 * const rows = await agentIdle({ kind: "kv", dir, etcdEndpoint: null, peers: 5000, idleSeconds: 20 });
 * // two flag sets: four agents (no peers, 5000 peers per set) idle in one window
 * await agentIdle({ ...same, v8Flags: ["--optimize-for-size,--expose-gc", "--expose-gc"] });
 * ```
 */
import type { AgentProc } from "../../test/kit/agent.ts";
import type { Registry } from "../../src/registry/contract/registry.ts";
import { openEtcdRegistry } from "../../src/registry/etcd/mod.ts";
import { openKvRegistry } from "../../src/registry/kv/mod.ts";
import { leasePlan } from "../lib/leases.ts";
import { writeLeases } from "../lib/lease_writer.ts";
import { median } from "../lib/report.ts";
import { procCpuSeconds, type ProcMemory, procMemory, sleep } from "../lib/sys.ts";
import { startBenchAgent, waitFiles } from "../control_plane/agents.ts";
import { type RelistCost, relistCost } from "./relist.ts";
import { V8_FLAGS } from "../../src/base/v8_flags.ts";

export interface IdleRow {
  kind: string;
  peers: number;
  /** The agent's V8 flags (comma-separated). */
  v8Flags: string;
  /** Median of the window's samples. */
  rssMiB: number | null;
  /** Largest sample of the window. */
  rssMaxMiB: number | null;
  /** Median of the window's samples. */
  anonMiB: number | null;
  cpuPct: number | null;
  /** PeerWatcher relist + takePeers on this registry, measured in the bench process. */
  relist?: RelistCost;
  error?: string;
}

const NET = `{"Network":"198.19.0.0/16","SubnetLen":29,"Backend":{"Type":"alloc"}}`;

export async function agentIdle(o: {
  kind: "kv" | "etcd";
  dir: string;
  etcdEndpoint: string | null;
  runId: string;
  peers: number;
  /** TTL of the peer leases; null: none (on etcd: no etcd lease, so no TTL lookups). */
  peerTtlSeconds: number | null;
  idleSeconds: number;
  /** One no-peer + peers pair of agents per set, all in the same window; default: weft's flags. */
  v8Flags?: string[];
  /** Measure PeerWatcher relist + takePeers in this process (default true). */
  relist?: boolean;
}): Promise<IdleRow[]> {
  const sets = o.v8Flags ?? [V8_FLAGS.join(",")];
  const runs = sets.flatMap((f) => [0, o.peers].map((peers) => ({ f, peers })));
  // Unique per call (runId), so a second pass starts from fresh registries too.
  const base = runs.map(({ peers }, i) => `${o.dir}/idle-${o.runId}-${o.kind}-${i}-${peers}`);
  const agents: AgentProc[] = [];
  const rows: IdleRow[] = runs.map(({ f, peers }) => ({
    kind: o.kind,
    peers,
    v8Flags: f,
    rssMiB: null,
    rssMaxMiB: null,
    anonMiB: null,
    cpuPct: null,
  }));
  await Deno.writeTextFile(`${o.dir}/idle-net.json`, NET);
  try {
    for (const [i, { f, peers: p }] of runs.entries()) {
      const kvPath = `${base[i]}.kv`;
      const prefix = `/weft-idle-${o.runId}-${i}-${p}`;
      const reg: Registry = o.kind === "kv"
        ? await openKvRegistry({ path: kvPath })
        : await openEtcdRegistry({ endpoints: [o.etcdEndpoint!], prefix });
      try {
        const plan = leasePlan({
          count: p,
          firstSubnet: 128,
          subnetLen: 29,
          publicBase: "198.18.4.1",
          backend: "alloc",
        });
        const w = await writeLeases(reg, plan, {
          intervalMs: 0,
          ttlSeconds: o.peerTtlSeconds,
          concurrency: 8,
        });
        const bad = w.filter((x) => !x.ok);
        if (bad.length) throw new Error(`${bad.length} lease writes failed: ${bad[0].error}`);
        if (p > 0 && o.relist !== false && !rows.some((r) => r.relist)) {
          rows[i].relist = await relistCost(reg, 5);
        }
      } finally {
        await reg.close();
      }
      agents.push(startBenchAgent([
        ...(o.kind === "kv"
          ? ["--registry", "kv", "--kv-path", kvPath]
          : ["--registry", "etcd", "--etcd-endpoints", o.etcdEndpoint!, "--etcd-prefix", prefix]),
        "--net-config-path",
        `${o.dir}/idle-net.json`,
        "--backend",
        "alloc",
        "--iface",
        "lo",
        "--public-ip",
        `198.18.1.${i + 1}`,
        "--subnet-file",
        `${base[i]}.env`,
        "--iptables-forward-rules=false",
      ], f));
    }
    await waitFiles(base.map((b) => `${b}.env`), agents, 120_000);
    await sleep(3000); // the first list and reconcile are done by now
    const cpu0 = agents.map((a) => procCpuSeconds(a.pid));
    const samples = agents.map(() => [] as ProcMemory[]);
    for (let s = 0; s < o.idleSeconds; s++) {
      await sleep(1000);
      agents.forEach((a, i) => {
        const m = procMemory(a.pid);
        if (m) samples[i].push(m);
      });
    }
    agents.forEach((a, i) => {
      const c = procCpuSeconds(a.pid);
      rows[i].cpuPct = c === null || cpu0[i] === null ? null : (c - cpu0[i]!) / o.idleSeconds * 100;
      const rss = samples[i].map((m) => m.rssKiB / 1024);
      rows[i].rssMiB = median(rss);
      rows[i].rssMaxMiB = rss.length ? Math.max(...rss) : null;
      rows[i].anonMiB = median(samples[i].map((m) => m.anonKiB / 1024));
    });
  } catch (e) {
    for (const r of rows) r.error = (e as Error).message;
  } finally {
    await Promise.all(agents.map((a) => a.stop("SIGTERM", 3000)));
  }
  return rows;
}
