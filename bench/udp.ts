/**
 * The udp backend's speed next to kernel vxlan (root; builds its own namespaces with
 * test/kit/cluster.ts). One run, the SAME namespaces for all: a 2-host cluster (plus the
 * registry host), one pod on h1 and one on h2, measured with the udp backend as it ships (TUN
 * offloads on); then the agents are stopped, `weft cleanup` runs in each host namespace,
 * `weft config set` stores the next config (run inside h1's namespace: the underlay exists only
 * there), the agents start again, keep their subnets, pods get the new FLANNEL_MTU, and
 * everything is measured again: `udp-plain` (Backend.TunOffload false: the baseline of the
 * offload change) and kernel vxlan (the reference of the goals). Traffic is pod p1 (h1) → pod
 * p2 (h2); one `iperf3 -s` in p2 per phase.
 *
 * 1. TCP throughput — iperf3, 1 and 4 streams (`--streams`), `--seconds` each after a 1 s
 *    omitted warm-up, `--reps` repetitions, median; ratio udp/vxlan (goal ≥ 0.11).
 * 2. small packets — iperf3 UDP with `--payload`-byte datagrams at fixed offered rates
 *    (`--rates`, pps): sent and delivered pps, loss %, and where the loss happened (TUN queue,
 *    host socket buffers, or the receiving pod's own socket) (goal: no loss at 50 kpps).
 *    `--pod-sockbuf 2M` gives iperf3's sockets that buffer (iperf3 -w, for every backend): on 2
 *    cores the receiving iperf3 is often off the CPU long enough to overflow its default buffer,
 *    which is loss of the test program, not of the datapath.
 * 3. latency — `--pings` echoes `--ping-interval` s apart (every hop starts idle), and as many
 *    back to back (ping -A): avg/p50/p99/max, loss (goal for udp: < 0.15 ms, no loss).
 * 4. CPU per packet, from each fixed-rate run: the agents' CPU (utime+stime of the deno
 *    processes on h1 and h2, /proc/<pid>/stat) ÷ delivered packets, and each packet Worker
 *    thread's ÷ the packets it forwarded; iperf3's own CPU (its getrusage accounting) ÷
 *    packets; and machine-wide busy and softirq CPU (/proc/stat) over the run minus the rate of
 *    the quieter of two idle windows (`--baseline-seconds`, before and after), ÷ packets. The
 *    machine-wide figure is the only one that sees kernel vxlan's softirq work, and it also sees
 *    anything else the machine runs: it is left out ('-') when the idle window was not idle.
 *
 * A last table says what bounded each udp-backend run, from counters kept per run: each Worker
 * thread's CPU (% of a core) and wake-ups, all CPUs' busy share and runnable threads, flannel0
 * TX drops (TUN queue), the namespaces' UDP RcvbufErrors/SndbufErrors (socket buffers), the
 * receiving pod's RcvbufErrors, and the forwarder's drop counters (/metrics).
 *
 * Prints tables and writes bench/results/udp-<timestamp>.json (every sample, per-run windows,
 * machine context). Bounded: `--deadline-s` (default 420) for the whole run; a measurement that
 * would not fit is skipped and listed as a problem; every command has its own timeout. Only
 * 198.18.0.0/15 addresses, only namespaces this run creates; the harness removes all of them
 * (and this file kills its iperf3 servers) at the end, on failure and on Ctrl-C. Share of the
 * machine matters: run it on an otherwise idle machine, and read the figures with the load in
 * the JSON.
 *
 * @example
 * ```sh
 * sudo deno run -A bench/udp.ts                                   # defaults, ~2.5 min
 * sudo deno run -A bench/udp.ts --reps 1 --seconds 3 --skip pps   # quick look
 * sudo deno run -A bench/udp.ts --backends udp --skip pps,ping    # A/B a forwarder change
 * sudo deno run -A bench/udp.ts --registry etcd --rates 25000,50000,100000,200000
 * ```
 */
import { parseArgs } from "node:util";
import { type Cluster, type Host, type Pod, withCluster } from "../test/kit/cluster.ts";
import { CLUSTER_NETWORK } from "../test/kit/names.ts";
import { runOk } from "../test/kit/proc.ts";
import { formatCidr } from "../src/base/ipv4.ts";
import { type Cell, median, percentile, ratio, Report } from "./lib/report.ts";
import { load1, sleep } from "./lib/sys.ts";
import { coldPathProbe } from "./lib/cold_path.ts";
import {
  countersDelta,
  type CpuDelta,
  cpuDelta,
  IperfServer,
  iperfTcp,
  iperfUdp,
  killChildrenSync,
  metricByLabel,
  metricSum,
  type NsCounters,
  nsCounters,
  type PingSeries,
  pingSeries,
  procCpu,
  runnable,
  scrapeMetrics,
  type SystemCpu,
  systemCpu,
  systemDelta,
  type TcpResult,
  type UdpResult,
} from "./udp/probes.ts";

