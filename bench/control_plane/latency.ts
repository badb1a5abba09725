/**
 * Peer-event latency phase (with the idle-memory phase on the same agents): leases written
 * straight into the registry on a schedule (`--latency-leases`, `--latency-interval-ms` apart)
 * while `--latency-agents` agents run. Observers: each agent's `peer added` log line, an
 * in-process PeerWatcher, and the registry's own notification as the baseline (etcdctl watch; a
 * bare KV counter poller, `../lib/raw_watch.ts`).
 *
 * @example
 * ```ts
 * await latencyAndIdle(s, target("etcd", s)); // idle table, then the latency table
 * ```
 */
import type { AgentProc } from "../../test/kit/agent.ts";
import type { LoggedProcess } from "../../test/kit/spawn.ts";
import type { Registry } from "../../src/registry/contract/registry.ts";
import { PeerWatcher } from "../../src/lease/watch.ts";
import { ratio, round, summarize } from "../lib/report.ts";
import { nowMs, sleep, within } from "../lib/sys.ts";
import { leasePlan } from "../lib/leases.ts";
import { writeLeases } from "../lib/lease_writer.ts";
import { type RawWatch, startRawWatch } from "../lib/raw_watch.ts";
import {
  agentArgs,
  startBenchAgent,
  stopAll,
  type Target,
  waitFiles,
  writeNetConfig,
} from "./agents.ts";
import { measureIdle, startIdleBaselines, stopIdleBaselines } from "./idle.ts";
import type { Session } from "./session.ts";

interface ObserverStats {
  observer: string;
  seen: number;
  p50: number | null;
  p99: number | null;
  max: number | null;
}

/** Starts the agents, measures idle memory, then the latency of every observer. */
export async function latencyAndIdle(s: Session, t: Target): Promise<void> {
  const tag = "lat";
  const dir = await s.tempDir(`${t.name}-${tag}`);
  const k = Number(s.opt["latency-agents"]);
  const agents: AgentProc[] = [];
  const idleSeconds = Number(s.opt["idle-seconds"]);
  const stopCtl = new AbortController();
  const regs: Registry[] = [];
  let raw: RawWatch | null = null;
  let idleKids: LoggedProcess[] = [];
  let watching: Promise<void> | null = null;
  try {
    await writeNetConfig(dir);
    // Idle baselines start with the agents so both idle for the same time.
    idleKids = startIdleBaselines(idleSeconds);
    for (let i = 0; i < k; i++) agents.push(startBenchAgent(agentArgs(t, dir, tag, i)));
    await waitFiles(agents.map((_, i) => `${dir}/${tag}-${i}.env`), agents, 60_000);
    await measureIdle(s, t, agents, idleKids, idleSeconds);
    await stopIdleBaselines(idleKids);

    // Observers: the real agents (their logs), an in-process PeerWatcher, the raw baseline.
    const observed = new Map<string, number>();
    const obsReg = await t.open(dir, tag);
    regs.push(obsReg);
    const watcher = new PeerWatcher(obsReg, {
      ownKey: () => null,
      accept: (l) => l.attrs.backendType === "alloc",
    });
    let listed = false;
    watching = watcher.run(stopCtl.signal, {
      initial: () => {
        listed = true;
      },
      events: (evs) => {
        const at = nowMs();
        for (const e of evs) {
          if (e.type === "added" && !observed.has(e.lease.key)) observed.set(e.lease.key, at);
        }
      },
    });
    for (let i = 0; i < 100 && !listed; i++) await sleep(100);
    raw = await startRawWatch(t.raw(dir, tag));
    const writer = await t.open(dir, tag);
    regs.push(writer);
    await measureLatency(s, t, agents, observed, raw, writer);
  } catch (e) {
    s.report.problem(`latency/idle ${t.name}: ${(e as Error).message}`);
  } finally {
    stopCtl.abort();
    if (watching) await within(watching, 5000, "stopping the PeerWatcher").catch(() => {});
    await stopIdleBaselines(idleKids);
    await raw?.stop();
    await stopAll(agents);
    for (const r of regs) await within(r.close(), 5000, "closing a registry").catch(() => {});
    await s.removeDir(dir);
  }
}

