/**
 * Doctor and peer-health benchmark (root; builds its own namespaces with test/kit/cluster.ts).
 * A 4-host vxlan cluster on a Deno KV registry that also holds `--peers` − 3 synthetic peer
 * leases (subnets /28 in 198.19.0.0/16, public IPs from 198.18.128.1 on, routed in every host
 * namespace to a veth without ARP whose other end drops them, as on the way to a dead host). So
 * h1 has `--peers` peers (default 1000), all programmed in its kernel: 3 real ones (h2..h4) that
 * answer, the rest that never do.
 *
 * 1. doctor — `weft doctor` on h1 with the agent's flags, `--doctor-runs` times: wall time from
 *    spawn to exit (deno start-up included, what an operator waits), its exit code and counts.
 *    Goal ≤ 10 s.
 * 2. probing CPU — h1's agent probes at the default interval (30 s, cap 256 a round) while h2's
 *    has probing off (`--peer-probe-interval 0`), both with the same peers, over the same
 *    `--window-s` window: user+sys CPU of each (/proc/<pid>/stat), the difference as % of one
 *    core, and per round and per peer probed (from h1's weft_peer_probe_rounds_total and
 *    weft_peer_probes_total). Goal ≤ 1 % of a core.
 *
 * @example
 * ```sh
 * sudo deno run -A bench/doctor.ts                    # 1000 peers, 3 doctor runs, 120 s window
 * sudo deno run -A bench/doctor.ts --window-s 60 --doctor-runs 1
 * ```
 */
import { parseArgs } from "node:util";
import { type Cluster, withCluster } from "../test/kit/cluster.ts";
import { openKvRegistry } from "../src/registry/kv/mod.ts";
import { waitFor } from "../test/kit/proc.ts";
import { type Cell, median, Report, round } from "./lib/report.ts";
import { Deadline, load1, procCpuSeconds, sleep } from "./lib/sys.ts";
import { leasePlan } from "./lib/leases.ts";
import { writeLeases } from "./lib/lease_writer.ts";

const USAGE = `Usage: deno run -A bench/doctor.ts [--peers 1000] [--window-s 120]
  [--doctor-runs 3] [--deadline-min 20]`;

const { values: opt } = parseArgs({
  args: Deno.args,
  options: {
    peers: { type: "string", default: "1000" },
    "window-s": { type: "string", default: "120" },
    "doctor-runs": { type: "string", default: "3" },
    "deadline-min": { type: "string", default: "20" },
    help: { type: "boolean", default: false },
  },
});
if (opt.help) {
  console.log(USAGE);
  Deno.exit(0);
}
const PEERS = Number(opt.peers);
const WINDOW_S = Number(opt["window-s"]);
const DOCTOR_RUNS = Number(opt["doctor-runs"]);
if (!(PEERS >= 4 && PEERS <= 4000) || !(WINDOW_S >= 10) || !(DOCTOR_RUNS >= 1)) {
  console.error(`bad flags: --peers 4..4000, --window-s ≥ 10, --doctor-runs ≥ 1\n${USAGE}`);
  Deno.exit(2);
}
const deadline = new Deadline(Number(opt["deadline-min"]) * 60_000);
const report = new Report("doctor", { peers: PEERS, windowS: WINDOW_S, doctorRuns: DOCTOR_RUNS });

const HEALTHZ = 9475;
const SUBNET_LEN = 28;
const DEAD_ROUTE = "198.18.128.0/17";
const NET = { SubnetLen: SUBNET_LEN };

/** The agent flags h1 runs with (doctor gets the same). */
function agentFlags(c: Cluster, host: string): string[] {
  return c.hostFlags(host, HEALTHZ);
}