const { values: opt } = parseArgs({
  args: Deno.args,
  options: {
    registry: { type: "string", default: "kv" },
    backends: { type: "string", default: "udp,udp-plain,vxlan" },
    seconds: { type: "string", default: "5" },
    reps: { type: "string", default: "3" },
    streams: { type: "string", default: "1,4" },
    rates: { type: "string", default: "25000,50000,100000" },
    "pps-seconds": { type: "string", default: "5" },
    payload: { type: "string", default: "64" },
    "pod-sockbuf": { type: "string", default: "" },
    pings: { type: "string", default: "200" },
    "ping-interval": { type: "string", default: "0.01" },
    "baseline-seconds": { type: "string", default: "2" },
    skip: { type: "string", default: "" },
    "deadline-s": { type: "string", default: "420" },
    help: { type: "boolean", default: false },
  },
});
if (opt.help) {
  console.log(`Usage: deno run -A bench/udp.ts [--registry kv|etcd] [--backends udp,udp-plain,vxlan]
  [--seconds 5] [--reps 3] [--streams 1,4] [--rates 25000,50000,100000] [--pps-seconds 5]
  [--payload 64] [--pod-sockbuf 2M] [--pings 200] [--ping-interval 0.01] [--baseline-seconds 2]
  [--skip tcp,pps,ping,cpu] [--deadline-s 420]`);
  Deno.exit(0);
}

/** A positive number option, or exit 2 naming the flag. */
function num(name: string, v: string, int = true): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0 || (int && !Number.isInteger(n))) {
    console.error(
      `bench/udp.ts: --${name} ${v}: expected a positive ${int ? "integer" : "number"}`,
    );
    Deno.exit(2);
  }
  return n;
}
const list = (name: string, v: string) => v.split(",").filter(Boolean).map((x) => num(name, x));

if (Deno.uid() !== 0) {
  console.error("bench/udp.ts needs root (it creates network namespaces)");
  Deno.exit(2);
}
/**
 * The backends a run can measure, as network config Backend objects: the udp backend as it
 * ships (TUN offloads on), the same without TUN offloads (the same-run baseline of that
 * change), and kernel vxlan (the reference of the issue's goals).
 */
const BACKEND_CONFIGS: Record<string, Record<string, unknown>> = {
  udp: { Type: "udp" },
  "udp-plain": { Type: "udp", TunOffload: false },
  vxlan: { Type: "vxlan" },
};
const registry = opt.registry as "kv" | "etcd";
if (registry !== "kv" && registry !== "etcd") {
  console.error(`bench/udp.ts: --registry ${opt.registry}: expected kv or etcd`);
  Deno.exit(2);
}
const backends = opt.backends.split(",").filter(Boolean);
for (const b of backends) {
  if (!(b in BACKEND_CONFIGS)) {
    console.error(
      `bench/udp.ts: --backends: "${b}" is not one of ${Object.keys(BACKEND_CONFIGS).join(", ")}`,
    );
    Deno.exit(2);
  }
}
const P = {
  /** iperf3 -w for the fixed-rate runs ("" = iperf3's default socket buffers). */
  podSockBuf: opt["pod-sockbuf"],
  seconds: num("seconds", opt.seconds),
  reps: num("reps", opt.reps),
  streams: list("streams", opt.streams),
  rates: list("rates", opt.rates),
  ppsSeconds: num("pps-seconds", opt["pps-seconds"]),
  payload: num("payload", opt.payload),
  pings: num("pings", opt.pings),
  pingInterval: num("ping-interval", opt["ping-interval"], false),
  baselineSeconds: num("baseline-seconds", opt["baseline-seconds"], false),
  deadlineS: num("deadline-s", opt["deadline-s"]),
};
const skip = new Set(opt.skip.split(",").filter(Boolean));

const started = Date.now();
const deadline = started + P.deadlineS * 1000;
const HEALTHZ = 8472;
const IPERF_PORT = 5201;
const report = new Report("udp", { registry, backends, ...P, skip: [...skip] });

// iperf3 servers outlive a killed deno unless killed: on Ctrl-C (before the harness's own handler
// exits the process, which is registered later) and on exit.
const onSignal = () => {
  killChildrenSync();
  setTimeout(() => Deno.exit(130), 0);
};
Deno.addSignalListener("SIGINT", onSignal);
Deno.addSignalListener("SIGTERM", onSignal);
globalThis.addEventListener("unload", killChildrenSync);

/** True when `needS` more seconds fit before the deadline (else the step is skipped, noted). */
function fits(what: string, needS: number): boolean {
  if (Date.now() + needS * 1000 <= deadline) return true;
  report.problem(`skipped ${what}: it would not finish before the ${P.deadlineS} s deadline`);
  return false;
}

/** Other iperf3 processes on the machine (another benchmark would share the CPUs with ours). */
function foreignIperfs(ours: Set<number>): number {
  let n = 0;
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name) || ours.has(Number(e.name))) continue;
    try {
      if (Deno.readTextFileSync(`/proc/${e.name}/comm`).trim() === "iperf3") n++;
    } catch { /* exited */ }
  }
  return n;
}

// ---- one measured window: agent CPU, counters and metrics around a traffic run ----

interface Window {
  wallS: number;
  agentCpu: { sender: CpuDelta | null; receiver: CpuDelta | null };
  system: SystemCpu;
  /** Drop counters: sender and receiver host namespaces, and the receiving pod's (iperf3's socket). */
  counters: { sender: NsCounters; receiver: NsCounters; pod: NsCounters };
  /** Forwarder counters (udp backend only; 0 for vxlan). */
  fwd: { txPackets: number; rxPackets: number; drops: Record<string, number> };
  load1: number;
  /** Runnable threads machine-wide, sampled at the start and the end of the window. */
  runnable: number[];
}