/** Writes the leases, waits (bounded) for every observer to see them, reports the table. */
async function measureLatency(
  s: Session,
  t: Target,
  agents: AgentProc[],
  observed: Map<string, number>,
  raw: RawWatch,
  writer: Registry,
): Promise<void> {
  const { opt, report } = s;
  const k = agents.length;
  const count = Number(opt["latency-leases"]);
  const plan = leasePlan({
    count,
    firstSubnet: 128,
    subnetLen: 24,
    publicBase: "198.18.3.1",
    backend: "alloc",
  });
  const logOffsets = agents.map((a) => a.log().length);
  const writes = await writeLeases(writer, plan, {
    intervalMs: Number(opt["latency-interval-ms"]),
    // 0 writes leases without TTL (reservations): compares leases with and without an etcd
    // lease attached.
    ttlSeconds: Number(opt["latency-ttl"]) > 0 ? Number(opt["latency-ttl"]) : null,
  });
  const failed = writes.filter((w) => !w.ok);
  if (failed.length) report.problem(`${failed.length} lease writes failed: ${failed[0].error}`);
  // Wait (bounded) for every observer to see every lease.
  const want = plan.map((p) => p.key);
  const agentSeen = () =>
    agents.map((a, i) => {
      const m = new Map<string, number>();
      const re = /^(\S+) INFO\s+agent: peer added (\S+) at /gm;
      for (const x of a.log().slice(logOffsets[i]).matchAll(re)) {
        const key = x[2].replace("/", "-");
        if (!m.has(key)) m.set(key, Date.parse(x[1]));
      }
      return m;
    });
  const end = Date.now() + 10_000;
  while (Date.now() < end) {
    const all = [observed, raw.puts, ...agentSeen()];
    if (all.every((m) => want.every((k) => m.has(k)))) break;
    await sleep(100);
  }
  const t0 = new Map(writes.map((w) => [w.key, w.t0]));
  const stats = (name: string, m: Map<string, number>): ObserverStats => {
    const lat = want.filter((k) => m.has(k)).map((k) => m.get(k)! - t0.get(k)!);
    const sum = summarize(lat);
    return { observer: name, seen: lat.length, p50: sum.p50, p99: sum.p99, max: sum.max };
  };
  const rows: ObserverStats[] = [
    stats(t.name === "etcd" ? "etcdctl watch (baseline)" : "bare KV poller (baseline)", raw.puts),
    stats("in-process PeerWatcher", observed),
    ...agentSeen().map((m, i) => stats(`agent ${i + 1} log`, m)),
  ];
  const allAgents = agentSeen().flatMap((m) =>
    want.filter((k) => m.has(k)).map((k) => m.get(k)! - t0.get(k)!)
  );
  const aggregate = summarize(allAgents);
  rows.push({
    observer: `all ${k} agents`,
    seen: allAgents.length,
    p50: aggregate.p50,
    p99: aggregate.p99,
    max: aggregate.max,
  });
  const writeLat = summarize(writes.map((w) => w.t1 - w.t0));
  report.data[`latency_${t.name}`] = { rows, write: writeLat, count };
  report.section(
    `lease created → peer event, ms (${t.name}, ${count} leases ${
      opt["latency-interval-ms"]
    } ms apart)`,
    ["registry", "observer", "seen", "p50", "p99", "max", "p50 ratio"],
    rows.map((r) => [
      t.name,
      r.observer,
      `${r.seen}/${r.observer.startsWith("all ") ? count * k : count}`,
      r.p50,
      r.p99,
      r.max,
      round(ratio(r.p50, rows[0].p50)),
    ]),
    [
      `latency from just before the registry write call to the observer's event; lease TTL ${
        Number(opt["latency-ttl"]) > 0 ? `${opt["latency-ttl"]} s` : "none"
      }`,
      `write call → acknowledged: p50 ${round(writeLat.p50)} ms, p99 ${round(writeLat.p99)} ms`,
      "agent times come from their log lines (ms resolution); ratio = p50 / baseline p50",
    ],
  );
}
