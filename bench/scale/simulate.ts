/**
 * One scale run: N simulated nodes (`node_worker.ts`, `perWorker` per Worker) against one
 * registry, measured in phases: all N acquire leases (time until all hold distinct leases), all
 * N watchers hold every other lease (caught up), a steady window (registry load, simulation
 * CPU), probe leases written one by one (each seen by all N watchers: latency), and the renewal
 * schedule the leases imply.
 *
 * @example
 * ```ts
 * const r = await simulate({ kind: "kv", where: "/tmp/x/r.kv", prefix: "/coreos.com/network" }, 1000, opts);
 * r.allLeasedSeconds; r.probe.p99;
 * ```
 */
import type { Registry } from "../../src/registry/contract/registry.ts";
import { openEtcdRegistry } from "../../src/registry/etcd/mod.ts";
import { openKvRegistry } from "../../src/registry/kv/mod.ts";
import { leasePlan } from "../lib/leases.ts";
import { writeLeases } from "../lib/lease_writer.ts";
import { round, summarize, type Summary } from "../lib/report.ts";
import { nowMs, procCpuSeconds, procMemory, sleep } from "../lib/sys.ts";
import type { NodeSpec } from "./node_worker.ts";

export interface Target {
  kind: "kv" | "etcd";
  where: string;
  prefix: string;
}

export interface SimOptions {
  perWorker: number;
  ttlSeconds: number;
  renewMarginMs: number;
  steadySeconds: number;
  probes: number;
  probeIntervalMs: number;
  /** Bound on each waiting phase, ms. */
  phaseMs: number;
  /** Epoch ms by which the whole run must end (`--deadline-min`): phases stop there. */
  deadline: number;
  etcdClients: "node" | "worker";
  /** Nodes per start wave (0: all at once) and the delay between waves, ms. */
  waveSize: number;
  waveIntervalMs: number;
  /** etcd: the simulated nodes' unary call deadline, ms. */
  callTimeoutMs: number;
  /** Acquisitions and first lists at once per Worker (0: all), see NodeSpec.listConcurrency. */
  listConcurrency: number;
  /** Watchers start from the acquisition's list (the agent's) or list again (NodeSpec). */
  watchStart: "acquired" | "list";
  /** A Worker's nodes share their decoded leases (NodeSpec.shareDecoded). */
  shareDecoded: boolean;
}

export interface SimResult {
  kind: string;
  n: number;
  workers: number;
  allLeasedSeconds: number | null;
  distinct: boolean;
  acquireMs: Summary;
  /** Acquisitions that failed with a registry error and were retried (as the agent does). */
  acquireRetries: number;
  /** Spawn → every watcher holds all N − 1 other leases (caught up). */
  allListedSeconds: number | null;
  steady: {
    simCpuPct: number | null;
    simRssMiB: number | null;
    writesPerSec: number;
    registryCpuPct: number | null;
    registryRssMiB: number | null;
    requestsPerSec: number | null;
    /** etcd: gRPC calls started per second by method, during the window. */
    requestsByMethod?: Record<string, number | null>;
    kvFileMiB: number | null;
  };
  probe: Summary & { seen: number; want: number };
  renewals: { maxPerSecond: number; spanSeconds: number; distinctSeconds: number };
  /**
   * The join (spawn → all leased): CPU seconds of the simulation and of etcd, MiB etcd sent to
   * its clients (`etcd_network_client_grpc_sent_bytes_total`), gRPC calls by method, and the
   * 1-minute load average at its end.
   */
  join: {
    simCpuS: number | null;
    registryCpuS: number | null;
    sentMiB: number | null;
    calls: Record<string, number>;
    load: number | null;
  };
  /**
   * All leased → all watchers caught up: CPU seconds of the simulation and of etcd, MiB etcd
   * sent (the watchers' first lists or watch catch-up that the join did not already cover).
   */
  catchUp: { simCpuS: number | null; registryCpuS: number | null; sentMiB: number | null };
  /** weft's counters summed over the Workers at the end: watch restarts, KV conflicts. */
  counters: Record<string, number>;
  error?: string;
}

const NET = `{"Network":"198.19.0.0/16","SubnetLen":29,"Backend":{"Type":"alloc"}}`;

function open(t: Target): Promise<Registry> {
  return t.kind === "kv"
    ? openKvRegistry({ path: t.where, prefix: t.prefix })
    : openEtcdRegistry({ endpoints: [t.where], prefix: t.prefix });
}

/** etcd's own /metrics: CPU seconds, RSS, gRPC calls started. */
async function etcdMetrics(endpoint: string) {
  return parseEtcdMetrics(await (await fetch(`${endpoint}/metrics`)).text());
}