interface Rig {
  c: Cluster;
  h1: Host;
  h2: Host;
  p1: Pod;
  p2: Pod;
}

function device(backend: string): string {
  return backend.startsWith("udp") ? "flannel0" : "flannel.1";
}

async function measured<T>(r: Rig, backend: string, fn: () => Promise<T>) {
  const { c, h1, h2, p2 } = r;
  const dev = device(backend);
  const [m1a, m2a, n1a, n2a, npa] = await Promise.all([
    scrapeMetrics(c, h1, HEALTHZ),
    scrapeMetrics(c, h2, HEALTHZ),
    nsCounters(c, h1, dev),
    nsCounters(c, h2, dev),
    nsCounters(c, p2, "eth0"),
  ]);
  const run0 = runnable();
  const s0 = systemCpu();
  const a1 = procCpu(h1.agent!.pid), a2 = procCpu(h2.agent!.pid);
  const t0 = performance.now();
  const result = await fn();
  const wallS = (performance.now() - t0) / 1000;
  const b1 = procCpu(h1.agent!.pid), b2 = procCpu(h2.agent!.pid);
  const s1 = systemCpu();
  const run1 = runnable();
  const [m1b, m2b, n1b, n2b, npb] = await Promise.all([
    scrapeMetrics(c, h1, HEALTHZ),
    scrapeMetrics(c, h2, HEALTHZ),
    nsCounters(c, h1, dev),
    nsCounters(c, h2, dev),
    nsCounters(c, p2, "eth0"),
  ]);
  const drops: Record<string, number> = {};
  for (const [m0, m1, who] of [[m1a, m1b, "h1"], [m2a, m2b, "h2"]]) {
    const before = metricByLabel(m0, "weft_udp_dropped_packets_total");
    for (const [k, v] of Object.entries(metricByLabel(m1, "weft_udp_dropped_packets_total"))) {
      const d = v - (before[k] ?? 0);
      if (d > 0) drops[`${who} ${k.replace(/^reason="(.*)"$/, "$1")}`] = d;
    }
  }
  const w: Window = {
    wallS,
    agentCpu: { sender: cpuDelta(a1, b1), receiver: cpuDelta(a2, b2) },
    system: systemDelta(s0, s1),
    counters: {
      sender: countersDelta(n1a, n1b),
      receiver: countersDelta(n2a, n2b),
      pod: countersDelta(npa, npb),
    },
    fwd: {
      txPackets: metricSum(m1b, "weft_udp_tx_packets_total") -
        metricSum(m1a, "weft_udp_tx_packets_total"),
      rxPackets: metricSum(m2b, "weft_udp_rx_packets_total") -
        metricSum(m2a, "weft_udp_rx_packets_total"),
      drops,
    },
    load1: load1(),
    runnable: [run0, run1],
  };
  return { result, w };
}

// ---- the measurements of one backend ----

interface TcpRun extends TcpResult {
  backend: string;
  streams: number;
  rep: number;
  window: Window;
}
interface UdpRun extends UdpResult {
  backend: string;
  /**
   * Machine-wide CPU rate (CPU-seconds per second) without our traffic: the quieter of two idle
   * windows, just before and just after the run (other work on the machine comes and goes).
   */
  idleBusyRate: number;
  idleSoftirqRate: number;
  /** Share of all CPUs idle in that window (near 0: the machine is saturated by other work). */
  idleShare: number;
  window: Window;
}
interface PingRun extends PingSeries {
  backend: string;
  /** "interval": --ping-interval apart; "back-to-back": ping -A, the path never idles. */
  mode: "interval" | "back-to-back";
}
interface PhaseResult {
  backend: string;
  mtu: number;
  tcp: TcpRun[];
  udp: UdpRun[];
  ping: PingRun[];
  foreignIperf3: number;
  load1: number;
}

