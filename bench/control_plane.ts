/**
 * Control-plane benchmark: real `weft run --backend alloc` processes on loopback against each
 * registry (a shared Deno KV file; a real etcd from test/kit/etcd.ts), measuring
 *
 * 1. convergence — N agents (50, 200) until all hold distinct leases (every subnet.env written,
 *    all distinct, `weft leases` lists N), started in waves; with memory (RSS, PSS) and CPU.
 *    Baseline: N × `main.ts version` (deno start + loading weft's module graph) in the same waves.
 * 2. peer-event latency — leases written straight into the registry on a schedule (default 100,
 *    50 ms apart), seen by real agents ("peer added" log lines) and by an in-process PeerWatcher.
 *    Baseline: the registry's own notification (etcdctl watch; a bare KV counter poller).
 * 3. idle memory — one agent after 10 s idle. Baseline: an idle bare deno process.
 *
 * Agents run in the root namespace with `--iptables-forward-rules=false` (no rules on the test
 * machine); only loopback and 198.18.0.0/15 addresses are used. Everything started is stopped and
 * every temp dir removed, also on Ctrl-C.
 *
 * @example
 * ```sh
 * deno run -A bench/control_plane.ts                        # everything, both registries
 * deno run -A bench/control_plane.ts --registries etcd --sizes 50 --skip latency
 * ```
 */
import { parseArgs } from "node:util";
import { type AgentProc, startAgent, weft } from "../test/kit/agent.ts";
import { type EtcdProc, startEtcd } from "../test/kit/etcd.ts";
import { parseSubnetEnvText } from "../src/config/subnet_env.ts";
import type { Registry } from "../src/registry/contract/registry.ts";
import { openEtcdRegistry } from "../src/registry/etcd/mod.ts";
import { openKvRegistry } from "../src/registry/kv/mod.ts";
import { PeerWatcher } from "../src/lease/watch.ts";
import { type Cell, ratio, Report, round, summarize } from "./lib/report.ts";
import {
  Deadline,
  load1,
  memAvailableMiB,
  nowMs,
  procCpuSeconds,
  procMemory,
  sleep,
  within,
} from "./lib/sys.ts";
import { leasePlan } from "./lib/leases.ts";
import { writeLeases } from "./lib/lease_writer.ts";
import { type RawWatchTarget, startRawWatch } from "./lib/raw_watch.ts";

const { values: opt } = parseArgs({
  args: Deno.args,
  options: {
    registries: { type: "string", default: "kv,etcd" },
    sizes: { type: "string", default: "50,200" },
    wave: { type: "string", default: "50" },
    "wave-timeout-s": { type: "string", default: "180" },
    "min-free-mib": { type: "string", default: "3072" },
    "latency-agents": { type: "string", default: "3" },
    "latency-leases": { type: "string", default: "100" },
    "latency-interval-ms": { type: "string", default: "50" },
    "latency-ttl": { type: "string", default: "600" },
    "idle-seconds": { type: "string", default: "10" },
    skip: { type: "string", default: "" },
    "deadline-min": { type: "string", default: "30" },
    help: { type: "boolean", default: false },
  },
});
if (opt.help) {
  console.log(
    `Usage: deno run -A bench/control_plane.ts [--registries kv,etcd] [--sizes 50,200]
  [--wave 50] [--wave-timeout-s 180] [--min-free-mib 3072] [--latency-agents 3]
  [--latency-leases 100] [--latency-interval-ms 50] [--latency-ttl 600 (0 = none)]
  [--idle-seconds 10]
  [--skip convergence,latency] [--deadline-min 30]`,
  );
  Deno.exit(0);
}

const registries = opt.registries.split(",").filter(Boolean) as ("kv" | "etcd")[];
for (const r of registries) {
  if (r !== "kv" && r !== "etcd") throw new Error(`--registries: "${r}" is not kv or etcd`);
}
const sizes = opt.sizes.split(",").filter(Boolean).map(Number);
const wave = Number(opt.wave);
const skip = new Set(opt.skip.split(",").filter(Boolean));
const deadline = new Deadline(Number(opt["deadline-min"]) * 60_000);
const runId = Math.random().toString(36).slice(2, 8);
const report = new Report("control_plane", { ...opt, runId });

