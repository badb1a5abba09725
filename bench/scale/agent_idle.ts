/**
 * One real agent's idle cost with many peers: `--peers` leases (/29, alloc, written with
 * `../lib/lease_writer.ts`'s writeLeases) in a fresh registry, one `weft run --backend alloc`
 * agent on loopback with weft's V8 flags, next to the same agent with no peers (its own fresh
 * registry), both idle for the same window: RSS, anonymous memory and CPU. Memory is sampled every
 * second of the window and reported as the median (what the agent holds while idle) and the
 * maximum (a periodic re-list's garbage, until the agent's heap trim a second later): one sample
 * at the end of the window read a re-list in flight now and then (+10 MiB with 5000 etcd peers).
 *
 * @example
 * ```ts
 * const rows = await agentIdle({ kind: "kv", dir, etcdEndpoint: null, peers: 5000, idleSeconds: 20 });
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

export interface IdleRow {
  kind: string;
  peers: number;
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
}): Promise<IdleRow[]> {
  const counts = [0, o.peers];
  const agents: AgentProc[] = [];
  const rows: IdleRow[] = counts.map((p) => ({
    kind: o.kind,
    peers: p,
    rssMiB: null,
    rssMaxMiB: null,
    anonMiB: null,
    cpuPct: null,
  }));
  await Deno.writeTextFile(`${o.dir}/idle-net.json`, NET);
  try {
    for (const [i, p] of counts.entries()) {
      const kvPath = `${o.dir}/idle-${o.kind}-${p}.kv`;
      const prefix = `/weft-idle-${o.runId}-${p}`;
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
        if (p > 0) rows[i].relist = await relistCost(reg, 5);
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
        `${o.dir}/idle-${o.kind}-${p}.env`,
        "--iptables-forward-rules=false",
      ]));
    }
    await waitFiles(counts.map((p) => `${o.dir}/idle-${o.kind}-${p}.env`), agents, 120_000);
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