/** Measures one backend into `out` (already listed, so a failure keeps what was measured). */
async function measureBackend(r: Rig, out: PhaseResult): Promise<void> {
  const { c, p1, p2 } = r;
  const { backend, mtu } = out;
  console.log(`\n# ${backend}: measuring p1@h1 → p2@h2 (pod MTU ${mtu})`);
  const srv = await IperfServer.start(c, p2, IPERF_PORT, `${c.dir}/iperf3-${backend}.log`);
  try {
    out.foreignIperf3 = foreignIperfs(new Set([srv.proc.pid]));
    if (out.foreignIperf3 > 0) {
      report.problem(
        `${backend}: ${out.foreignIperf3} other iperf3 process(es) run on this machine; ` +
          `figures share the CPUs with them`,
      );
    }
    if (!skip.has("ping") && fits(`${backend} ping`, P.pings * P.pingInterval + 10)) {
      // Warm-up echoes (not counted): neighbour entries, the workers' JIT, the socket paths.
      await pingSeries(c, p1, p2.ip, { count: 10, intervalS: P.pingInterval });
      for (const mode of ["interval", "back-to-back"] as const) {
        const s = await pingSeries(c, p1, p2.ip, {
          count: P.pings,
          intervalS: P.pingInterval,
          adaptive: mode === "back-to-back",
        });
        out.ping.push({ backend, mode, ...s });
        console.log(
          `  ping ${mode}: ${s.received}/${s.sent}, p50 ${percentile(s.rttMs, 50)} ms, ` +
            `p99 ${percentile(s.rttMs, 99)} ms`,
        );
      }
    }
    if (!skip.has("tcp")) {
      for (let rep = 1; rep <= P.reps; rep++) {
        for (const streams of P.streams) {
          if (!fits(`${backend} TCP ${streams}x rep ${rep}`, P.seconds + 8)) continue;
          const { result, w } = await measured(
            r,
            backend,
            () => iperfTcp(c, p1, p2.ip, IPERF_PORT, { seconds: P.seconds, streams }),
          );
          out.tcp.push({ backend, streams, rep, ...result, window: w });
          console.log(
            `  TCP ${streams}x rep ${rep}: ${(result.bps / 1e9).toFixed(3)} Gbit/s, ` +
              `retrans ${result.retransmits}, workers h1 ${pcts(w.agentCpu.sender, w.wallS)} ` +
              `h2 ${pcts(w.agentCpu.receiver, w.wallS)}`,
          );
        }
      }
    }
    if (!skip.has("pps")) {
      for (const pps of P.rates) {
        const need = P.ppsSeconds + 2 * P.baselineSeconds + 8;
        if (!fits(`${backend} UDP ${pps} pps`, need)) continue;
        const before = await idleWindow();
        const { result, w } = await measured(
          r,
          backend,
          () =>
            iperfUdp(c, p1, p2.ip, IPERF_PORT, {
              seconds: P.ppsSeconds,
              pps,
              payload: P.payload,
              window: P.podSockBuf || undefined,
            }),
        );
        const after = await idleWindow();
        const idle = before.busy <= after.busy ? before : after;
        out.udp.push({
          backend,
          ...result,
          idleBusyRate: idle.busy / P.baselineSeconds,
          idleSoftirqRate: idle.softirq / P.baselineSeconds,
          idleShare: idle.idle / (idle.busy + idle.idle || 1),
          window: w,
        });
        console.log(
          `  UDP ${pps} pps: sent ${Math.round(result.sentPps)}, delivered ${
            Math.round(result.deliveredPps)
          }, loss ${result.lossPct.toFixed(3)}%, workers h1 ${
            pcts(w.agentCpu.sender, w.wallS)
          } h2 ${pcts(w.agentCpu.receiver, w.wallS)}`,
        );
      }
    }
  } finally {
    await srv.stop();
  }
}

/** Machine-wide CPU over --baseline-seconds without our traffic: what other work burns. */
async function idleWindow(): Promise<SystemCpu> {
  const a = systemCpu();
  await sleep(P.baselineSeconds * 1000);
  return systemDelta(a, systemCpu());
}

function pcts(d: CpuDelta | null, wallS: number): string {
  if (!d || d.workers.length === 0) return "-";
  return d.workers.map((x) => `${Math.round((100 * x) / wallS)}%`).join("/");
}

// ---- switching the same hosts to another backend ----

function registryArgs(c: Cluster): string[] {
  return c.opts.registry === "etcd"
    ? ["--registry", "etcd", "--etcd-endpoints", c.etcd!.endpoint, "--etcd-prefix", c.etcdPrefix]
    : ["--registry", "kv", "--kv-path", c.kvPath!];
}

function agentOptions(backend: string) {
  // Inside harness hosts iptables rules would be allowed; off, so both backends run the same
  // (empty) FORWARD chain and no xtables lock is taken during measurements.
  const cfg = BACKEND_CONFIGS[backend];
  return {
    backend: cfg.Type as string,
    netConfig: { Backend: cfg },
    healthzPort: HEALTHZ,
    extraArgs: ["--iptables-forward-rules=false"],
  };
}