// ---- cleanup: temp dirs and processes go away on every exit path, Ctrl-C included ----
const tempDirs = new Set<string>();
const liveAgents = new Set<AgentProc>();
const liveKids = new Set<Deno.ChildProcess>();
globalThis.addEventListener("unload", () => {
  for (const c of liveKids) {
    try {
      c.kill("SIGKILL");
    } catch { /* gone */ }
  }
  for (const a of liveAgents) {
    try {
      a.child.kill("SIGKILL");
    } catch { /* gone */ }
  }
  for (const d of tempDirs) {
    try {
      Deno.removeSync(d, { recursive: true });
    } catch { /* gone */ }
  }
});
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  Deno.addSignalListener(sig, () => {
    console.error(`\n${sig}: stopping agents and removing temp dirs`);
    Deno.exit(130); // runs the unload handlers here and in test/kit (exit.ts: agents, etcd)
  });
}

async function tempDir(tag: string): Promise<string> {
  const d = await Deno.makeTempDir({ prefix: `weft-bench-${runId}-${tag}-` });
  tempDirs.add(d);
  return d;
}

async function removeDir(d: string) {
  await Deno.remove(d, { recursive: true }).catch(() => {});
  tempDirs.delete(d);
}

// ---- registries ----

let etcd: EtcdProc | null = null;

interface Target {
  name: "kv" | "etcd";
  /** Registry flags for agents and CLI commands. */
  args(dir: string, tag: string): string[];
  open(dir: string, tag: string): Promise<Registry>;
  raw(dir: string, tag: string): RawWatchTarget;
}

function target(name: "kv" | "etcd"): Target {
  const prefix = (tag: string) => `/weft-bench-${runId}-${tag}`;
  if (name === "kv") {
    return {
      name,
      args: (dir, tag) => ["--registry", "kv", "--kv-path", `${dir}/${tag}.kv`],
      open: (dir, tag) => openKvRegistry({ path: `${dir}/${tag}.kv` }),
      raw: (dir, tag) => ({ kind: "kv", path: `${dir}/${tag}.kv`, prefix: "/coreos.com/network" }),
    };
  }
  return {
    name,
    args: (_dir, tag) => [
      "--registry",
      "etcd",
      "--etcd-endpoints",
      etcd!.endpoint,
      "--etcd-prefix",
      prefix(tag),
    ],
    open: (_dir, tag) => openEtcdRegistry({ endpoints: [etcd!.endpoint], prefix: prefix(tag) }),
    raw: (_dir, tag) => ({ kind: "etcd", endpoint: etcd!.endpoint, prefix: prefix(tag) }),
  };
}

function agentArgs(t: Target, dir: string, tag: string, i: number, extra: string[] = []) {
  return [
    ...t.args(dir, tag),
    "--net-config-path",
    `${dir}/net.json`,
    "--backend",
    "alloc",
    "--iface",
    "lo",
    "--public-ip",
    `198.18.1.${i + 1}`,
    "--subnet-file",
    `${dir}/${tag}-${i}.env`,
    "--iptables-forward-rules=false", // these agents share the test machine's namespace
    ...extra,
  ];
}

function launch(args: string[]): AgentProc {
  const a = startAgent(args);
  liveAgents.add(a);
  a.exited.then(() => liveAgents.delete(a));
  return a;
}

async function stopAll(agents: AgentProc[]) {
  await Promise.all(agents.map((a) => a.stop("SIGTERM", 3000)));
}

/** mtime (epoch ms) of each file once all exist; throws naming the missing ones at the deadline. */
async function waitFiles(
  paths: string[],
  agents: AgentProc[],
  ms: number,
): Promise<number[]> {
  const seen: (number | null)[] = paths.map(() => null);
  const exited = new Set<number>();
  agents.forEach((a, i) => a.exited.then(() => exited.add(i)));
  const end = Date.now() + ms;
  while (true) {
    await Promise.all(paths.map(async (p, i) => {
      if (seen[i] !== null) return;
      const st = await Deno.stat(p).catch(() => null);
      if (st?.mtime && st.size > 0) seen[i] = st.mtime.getTime();
    }));
    const missing = seen.flatMap((s, i) => s === null ? [i] : []);
    if (missing.length === 0) return seen as number[];
    const dead = missing.filter((i) => exited.has(i));
    if (dead.length) {
      throw new Error(
        `agent ${dead[0]} exited before writing ${paths[dead[0]]}:\n${
          agents[dead[0]].log().slice(-2000)
        }`,
      );
    }
    if (Date.now() >= end) {
      throw new Error(
        `${missing.length} of ${paths.length} agents had no subnet.env after ${ms} ms ` +
          `(first: ${paths[missing[0]]}); log tail:\n${agents[missing[0]].log().slice(-1500)}`,
      );
    }
    await sleep(100);
  }
}

