/**
 * Convergence phase: N agents started in waves until all hold distinct leases (every subnet.env
 * written, all distinct, `weft leases` lists N), with their memory and CPU once converged.
 * Baseline: the same number of `main.ts version` processes (deno start + loading weft's module
 * graph, then exit) in the same waves.
 *
 * @example
 * ```ts
 * const rows = [await convergence(s, target("kv", s), 50)];
 * convergenceSection(s, rows);
 * ```
 */
import { type AgentProc, weft } from "../../test/kit/agent.ts";
import { parseSubnetEnvText } from "../../src/config/subnet_env.ts";
import { ratio, round, summarize } from "../lib/report.ts";
import { memAvailableMiB, procCpuSeconds, procMemory } from "../lib/sys.ts";
import {
  agentArgs,
  startBenchAgent,
  stopAll,
  type Target,
  waitFiles,
  writeNetConfig,
} from "./agents.ts";
import type { Session } from "./session.ts";

export interface Convergence {
  registry: string;
  n: number;
  started: number;
  waves: number;
  seconds: number | null;
  baselineSeconds: number | null;
  leaseP50: number | null;
  leaseP99: number | null;
  distinct: boolean;
  listed: number | null;
  rssMeanMiB: number | null;
  pssSumMiB: number | null;
  cpuSecondsTotal: number | null;
  memAvailableMinMiB: number;
  /** Seconds each wave took (its first spawn → its last subnet.env). */
  waveSeconds: number[];
  error?: string;
}

export async function convergence(s: Session, t: Target, n: number): Promise<Convergence> {
  const { deadline, report, wave } = s;
  const tag = `conv${n}`;
  const dir = await s.tempDir(`${t.name}-${tag}`);
  const agents: AgentProc[] = [];
  const spawnAt: number[] = [];
  const res: Convergence = {
    registry: t.name,
    n,
    started: 0,
    waves: 0,
    seconds: null,
    baselineSeconds: null,
    leaseP50: null,
    leaseP99: null,
    distinct: false,
    listed: null,
    rssMeanMiB: null,
    pssSumMiB: null,
    cpuSecondsTotal: null,
    memAvailableMinMiB: memAvailableMiB(),
    waveSeconds: [],
  };
  try {
    await writeNetConfig(dir);
    const files: number[] = [];
    let perAgentMiB = 150; // guess until the first wave is measured
    const t0 = Date.now();
    for (let w = 0; w < n; w += wave) {
      deadline.check(`starting agents ${w}..${n - 1} (${t.name})`);
      const size = Math.min(wave, n - w);
      const free = memAvailableMiB();
      const need = size * perAgentMiB * 1.2 + Number(s.opt["min-free-mib"]);
      if (free < need) {
        throw new Error(
          `stopped at ${w} agents: ${Math.round(free)} MiB available, another wave of ${size} ` +
            `needs about ${Math.round(need)} MiB (incl. --min-free-mib)`,
        );
      }
      const idx = Array.from({ length: size }, (_, k) => w + k);
      for (const i of idx) {
        spawnAt[i] = Date.now();
        agents[i] = startBenchAgent(agentArgs(t, dir, tag, i));
      }
      res.started = w + size;
      res.waves++;
      const got = await waitFiles(
        idx.map((i) => `${dir}/${tag}-${i}.env`),
        idx.map((i) => agents[i]),
        Math.min(Number(s.opt["wave-timeout-s"]) * 1000, deadline.left()),
      );
      idx.forEach((i, k) => files[i] = got[k]);
      res.waveSeconds.push(round((Math.max(...got) - spawnAt[idx[0]]) / 1000)!);
      res.memAvailableMinMiB = Math.min(res.memAvailableMinMiB, memAvailableMiB());
      const mems = agents.map((a) => procMemory(a.child.pid)?.rssKiB ?? 0).filter((x) => x > 0);
      if (mems.length) perAgentMiB = mems.reduce((a, b) => a + b, 0) / mems.length / 1024;
    }
    res.seconds = (Math.max(...files) - t0) / 1000;
    const perAgent = files.map((f, i) => (f - spawnAt[i]) / 1000);
    const sum = summarize(perAgent);
    res.leaseP50 = sum.p50;
    res.leaseP99 = sum.p99;
    const subnets = new Set<string>();
    for (let i = 0; i < n; i++) {
      subnets.add(
        parseSubnetEnvText(await Deno.readTextFile(`${dir}/${tag}-${i}.env`)).FLANNEL_SUBNET,
      );
    }
    res.distinct = subnets.size === n;
    // Memory and CPU with everything converged (agents keep watching and polling meanwhile).
    const mems = agents.map((a) => procMemory(a.child.pid)).filter((m) => m !== null);
    res.rssMeanMiB = mems.reduce((a, m) => a + m!.rssKiB, 0) / mems.length / 1024;
    res.pssSumMiB = mems.reduce((a, m) => a + (m!.pssKiB ?? 0), 0) / 1024;
    res.cpuSecondsTotal = agents.reduce((a, x) => a + (procCpuSeconds(x.child.pid) ?? 0), 0);
    const listed = await weft(["leases", "--json", ...t.args(dir, tag)], { timeoutMs: 60_000 });
    res.listed = listed.code === 0 ? (JSON.parse(listed.stdout) as unknown[]).length : null;
    if (listed.code !== 0) report.problem(`weft leases failed: ${listed.stderr.trim()}`);
  } catch (e) {
    res.error = (e as Error).message.split("\n")[0];
    report.problem(`convergence ${t.name} N=${n}: ${(e as Error).message}`);
  } finally {
    await stopAll(agents.filter(Boolean));
    await s.removeDir(dir);
  }
  // Baseline: the same number of deno processes, same waves, each loading weft's module graph.
  if (res.started > 0 && deadline.left() > 60_000) {
    const b0 = Date.now();
    for (let w = 0; w < res.started; w += wave) {
      const size = Math.min(wave, res.started - w);
      await Promise.all(
        Array.from({ length: size }, () => weft(["version"], { timeoutMs: 120_000 })),
      );
    }
    res.baselineSeconds = (Date.now() - b0) / 1000;
  }
  return res;
}