/** Writes the config and the synthetic peers into the cluster's KV file before any agent runs. */
async function seed(c: Cluster): Promise<void> {
  const reg = await openKvRegistry({ path: c.kvPath! });
  try {
    await reg.putConfig(
      JSON.stringify({ Network: c.network, SubnetLen: SUBNET_LEN, Backend: { Type: "vxlan" } }),
    );
    const plan = leasePlan({
      count: PEERS - 3,
      firstSubnet: 64,
      subnetLen: SUBNET_LEN,
      publicBase: "198.18.128.1",
      backend: "vxlan",
    });
    const w = await writeLeases(reg, plan, { intervalMs: 0, ttlSeconds: 7200, concurrency: 8 });
    const bad = w.filter((x) => !x.ok);
    if (bad.length) throw new Error(`writing ${bad.length} leases failed: ${bad[0].error}`);
  } finally {
    await reg.close();
  }
  // Packets to the synthetic peers leave by a veth without ARP whose other end holds no address,
  // and vanish there as on the way to a dead host.
  for (const h of c.hosts) {
    await c.exec(h, ["ip", "link", "add", "dead0", "type", "veth", "peer", "name", "dead1"]);
    await c.exec(h, ["ip", "link", "set", "dead0", "arp", "off", "up"]);
    await c.exec(h, ["ip", "link", "set", "dead1", "up"]);
    await c.exec(h, ["ip", "route", "add", DEAD_ROUTE, "dev", "dead0"]);
  }
}

/** Routes via flannel.1 in `host`'s main table. */
async function vxlanRoutes(c: Cluster, host: string): Promise<number> {
  const out = await c.exec(host, ["ip", "route", "show", "dev", "flannel.1"]);
  return out.split("\n").filter((l) => l.trim()).length;
}

/** A counter's value in h1's /metrics. */
async function counter(c: Cluster, name: string): Promise<number> {
  const { body } = await c.host("h1").agent!.readyzText("/metrics");
  const m = new RegExp(`^${name} (\\S+)$`, "m").exec(body);
  return m ? Number(m[1]) : 0;
}

async function doctorPhase(c: Cluster): Promise<void> {
  const rows: Cell[][] = [];
  const walls: number[] = [];
  for (let i = 0; i < DOCTOR_RUNS; i++) {
    deadline.check(`doctor run ${i + 1}`);
    const t = performance.now();
    const r = await c.weft("h1", ["doctor", ...agentFlags(c, "h1")], { timeoutMs: 120_000 });
    const wall = (performance.now() - t) / 1000;
    walls.push(wall);
    const sum = /(\d+) ok, (\d+) warn, (\d+) fail/.exec(r.stdout);
    const overlayOk = r.stdout.split("\n").filter((l) => l.startsWith("ok   probe.overlay")).length;
    if (!sum) report.problem(`doctor run ${i + 1}: no summary line:\n${r.stdout}${r.stderr}`);
    const n = (k: number) => sum ? Number(sum[k]) : null;
    rows.push([i + 1, wall, r.code, n(1), n(2), n(3), overlayOk, load1()]);
    report.data[`doctorRun${i + 1}`] = { wall, code: r.code, tail: r.stdout.slice(-2000) };
  }
  const med = median(walls);
  rows.push([
    "median",
    med,
    null,
    null,
    null,
    null,
    null,
    med !== null && med <= 10 ? "goal ≤ 10 s met" : "goal ≤ 10 s MISSED",
  ]);
  report.section(
    `weft doctor on a node with ${PEERS} peers (3 answer)`,
    ["run", "wall s", "exit", "ok", "warn", "fail", "peers answering", "load1 / goal"],
    rows,
    [
      "wall: spawn → exit of `weft doctor` (deno start-up, registry list, kernel read, checks, " +
      "probes: at most 512 peers at once, 3 echoes, 1 s timeout each, then 2 underlay echoes and, at once, 2 in VXLAN frames sent to the peer's UDP port)",
      `exit 1 expected: the ${PEERS - 3} synthetic peers never answer (each one fail line)`,
    ],
  );
}