// ---- 1. convergence ----

interface Convergence {
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

async function convergence(t: Target, n: number): Promise<Convergence> {
  const tag = `conv${n}`;
  const dir = await tempDir(`${t.name}-${tag}`);
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
    await Deno.writeTextFile(
      `${dir}/net.json`,
      `{"Network":"198.19.0.0/16","Backend":{"Type":"alloc"}}`,
    );
    const files: number[] = [];
    let perAgentMiB = 150; // guess until the first wave is measured
    const t0 = Date.now();
    for (let w = 0; w < n; w += wave) {
      deadline.check(`starting agents ${w}..${n - 1} (${t.name})`);
      const size = Math.min(wave, n - w);
      const free = memAvailableMiB();
      const need = size * perAgentMiB * 1.2 + Number(opt["min-free-mib"]);
      if (free < need) {
        throw new Error(
          `stopped at ${w} agents: ${Math.round(free)} MiB available, another wave of ${size} ` +
            `needs about ${Math.round(need)} MiB (incl. --min-free-mib)`,
        );
      }
      const idx = Array.from({ length: size }, (_, k) => w + k);
      for (const i of idx) {
        spawnAt[i] = Date.now();
        agents[i] = launch(agentArgs(t, dir, tag, i));
      }
      res.started = w + size;
      res.waves++;
      const got = await waitFiles(
        idx.map((i) => `${dir}/${tag}-${i}.env`),
        idx.map((i) => agents[i]),
        Math.min(Number(opt["wave-timeout-s"]) * 1000, deadline.left()),
      );
      idx.forEach((i, k) => files[i] = got[k]);
      res.waveSeconds.push(round((Math.max(...got) - spawnAt[idx[0]]) / 1000)!);
      res.memAvailableMinMiB = Math.min(res.memAvailableMinMiB, memAvailableMiB());
      const mems = agents.map((a) => procMemory(a.child.pid)?.rssKiB ?? 0).filter((x) => x > 0);
      if (mems.length) perAgentMiB = mems.reduce((a, b) => a + b, 0) / mems.length / 1024;
    }
    res.seconds = (Math.max(...files) - t0) / 1000;
    const perAgent = files.map((f, i) => (f - spawnAt[i]) / 1000);
    const s = summarize(perAgent);
    res.leaseP50 = s.p50;
    res.leaseP99 = s.p99;
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
    await removeDir(dir);
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

// ---- 2 + 3. latency and idle memory ----

interface ObserverStats {
  observer: string;
  seen: number;
  p50: number | null;
  p99: number | null;
  max: number | null;
}

async function latencyAndIdle(t: Target) {
  const tag = "lat";
  const dir = await tempDir(`${t.name}-${tag}`);
  const k = Number(opt["latency-agents"]);
  const agents: AgentProc[] = [];
  const idleSeconds = Number(opt["idle-seconds"]);
  const stopCtl = new AbortController();
  const regs: Registry[] = [];
  let raw: Awaited<ReturnType<typeof startRawWatch>> | null = null;
  const idleKids: Deno.ChildProcess[] = [];
  let watching: Promise<void> | null = null;
  try {
    await Deno.writeTextFile(
      `${dir}/net.json`,
      `{"Network":"198.19.0.0/16","Backend":{"Type":"alloc"}}`,
    );
    // Idle baselines start with the agents so both idle for the same time.
    for (const extra of [[], ["--load-weft"]]) {
      const kid = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          new URL("./lib/idle_child.ts", import.meta.url).pathname,
          "--seconds",
          String(idleSeconds + 120),
          ...extra,
        ],
        stdout: "null",
        stderr: "null",
      }).spawn();
      idleKids.push(kid);
      liveKids.add(kid);
      kid.status.then(() => liveKids.delete(kid));
    }
    for (let i = 0; i < k; i++) agents.push(launch(agentArgs(t, dir, tag, i)));
    await waitFiles(agents.map((_, i) => `${dir}/${tag}-${i}.env`), agents, 60_000);
    const cpu0 = [...agents.map((a) => a.child.pid), ...idleKids.map((c) => c.pid)].map(
      procCpuSeconds,
    );
    await sleep(idleSeconds * 1000);
    const cpuPct = [...agents.map((a) => a.child.pid), ...idleKids.map((c) => c.pid)].map(
      (pid, i) => {
        const now = procCpuSeconds(pid);
        return now === null || cpu0[i] === null ? null : (now - cpu0[i]!) / idleSeconds * 100;
      },
    );
    const mem = agents.map((a) => procMemory(a.child.pid));
    const bare = procMemory(idleKids[0].pid);
    const loaded = procMemory(idleKids[1].pid);
    const rssMiB = (m: ReturnType<typeof procMemory>) => m ? m.rssKiB / 1024 : null;
    const pssMiB = (m: ReturnType<typeof procMemory>) => m?.pssKiB ? m.pssKiB / 1024 : null;
    const idleRows: Cell[][] = [
      [
        t.name,
        "weft agent (alloc)",
        rssMiB(mem[0]),
        pssMiB(mem[0]),
        mem[0] ? mem[0].anonKiB / 1024 : null,
        round(ratio(rssMiB(mem[0]), rssMiB(bare))),
        cpuPct[0],
      ],
      [
        t.name,
        "deno + weft modules, idle",
        rssMiB(loaded),
        pssMiB(loaded),
        loaded ? loaded.anonKiB / 1024 : null,
        round(ratio(rssMiB(loaded), rssMiB(bare))),
        cpuPct[k + 1],
      ],
      [
        t.name,
        "bare deno, idle",
        rssMiB(bare),
        pssMiB(bare),
        bare ? bare.anonKiB / 1024 : null,
        1,
        cpuPct[k],
      ],
    ];
    report.data[`idle_${t.name}`] = { agents: mem, bare, loaded, idleSeconds, cpuPct };
    report.section(
      `idle memory after ${idleSeconds} s (${t.name})`,
      ["registry", "process", "RSS MiB", "PSS MiB", "anon MiB", "RSS ratio", "idle CPU %"],
      idleRows,
      [
        "RSS counts shared pages (the deno binary) in full; PSS divides them among sharers",
        "ratio = RSS / RSS of a bare idle deno process measured at the same time",
        "idle CPU % = user+sys CPU over the idle window / its length (one core = 100 %)",
      ],
    );
    for (const c of idleKids) c.kill("SIGKILL");

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
      const s = summarize(lat);
      return { observer: name, seen: lat.length, p50: s.p50, p99: s.p99, max: s.max };
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
  } catch (e) {
    report.problem(`latency/idle ${t.name}: ${(e as Error).message}`);
  } finally {
    stopCtl.abort();
    if (watching) await within(watching, 5000, "stopping the PeerWatcher").catch(() => {});
    for (const c of idleKids) {
      try {
        c.kill("SIGKILL");
      } catch { /* gone */ }
      await c.status;
    }
    await raw?.stop();
    await stopAll(agents);
    for (const r of regs) await within(r.close(), 5000, "closing a registry").catch(() => {});
    await removeDir(dir);
  }
}