/** Stops the agents, cleans up, stores `backend`'s config, restarts; returns the new MTU. */
async function switchBackend(r: Rig, backend: string): Promise<number> {
  const { c } = r;
  const t0 = performance.now();
  const before = await Promise.all(c.hosts.map((h) => c.readSubnetEnv(h)));
  await Promise.all(c.hosts.map((h) => h.agent!.stop("SIGTERM")));
  for (const h of c.hosts) {
    await c.weftOk(h, [
      "cleanup",
      ...registryArgs(c),
      "--iface",
      "eth0",
      "--subnet-file",
      h.subnetFile,
    ], { timeoutMs: 30_000 });
    const left = await c.exec(h, ["ip", "-br", "link", "show"]);
    if (/^flannel/m.test(left)) {
      throw new Error(`weft cleanup left a flannel device on ${h.name}:\n${left}`);
    }
  }
  // The same JSON the harness writes for --net-config-path, so the agents find it unchanged.
  const cfgFile = `${c.dir}/net-config-${backend}.json`;
  await Deno.writeTextFile(
    cfgFile,
    JSON.stringify({ Network: CLUSTER_NETWORK, Backend: BACKEND_CONFIGS[backend] }),
  );
  await c.weftOk(c.hosts[0], ["config", "set", cfgFile, ...registryArgs(c)], { timeoutMs: 30_000 });
  const envs = await Promise.all(
    c.hosts.map((h) => c.startAgent(h, agentOptions(backend)).waitReady()),
  );
  for (const [i, h] of c.hosts.entries()) {
    const was = before[i] ? formatCidr(before[i]!.subnet) : "?";
    const now = formatCidr(envs[i].subnet);
    if (was !== now) {
      throw new Error(
        `${h.name} leased ${now} after the switch to ${backend}, not its old ${was}; the pods ` +
          `were wired for the old subnet, so the comparison would not be on the same setup`,
      );
    }
  }
  // The pods keep their namespaces and addresses; only the MTU follows the new backend.
  for (const [i, h] of c.hosts.entries()) {
    const mtu = String(envs[i].mtu);
    for (const p of h.pods) {
      await runOk(["ip", "-n", p.netns, "link", "set", "eth0", "mtu", mtu]);
      await runOk(["ip", "-n", h.netns, "link", "set", p.hostVeth, "mtu", mtu]);
      p.mtu = envs[i].mtu;
    }
    await runOk(["ip", "-n", h.netns, "link", "set", "cni0", "mtu", mtu]);
  }
  // Bounded wait for the datapath (peers' leases are rewritten as each agent starts).
  const end = Date.now() + 20_000;
  for (;;) {
    const p = await c.ping(r.p1, r.p2.ip, { count: 1, timeoutS: 1 });
    if (p.received === 1) break;
    if (Date.now() > end) throw new Error(`p1 cannot reach p2 20 s after switching to ${backend}`);
  }
  console.log(
    `\n# switched to ${backend} in ${((performance.now() - t0) / 1000).toFixed(1)} s ` +
      `(same subnets: ${envs.map((e) => formatCidr(e.subnet)).join(", ")})`,
  );
  return envs[0].mtu;
}

// ---- tables ----

const gbit = (bps: number | null) => bps == null ? null : bps / 1e9;
const med = (xs: (number | null | undefined)[]) =>
  median(xs.filter((x): x is number => x != null && Number.isFinite(x)));
const perPkt = (cpuS: number | null | undefined, pkts: number) =>
  cpuS == null || pkts <= 0 ? null : (cpuS * 1e6) / pkts;
/** Worker `i`'s CPU in the window as % of one core. */
const wkrPct = (d: CpuDelta | null, i: number, wallS: number) =>
  d && d.workers[i] != null ? (100 * d.workers[i]) / wallS : null;
/** "tx/rx" worker percentages of one side, medians over runs. */
function wkrPair(runs: { window: Window }[], side: "sender" | "receiver"): string {
  const f = (i: number) => med(runs.map((t) => wkrPct(t.window.agentCpu[side], i, t.window.wallS)));
  const tx = f(0), rx = f(1);
  return tx == null || rx == null ? "-" : `${Math.round(tx)}/${Math.round(rx)}`;
}
const avgOf = (xs: number[]) => xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null;
/** Packets per wake-up of worker `i` (packets it handled ÷ its sleeps in poll). */
const perWake = (pkts: number, d: CpuDelta | null, i: number) =>
  d && d.workerSleeps[i] > 0 ? pkts / d.workerSleeps[i] : null;
/** Below this share of idle CPU in the idle window, machine-wide CPU per packet means nothing. */
const SATURATED = 0.1;
const CPUS = navigator.hardwareConcurrency;

/**
 * What limited each udp-backend measurement, read off the counters of its window: a Worker
 * thread near a full core, the TUN queue or a socket buffer overflowing, the receiving pod's
 * own socket, or all CPUs busy (then every thread, ours and iperf3's, waits for a CPU).
 */
function bound(w: Window, lostInPod = 0, idleShare: number | null = null): string {
  const why: string[] = [];
  const busy = w.system.busy / (w.wallS * CPUS);
  const threads: [string, number | null][] = [
    ["h1 tx worker", wkrPct(w.agentCpu.sender, 0, w.wallS)],
    ["h1 rx worker", wkrPct(w.agentCpu.sender, 1, w.wallS)],
    ["h2 tx worker", wkrPct(w.agentCpu.receiver, 0, w.wallS)],
    ["h2 rx worker", wkrPct(w.agentCpu.receiver, 1, w.wallS)],
  ];
  const [name, pct] = threads.reduce((a, b) => (b[1] ?? 0) > (a[1] ?? 0) ? b : a);
  if (pct != null && pct >= 90) why.push(`${name} saturated (${Math.round(pct)}% of a core)`);
  if (busy >= 0.9) {
    const agents = ((w.agentCpu.sender?.total ?? 0) + (w.agentCpu.receiver?.total ?? 0)) /
      w.wallS;
    const other = idleShare == null
      ? ""
      : `; without our traffic ${Math.round(100 * (1 - idleShare))}% were busy`;
    why.push(
      `all ${CPUS} CPUs busy (${Math.round(100 * busy)}%; the two agents used ` +
        `${agents.toFixed(2)} cores, busiest thread ${name} ${Math.round(pct ?? 0)}%${other})`,
    );
  }
  const c = w.counters;
  if (c.sender.devTxDropped > 0) why.push(`TUN queue overflow on h1 (${c.sender.devTxDropped})`);
  const sock = c.sender.udpSndbufErrors + c.receiver.udpRcvbufErrors;
  if (sock > 0) why.push(`UDP socket buffers (${sock} errors)`);
  if (lostInPod > 0) why.push(`receiving pod's socket buffer (${lostInPod} dropped)`);
  // not_ipv4 is the kernel's own IPv6 router solicitations on flannel0: no traffic of ours.
  const drops = Object.entries(w.fwd.drops).filter(([k]) => !k.includes("not_ipv4"))
    .map(([k, v]) => `${k} ${v}`);
  if (drops.length) why.push(`forwarder drops: ${drops.join(", ")}`);
  return why.length ? why.join("; ") : `nothing saturated (CPUs ${Math.round(100 * busy)}% busy)`;
}