/** The convergence table and `data.convergence` of the report. */
export function convergenceSection(s: Session, conv: Convergence[]): void {
  s.report.data.convergence = conv;
  s.report.section(
    "convergence: N agents hold distinct leases",
    [
      "registry",
      "N",
      "waves",
      "weft s",
      "baseline s",
      "ratio",
      "lease p50 s",
      "lease p99 s",
      "wave s",
      "distinct",
      "listed",
      "RSS/agent MiB",
      "PSS sum MiB",
      "CPU s",
    ],
    conv.map((c) => [
      c.registry,
      c.n,
      c.waves,
      c.seconds,
      c.baselineSeconds,
      round(ratio(c.seconds, c.baselineSeconds)),
      c.leaseP50,
      c.leaseP99,
      c.waveSeconds.join("/"),
      c.error ? `no: ${c.error.slice(0, 40)}` : c.distinct ? "yes" : "NO",
      c.listed,
      c.rssMeanMiB,
      c.pssSumMiB,
      c.cpuSecondsTotal,
    ]),
    [
      `agents started in waves of ${s.wave}; the next wave starts once the previous one holds leases`,
      "weft s: first spawn → last subnet.env written (file mtime)",
      "baseline s: the same count of `deno run main.ts version` (start + load weft's modules), same waves",
      "lease p50/p99: per agent, its spawn → its subnet.env; wave s: each wave, first spawn → last subnet.env",
      "RSS/PSS/CPU read from /proc once all agents converged (CPU = user+sys since spawn, summed)",
    ],
  );
}