// ---- main ----

try {
  console.log(
    `weft control-plane benchmark ${runId}: registries ${registries.join(",")}, sizes ${sizes}, ` +
      `wave ${wave}, load ${load1()}, ${Math.round(memAvailableMiB())} MiB available`,
  );
  if (registries.includes("etcd")) etcd = await startEtcd();
  const conv: Convergence[] = [];
  for (const name of registries) {
    const t = target(name);
    if (!skip.has("latency")) await latencyAndIdle(t);
    if (skip.has("convergence")) continue;
    for (const n of sizes) {
      if (deadline.left() < 60_000) {
        report.problem(`skipped convergence ${name} N=${n}: run deadline nearly reached`);
        continue;
      }
      const c = await convergence(t, n);
      conv.push(c);
      console.log(
        `  ${name} N=${n}: ${c.seconds ?? "-"} s (baseline ${c.baselineSeconds ?? "-"} s)${
          c.error ? ` — ${c.error}` : ""
        }`,
      );
    }
  }
  if (conv.length) {
    report.data.convergence = conv;
    report.section(
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
        `agents started in waves of ${wave}; the next wave starts once the previous one holds leases`,
        "weft s: first spawn → last subnet.env written (file mtime)",
        "baseline s: the same count of `deno run main.ts version` (start + load weft's modules), same waves",
        "lease p50/p99: per agent, its spawn → its subnet.env; wave s: each wave, first spawn → last subnet.env",
        "RSS/PSS/CPU read from /proc once all agents converged (CPU = user+sys since spawn, summed)",
      ],
    );
  }
} catch (e) {
  report.problem(`aborted: ${(e as Error).stack ?? e}`);
} finally {
  await etcd?.cleanup();
  for (const d of [...tempDirs]) await removeDir(d);
  const path = await report.write();
  console.log(
    `\nresults: ${path} (${Math.round((Date.now() - report.startedAt.getTime()) / 1000)} s)`,
  );
}