function boundsSection(ph: PhaseResult) {
  const rows: Cell[][] = [];
  for (const s of P.streams) {
    for (const t of ph.tcp.filter((x) => x.streams === s)) {
      rows.push([`TCP ${s}x rep ${t.rep}`, gbit(t.bps), "Gbit/s", bound(t.window)]);
    }
  }
  for (const u of ph.udp) {
    rows.push([
      `UDP ${u.offeredPps} pps`,
      Math.round(u.deliveredPps),
      "pps",
      bound(u.window, u.window.counters.pod.udpRcvbufErrors, u.idleShare),
    ]);
  }
  report.section("What bounded the udp backend's figures", [
    "run",
    "result",
    "unit",
    "bound",
  ], rows);
}

function tables(phases: PhaseResult[]) {
  const tcpRows: Cell[][] = [];
  const medBps = new Map<string, number | null>();
  for (const ph of phases) {
    for (const s of P.streams) {
      const runs = ph.tcp.filter((t) => t.streams === s);
      if (runs.length === 0) continue;
      const bps = runs.map((t) => t.bps);
      medBps.set(`${ph.backend}/${s}`, med(bps));
      tcpRows.push([
        ph.backend,
        s,
        gbit(med(bps)),
        gbit(Math.min(...bps)),
        gbit(Math.max(...bps)),
        med(runs.map((t) => t.retransmits)),
        wkrPair(runs, "sender"),
        wkrPair(runs, "receiver"),
        med(runs.map((t) => t.clientCpuPct)),
        med(runs.map((t) => t.serverCpuPct)),
        runs.reduce((a, t) => a + t.window.counters.sender.devTxDropped, 0),
        runs.reduce((a, t) => a + t.window.counters.receiver.udpRcvbufErrors, 0),
        med(runs.map((t) => perWake(t.window.fwd.rxPackets, t.window.agentCpu.receiver, 1))),
        med(runs.map((t) => (100 * t.window.system.busy) / (t.window.wallS * CPUS))),
        med(runs.map((t) => Math.max(...t.window.runnable))),
      ]);
    }
  }
  const ratios = P.streams.map((s) => ratio(medBps.get(`udp/${s}`), medBps.get(`vxlan/${s}`)));
  const plainRatios = P.streams.map((s) =>
    ratio(medBps.get(`udp-plain/${s}`), medBps.get(`vxlan/${s}`))
  );
  const offloadGain = P.streams.map((s) =>
    ratio(medBps.get(`udp/${s}`), medBps.get(`udp-plain/${s}`))
  );
  const fmt3 = (v: number | null | undefined) => v == null ? "-" : v.toFixed(3);
  report.section(
    `TCP pod→pod across hosts, median of ${P.reps} × ${P.seconds} s (Gbit/s)`,
    [
      "backend",
      "streams",
      "median",
      "min",
      "max",
      "retrans",
      "h1 wkr tx/rx %",
      "h2 wkr tx/rx %",
      "iperf cli %",
      "iperf srv %",
      "dev txdrop",
      "rcvbuf err",
      "h2 rx pkt/wake",
      "machine busy %",
      "runnable",
    ],
    tcpRows,
    [
      ...P.streams.map((s, i) =>
        `udp/vxlan ${s} stream${s > 1 ? "s" : ""}: ${fmt3(ratios[i])} (goal ≥ 0.11; flannel's ` +
        `C udp ≈ 0.07); without TUN offloads (udp-plain/vxlan) ${fmt3(plainRatios[i])}; ` +
        `offload gain udp/udp-plain ${fmt3(offloadGain[i])}`
      ),
      "udp-plain: the udp backend with Backend.TunOffload false (one packet per TUN read and " +
      "write, the design before TUN offloads), measured on the same hosts in the same run",
      "wkr tx/rx %: CPU of the udp backend's packet Worker threads (TUN → UDP / UDP → TUN) in " +
      "% of one core; a thread near 100 is the bound. The syscalls charge the kernel path to " +
      "them: h2's rx write(2) carries each packet through forwarding and the bridge into the " +
      "pod's TCP, h1's rx also runs the pod's TCP sending triggered by the ACKs",
      "dev txdrop: TX drops of flannel0 / flannel.1 on h1 (TUN queue full); rcvbuf err: UDP " +
      "RcvbufErrors in h2's namespace (socket buffer); h2 rx pkt/wake: packets the receiver's rx " +
      "Worker wrote per wake-up from poll(); machine busy %: all CPUs, /proc/stat; runnable: " +
      `threads runnable machine-wide (${CPUS} CPUs; far above that, every thread waits for one)`,
    ],
  );

  const udpRows: Cell[][] = [];
  const noCpu = skip.has("cpu");
  for (const ph of phases) {
    for (const u of ph.udp) {
      const w = u.window;
      const agent = (w.agentCpu.sender?.total ?? 0) + (w.agentCpu.receiver?.total ?? 0);
      const iperfCpu = ((u.clientCpuPct + u.serverCpuPct) / 100) * u.seconds;
      // /proc/stat samples ticks: with bursty short runs (few packets per wake-up) whole seconds
      // of a window go unaccounted on this kind of VM; such a window says nothing per packet.
      const accounted = (w.system.busy + w.system.idle) / (w.wallS * CPUS);
      const sat = u.idleShare < SATURATED || accounted < 0.9;
      const busy = sat ? null : w.system.busy - u.idleBusyRate * w.wallS;
      const soft = sat ? null : w.system.softirq - u.idleSoftirqRate * w.wallS;
      const tx = w.agentCpu.sender?.workers[0], rx = w.agentCpu.receiver?.workers[1];
      udpRows.push([
        ph.backend,
        u.offeredPps,
        Math.round(u.sentPps),
        Math.round(u.deliveredPps),
        u.lossPct,
        noCpu ? null : perPkt(agent, u.delivered),
        noCpu ? null : perPkt(tx, w.fwd.txPackets),
        noCpu ? null : perPkt(rx, w.fwd.rxPackets),
        noCpu ? null : perPkt(iperfCpu, u.delivered),
        noCpu ? null : perPkt(busy, u.delivered),
        noCpu ? null : perPkt(soft, u.delivered),
        w.counters.sender.devTxDropped,
        w.counters.receiver.udpRcvbufErrors,
        w.counters.pod.udpRcvbufErrors,
        perWake(w.fwd.rxPackets, w.agentCpu.receiver, 1),
        Math.round(100 * u.idleShare),
        Math.round(100 * accounted),
      ]);
    }
  }
  report.section(
    `Small packets: UDP, ${P.payload}-byte payload, ${P.ppsSeconds} s per offered rate`,
    [
      "backend",
      "offered pps",
      "sent pps",
      "delivered pps",
      "loss %",
      "agents µs/pkt",
      "h1 tx wkr µs",
      "h2 rx wkr µs",
      "iperf3 µs/pkt",
      "machine µs/pkt",
      "softirq µs/pkt",
      "dev txdrop",
      "h2 rcvbuf",
      "pod rcvbuf",
      "h2 rx pkt/wake",
      "idle %",
      "acct %",
    ],
    udpRows,
    [
      "agents µs/pkt: utime+stime of both agent processes (deno, h1 and h2) ÷ delivered packets " +
      "(vxlan agents are idle: their figure is the control plane's background)",
      "h1 tx / h2 rx wkr µs: the sender's TUN → UDP and the receiver's UDP → TUN Worker thread ÷ " +
      "packets that thread forwarded (weft_udp_tx/rx_packets_total)",
      "iperf3 µs/pkt: client + server CPU by iperf3's own getrusage (includes the syscalls that " +
      "carry each packet through the pod's veth in the sender's context)",
      "machine / softirq µs/pkt: all CPUs' busy (softirq only) time from /proc/stat over the run " +
      "minus the rate of an idle window just before it; the only figure that sees kernel vxlan's " +
      `softirq work, but it sees all other work on the machine too: '-' when that window had ` +
      `under ${SATURATED * 100}% idle CPU (idle %: that share), or when /proc/stat accounted ` +
      "for under 90% of the run's CPU-seconds (acct %: busy + idle ÷ wall × CPUs; tick " +
      "sampling misses short bursts)",
      "pod rcvbuf: UDP RcvbufErrors in the receiving pod (iperf3 itself too slow to read: loss " +
      "that is not the datapath's); dev txdrop: flannel0 / flannel.1 TX drops on h1",
    ],
  );

  const pingRows: Cell[][] = phases.flatMap((ph) => ph.ping).map((p) => [
    p.backend,
    p.mode,
    p.sent,
    p.received,
    p.lossPct,
    avgOf(p.rttMs),
    percentile(p.rttMs, 50),
    percentile(p.rttMs, 99),
    p.rttMs.length ? Math.max(...p.rttMs) : null,
  ]);
  report.section(
    `Ping pod→pod, ${P.pings} echoes, after 10 warm-up (ms)`,
    ["backend", "mode", "sent", "recv", "loss %", "avg", "p50", "p99", "max"],
    pingRows,
    [
      `interval: ${P.pingInterval * 1000} ms apart, so every hop starts idle: the udp backend's ` +
      "4 Worker wake-ups per round trip (tx h1, rx h2, tx h2, rx h1) are in it; back-to-back: " +
      "ping -A, the next echo leaves when the reply is in, the path stays warm",
    ],
  );

  // Goals, as issue 4 states them.
  const udp = phases.find((p) => p.backend === "udp");
  const at50 = udp?.udp.find((u) => u.offeredPps === 50_000);
  const ping = udp?.ping.find((p) => p.mode === "interval");
  const warm = udp?.ping.find((p) => p.mode === "back-to-back");
  const goals: Cell[][] = [];
  for (const [i, s] of P.streams.entries()) {
    goals.push([
      `TCP ${s}x udp/vxlan ≥ 0.11`,
      ratios[i] == null ? "-" : ratios[i]!.toFixed(3),
      ratios[i] == null ? "-" : ratios[i]! >= 0.11 ? "yes" : "NO",
    ]);
  }
  if (at50) {
    const pod = at50.window.counters.pod.udpRcvbufErrors;
    const path = Math.max(0, at50.lost - pod);
    goals.push([
      `no loss at 50 kpps (udp), end to end${
        P.podSockBuf ? ` (pods' sockets: iperf3 -w ${P.podSockBuf})` : " (iperf3's default sockets)"
      }`,
      `${at50.lossPct.toFixed(3)}% of ${Math.round(at50.sentPps)} pps sent`,
      at50.lost === 0 ? "yes" : "NO",
    ]);
    goals.push([
      "… of it outside the receiving pod's socket",
      `${path} packets (${pod} were dropped by the pod's own socket buffer)`,
      path === 0 ? "yes" : "NO",
    ]);
  }
  for (const p of [ping, warm]) {
    if (!p) continue;
    const avg = avgOf(p.rttMs);
    goals.push([
      `ping < 0.15 ms, loss-free (udp, ${p.mode})`,
      `avg ${avg?.toFixed(3)} ms, p50 ${percentile(p.rttMs, 50)} ms, ${p.sent - p.received} lost`,
      avg != null && avg < 0.15 && p.received === p.sent ? "yes" : "NO",
    ]);
  }
  report.section("Goals (issue 4)", ["goal", "measured", "met"], goals);
  if (!skip.has("ping")) {
    try {
      coldSection();
    } catch (e) {
      report.problem(`cold-path probe failed: ${(e as Error).message}`);
    }
  }
  if (udp) boundsSection(udp);
  report.data.phases = phases;
  report.data.ratios = Object.fromEntries(
    P.streams.flatMap((s, i) => [
      [`tcp_${s}`, ratios[i]],
      [`tcp_${s}_plain`, plainRatios[i]],
      [`tcp_${s}_offload_gain`, offloadGain[i]],
    ]),
  );
}