async function cpuPhase(c: Cluster): Promise<void> {
  deadline.check("the probing CPU window");
  const on = c.host("h1").agent!;
  const off = c.host("h2").agent!;
  // Start after h1's first round (its first comes within one interval of its start).
  await waitFor(
    "h1's first probe round",
    async () => await counter(c, "weft_peer_probe_rounds_total") > 0 || undefined,
    {
      timeoutMs: 45_000,
      intervalMs: 500,
    },
  );
  const r0 = await counter(c, "weft_peer_probe_rounds_total");
  const p0 = await counter(c, "weft_peer_probes_total");
  const t0 = performance.now();
  const on0 = procCpuSeconds(on.pid)!;
  const off0 = procCpuSeconds(off.pid)!;
  const loads = [load1()];
  for (let s = 0; s < WINDOW_S; s += 10) {
    await sleep(Math.min(10, WINDOW_S - s) * 1000);
    loads.push(load1());
  }
  const on1 = procCpuSeconds(on.pid);
  const off1 = procCpuSeconds(off.pid);
  const window = (performance.now() - t0) / 1000;
  const rounds = await counter(c, "weft_peer_probe_rounds_total") - r0;
  const probes = await counter(c, "weft_peer_probes_total") - p0;
  if (on1 === null || off1 === null) throw new Error("an agent exited during the CPU window");
  const cpuOn = on1 - on0;
  const cpuOff = off1 - off0;
  const diff = cpuOn - cpuOff;
  const pct = diff / window * 100;
  report.data.cpu = { window, cpuOn, cpuOff, rounds, probes, loads };
  report.section(
    `agent CPU with peer probing on vs off, ${PEERS} peers, same ${round(window)} s window`,
    ["agent", "probing", "rounds", "peers probed", "CPU s", "% of a core"],
    [
      ["h1", "every 30 s, ≤ 256 a round", rounds, probes, cpuOn, cpuOn / window * 100],
      ["h2", "off", 0, 0, cpuOff, cpuOff / window * 100],
      [
        "probing",
        pct <= 1 ? "goal ≤ 1 % met" : "goal ≤ 1 % MISSED",
        rounds,
        probes,
        diff,
        pct,
      ],
    ],
    [
      "CPU: user+sys seconds from /proc/<pid>/stat (10 ms ticks) over the window; probing = h1 − h2",
      `per round: ${
        rounds ? round(diff / rounds * 1000) : "-"
      } ms CPU; per peer probed (3 echoes): ${
        probes ? round(diff / probes * 1e6) : "-"
      } µs; 1000 peers are all probed every ${Math.ceil(PEERS / 256)} rounds`,
      `load1 during the window: ${loads.join(", ")}`,
    ],
  );
}

let exitCode = 0;
try {
  console.log(`weft doctor benchmark: ${PEERS} peers, load ${load1()}`);
  await withCluster({ hosts: 4, registry: "kv" }, async (c) => {
    console.log(`cluster ${c.runId} in ${c.dir}`);
    report.data.runId = c.runId;
    await seed(c);
    const base = { netConfig: NET, healthzPort: HEALTHZ };
    c.startAgent("h1", { ...base, extraArgs: ["--peer-probe-interval", "30"] });
    for (const h of ["h2", "h3", "h4"]) {
      c.startAgent(h, { ...base, extraArgs: ["--peer-probe-interval", "0"] });
    }
    await Promise.all(c.hosts.map((h) => h.agent!.waitReady(120_000)));
    for (const h of ["h1", "h2"]) {
      await waitFor(
        `${h} to program ${PEERS} peers`,
        async () => await vxlanRoutes(c, h) >= PEERS || undefined,
        { timeoutMs: 120_000, intervalMs: 500 },
      );
    }
    console.log(`# ${PEERS} peers programmed on h1 and h2`);
    await doctorPhase(c);
    await cpuPhase(c);
  });
} catch (e) {
  report.problem(`run failed: ${(e as Error).stack ?? e}`);
  exitCode = 1;
}
console.log(`\nresults: ${await report.write()}`);
Deno.exit(exitCode);