/** etcd's /metrics text: CPU seconds, RSS, gRPC calls started (all, and per method). */
export function parseEtcdMetrics(text: string) {
  const sum = (name: string) =>
    text.split("\n").filter((l) => l.startsWith(name)).reduce(
      (a, l) => a + Number(l.split(" ").pop()),
      0,
    );
  const byMethod = new Map<string, number>();
  for (const l of text.split("\n")) {
    const m = l.match(/^grpc_server_started_total\{.*grpc_method="(\w+)".*\} (\S+)/);
    if (m) byMethod.set(m[1], (byMethod.get(m[1]) ?? 0) + Number(m[2]));
  }
  return {
    cpu: sum("process_cpu_seconds_total"),
    sent: sum("etcd_network_client_grpc_sent_bytes_total"),
    rss: sum("process_resident_memory_bytes"),
    grpc: sum("grpc_server_started_total"),
    byMethod,
  };
}

async function kvFileBytes(path: string): Promise<number> {
  let n = 0;
  for (const f of [path, `${path}-wal`]) n += (await Deno.stat(f).catch(() => null))?.size ?? 0;
  return n;
}

export async function simulate(t: Target, n: number, o: SimOptions): Promise<SimResult> {
  const control = await open(t);
  await control.putConfig(NET);
  const probePlan = leasePlan({
    count: o.probes,
    firstSubnet: 8000,
    subnetLen: 29,
    publicBase: "198.18.250.1",
    backend: "alloc",
  });
  const workers: Worker[] = [];
  const leased: { key: string; ms: number; expiresAt: number | null }[] = [];
  const seenBy: [string, number[]][][] = [];
  let listedWorkers = 0, stopped = 0, leasedWorkers = 0, leasedNodes = 0;
  const renewAts: (number | null)[] = [];
  const errors: string[] = [];
  const result: SimResult = {
    kind: t.kind,
    n,
    workers: Math.ceil(n / o.perWorker),
    allLeasedSeconds: null,
    distinct: false,
    acquireMs: summarize([]),
    acquireRetries: 0,
    allListedSeconds: null,
    steady: {
      simCpuPct: null,
      simRssMiB: null,
      writesPerSec: 0,
      registryCpuPct: null,
      registryRssMiB: null,
      requestsPerSec: null,
      kvFileMiB: null,
    },
    probe: { ...summarize([]), seen: 0, want: n * o.probes },
    renewals: { maxPerSecond: 0, spanSeconds: 0, distinctSeconds: 0 },
    counters: {},
    join: { simCpuS: null, registryCpuS: null, sentMiB: null, calls: {}, load: null },
    catchUp: { simCpuS: null, registryCpuS: null, sentMiB: null },
  };
  const waitUntil = async (what: string, ok: () => boolean) => {
    const end = Math.min(Date.now() + o.phaseMs, o.deadline);
    while (!ok()) {
      if (errors.length) throw new Error(`a node worker failed: ${errors[0]}`);
      if (Date.now() > end) {
        throw new Error(
          `${what}: not done within ${o.phaseMs} ms or before the run's deadline ` +
            `(${leasedNodes} of ${n} nodes leased)`,
        );
      }
      await sleep(50);
    }
  };
  try {
    const joinCpu0 = procCpuSeconds(Deno.pid);
    const joinEt0 = t.kind === "etcd" ? await etcdMetrics(t.where) : null;
    const t0 = nowMs();
    for (let w = 0; w < result.workers; w++) {
      const worker = new Worker(new URL("./node_worker.ts", import.meta.url).href, {
        type: "module",
      });
      worker.onmessage = (e: MessageEvent) => {
        const m = e.data;
        if (m.type === "leased") {
          leased.push(...m.nodes);
          result.acquireRetries += m.retries;
          leasedWorkers++;
        } else if (m.type === "progress") leasedNodes++;
        else if (m.type === "listed") listedWorkers++;
        // Each report holds all the Worker saw so far.
        else if (m.type === "seen") seenBy[w] = m.seen;
        else if (m.type === "renewals") renewAts.push(...m.at);
        else if (m.type === "stopped") {
          stopped++;
          for (const [k, c] of Object.entries(m.counters as Record<string, number>)) {
            result.counters[k] = (result.counters[k] ?? 0) + c;
          }
        } else if (m.type === "error") errors.push(m.error);
      };
      const spec: NodeSpec = {
        kind: t.kind,
        where: t.where,
        prefix: t.prefix,
        netConfig: NET,
        first: w * o.perWorker,
        count: Math.min(o.perWorker, n - w * o.perWorker),
        ttlSeconds: o.ttlSeconds,
        renewMarginMs: o.renewMarginMs,
        etcdClients: o.etcdClients,
        waveSize: o.waveSize,
        waveIntervalMs: o.waveIntervalMs,
        probeKeys: probePlan.map((p) => p.key),
        callTimeoutMs: o.callTimeoutMs,
        listConcurrency: o.listConcurrency,
        total: n,
        watchStart: o.watchStart,
        shareDecoded: o.shareDecoded,
      };
      worker.postMessage({ type: "start", spec });
      workers.push(worker);
    }
    await waitUntil("all nodes leased", () => leasedWorkers === workers.length);
    result.allLeasedSeconds = (nowMs() - t0) / 1000;
    const joinCpu1 = procCpuSeconds(Deno.pid);
    const joinEt1 = t.kind === "etcd" ? await etcdMetrics(t.where) : null;
    result.join.load = Number((await Deno.readTextFile("/proc/loadavg")).split(" ")[0]);
    if (joinCpu0 !== null && joinCpu1 !== null) result.join.simCpuS = joinCpu1 - joinCpu0;
    if (joinEt0 && joinEt1) {
      result.join.registryCpuS = joinEt1.cpu - joinEt0.cpu;
      result.join.sentMiB = (joinEt1.sent - joinEt0.sent) / 2 ** 20;
      for (const [k, c] of joinEt1.byMethod) {
        const d = c - (joinEt0.byMethod.get(k) ?? 0);
        if (d > 0) result.join.calls[k] = d;
      }
    }
    result.distinct = new Set(leased.map((l) => l.key)).size === n;
    result.acquireMs = summarize(leased.map((l) => l.ms));
    await waitUntil("all watchers caught up", () => listedWorkers === workers.length);
    result.allListedSeconds = (nowMs() - t0) / 1000;
    const upCpu = procCpuSeconds(Deno.pid);
    const upEt = t.kind === "etcd" ? await etcdMetrics(t.where) : null;
    if (joinCpu1 !== null && upCpu !== null) result.catchUp.simCpuS = upCpu - joinCpu1;
    if (joinEt1 && upEt) {
      result.catchUp.registryCpuS = upEt.cpu - joinEt1.cpu;
      result.catchUp.sentMiB = (upEt.sent - joinEt1.sent) / 2 ** 20;
    }

    // Steady state: nothing changes but renewals (none due in the window with the default TTL).
    await sleep(2000);
    const rev0 = (await control.listLeases()).revision;
    const cpu0 = procCpuSeconds(Deno.pid);
    const et0 = t.kind === "etcd" ? await etcdMetrics(t.where) : null;
    const w0 = performance.now();
    await sleep(o.steadySeconds * 1000);
    const secs = (performance.now() - w0) / 1000;
    const cpu1 = procCpuSeconds(Deno.pid);
    const et1 = t.kind === "etcd" ? await etcdMetrics(t.where) : null;
    const rev1 = (await control.listLeases()).revision;
    result.steady.simCpuPct = cpu0 === null || cpu1 === null ? null : (cpu1 - cpu0) / secs * 100;
    result.steady.simRssMiB = (procMemory(Deno.pid)?.rssKiB ?? 0) / 1024;
    // The two lists above are reads, not writes; the revision moves only with writes.
    result.steady.writesPerSec = (rev1 - rev0) / secs;
    if (et0 && et1) {
      result.steady.registryCpuPct = (et1.cpu - et0.cpu) / secs * 100;
      result.steady.registryRssMiB = et1.rss / 2 ** 20;
      result.steady.requestsPerSec = (et1.grpc - et0.grpc) / secs;
      result.steady.requestsByMethod = Object.fromEntries(
        [...et1.byMethod].map(([k, c]) => [k, round((c - (et0.byMethod.get(k) ?? 0)) / secs)])
          .filter(([, r]) => (r as number) > 0),
      );
    }
    if (t.kind === "kv") result.steady.kvFileMiB = (await kvFileBytes(t.where)) / 2 ** 20;

    // Probes: one new lease at a time, seen by all N watchers.
    const writes = await writeLeases(control, probePlan, {
      intervalMs: o.probeIntervalMs,
      ttlSeconds: o.ttlSeconds,
    });
    const t0s = new Map(writes.map((w) => [w.key, w.t0]));
    const all = () => seenBy.flat();
    const count = () => all().reduce((a, [, l]) => a + l.length, 0);
    const end = Math.min(Date.now() + o.phaseMs, o.deadline);
    while (Date.now() < end) {
      for (const w of workers) w.postMessage({ type: "report" });
      await sleep(500);
      if (count() >= n * o.probes) break;
    }
    const lat = all().flatMap(([k, ts]) => ts.map((x) => x - t0s.get(k)!));
    result.probe = { ...summarize(lat), seen: lat.length, want: n * o.probes };

    // Renewal schedule: when each node's renewal loop will renew (margin before expiry, up to a
    // tenth of it earlier at random), as the loops scheduled it.
    for (const w of workers) w.postMessage({ type: "renewals" });
    await waitUntil("renewal schedules", () => renewAts.length >= n);
    const perSecond = new Map<number, number>();
    for (const at of renewAts) {
      if (at === null) continue;
      const s = Math.floor(at / 1000);
      perSecond.set(s, (perSecond.get(s) ?? 0) + 1);
    }
    const ss = [...perSecond.keys()];
    result.renewals = {
      maxPerSecond: Math.max(0, ...perSecond.values()),
      spanSeconds: ss.length ? Math.max(...ss) - Math.min(...ss) + 1 : 0,
      distinctSeconds: ss.length,
    };
  } catch (e) {
    result.error = (e as Error).message;
  } finally {
    for (const w of workers) w.postMessage({ type: "stop" });
    const end = Date.now() + 30_000;
    while (stopped < workers.length && Date.now() < end) await sleep(100);
    for (const w of workers) w.terminate();
    await control.close();
  }
  return result;
}