/** The cold-path probe (bench/lib/cold_path.ts): what one hop costs when it starts idle. */
function coldSection() {
  const idleMs = Math.round(P.pingInterval * 1000);
  const r = coldPathProbe({ warm: 2000, cold: 100, idleMs });
  report.data.coldPath = r;
  report.section(
    `What starting idle costs here: one 84-byte loopback datagram, warm vs after ${idleMs} ms idle (µs)`,
    ["case", "samples", "send p50", "send p90", "send→recv p50", "send→recv p90"],
    [
      [
        "warm (back to back)",
        r.warm.samples,
        r.warm.sendUs.p50,
        r.warm.sendUs.p90,
        r.warm.roundUs.p50,
        r.warm.roundUs.p90,
      ],
      [
        `cold (${idleMs} ms idle first)`,
        r.cold.samples,
        r.cold.sendUs.p50,
        r.cold.sendUs.p90,
        r.cold.roundUs.p50,
        r.cold.roundUs.p90,
      ],
    ],
    [
      "measured in this benchmark's own process, root namespace loopback, sync FFI as the packet " +
      "workers call it; a udp-backend ping round trip at the interval above has 4 hops that each " +
      "start cold (a Worker woken from poll, then read/sendmmsg or recvmmsg/writev), and each hop's " +
      "syscall also carries the next namespace's receive path; kernel vxlan's round trip runs in " +
      "the sending context with no wake-up but ping's own",
    ],
  );
}

// ---- main ----

const phases: PhaseResult[] = [];
let failure: unknown = null;
try {
  await withCluster({ hosts: 2, registry, podsPerHost: 1 }, async (c) => {
    const t0 = performance.now();
    await c.startAll(agentOptions(backends[0]));
    const [h1, h2] = c.hosts;
    const rig: Rig = { c, h1, h2, p1: h1.pods[0], p2: h2.pods[0] };
    console.log(
      `cluster ${c.runId} (${registry}) up in ${((performance.now() - t0) / 1000).toFixed(1)} s; ` +
        `load ${load1()}`,
    );
    let mtu = rig.p1.mtu;
    for (const [i, backend] of backends.entries()) {
      if (i > 0) mtu = await switchBackend(rig, backend);
      const ph: PhaseResult = {
        backend,
        mtu,
        tcp: [],
        udp: [],
        ping: [],
        foreignIperf3: 0,
        load1: load1(),
      };
      phases.push(ph);
      await measureBackend(rig, ph);
    }
  });
} catch (e) {
  failure = e;
  report.problem(`run failed: ${(e as Error).stack ?? e}`);
} finally {
  Deno.removeSignalListener("SIGINT", onSignal);
  Deno.removeSignalListener("SIGTERM", onSignal);
  killChildrenSync();
}
tables(phases);
const file = await report.write();
console.log(
  `\nwrote ${file} (${((Date.now() - started) / 1000).toFixed(0)} s, load now ${load1()})`,
);
if (failure) Deno.exit(1);
