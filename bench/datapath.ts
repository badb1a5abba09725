/**
 * Kernel datapath benchmark (root; builds its own namespaces with test/kit/cluster.ts).
 * In one run, on the same namespaces (3 hosts, a registry host, one pod on h1 and one on h2):
 *
 * 1. throughput — pod-to-pod TCP (iperf3, `--iperf-seconds` per sample after a 1 s omitted
 *    warm-up) through weft's vxlan and host-gw, versus the same entries made by hand with `ip`
 *    (agents stopped, weft's entries flushed, an equivalent device/neigh/fdb/routes or host-gw
 *    routes created with `ip -batch`). Rounds alternate weft and hand-made so load drifts hit
 *    both; ratio = median weft / median hand-made, goal ≥ 0.97.
 * 2. lease → route latency — leases written straight into the registry (default 100, 50 ms
 *    apart) until the route is in the kernel of each host (`ip -ts monitor route` timestamps),
 *    and the same for deletes. Baseline: the registry's own watch seen from a host namespace.
 * 3. programming time — in a scratch namespace, weft's backend code (reconcile and apply, in a
 *    child deno process) installing and removing 1000 and 5000 peers, versus `ip -batch` (and
 *    `bridge -batch` for vxlan FDB) of the same entries; ratio goal ≤ 2. Plus end to end: a real
 *    agent started against a registry already holding N leases, until all N routes are present.
 *
 * Only 198.18.0.0/15 addresses, only namespaces this run creates (all removed at the end, also on
 * failure or Ctrl-C: the harness deletes everything carrying the run id).
 *
 * @example
 * ```sh
 * sudo deno run -A bench/datapath.ts                        # everything, etcd registry
 * sudo deno run -A bench/datapath.ts --registry kv --skip throughput --sizes 1000
 * ```
 */
import { parseArgs } from "node:util";
import { type Cluster, HARNESS_PREFIX, type Pod, withCluster } from "../test/kit/cluster.ts";
import { createNs, denoInNs } from "../test/kit/netns.ts";
import { run, runOk } from "../test/kit/proc.ts";
import { spawnLogged, stopProcess } from "../test/kit/spawn.ts";
import { openKvRegistry } from "../src/registry/kv/mod.ts";
import { formatCidr, formatIp } from "../src/base/ipv4.ts";
import { type Cell, median, ratio, Report, round, summarize } from "./lib/report.ts";
import { Deadline, load1, sleep } from "./lib/sys.ts";
import { leasePlan, type PlannedLease } from "./lib/leases.ts";
import { writeLeases, type WriteResult } from "./lib/lease_writer.ts";
import { type RawWatch, startRawWatch } from "./lib/raw_watch.ts";

const { values: opt } = parseArgs({
  args: Deno.args,
  options: {
    registry: { type: "string", default: "etcd" },
    rounds: { type: "string", default: "3" },
    "iperf-seconds": { type: "string", default: "5" },
    sizes: { type: "string", default: "1000,5000" },
    "prog-reps": { type: "string", default: "5" },
    "latency-leases": { type: "string", default: "100" },
    "latency-interval-ms": { type: "string", default: "50" },
    backends: { type: "string", default: "vxlan,host-gw" },
    skip: { type: "string", default: "" },
    "deadline-min": { type: "string", default: "25" },
    help: { type: "boolean", default: false },
  },
});
if (opt.help) {
  console.log(
    `Usage: deno run -A bench/datapath.ts [--registry etcd|kv] [--backends vxlan,host-gw]
  [--rounds 3] [--iperf-seconds 5] [--sizes 1000,5000] [--prog-reps 5]
  [--latency-leases 100] [--latency-interval-ms 50]
  [--skip throughput,latency,programming,e2e] [--deadline-min 25]`,
  );
  Deno.exit(0);
}
if (Deno.uid() !== 0) {
  console.error("bench/datapath.ts needs root (it creates network namespaces)");
  Deno.exit(2);
}
const registry = opt.registry as "etcd" | "kv";
if (registry !== "etcd" && registry !== "kv") throw new Error("--registry: etcd or kv");
const backends = opt.backends.split(",").filter(Boolean) as ("vxlan" | "host-gw")[];
const sizes = opt.sizes.split(",").filter(Boolean).map(Number);
const skip = new Set(opt.skip.split(",").filter(Boolean));
const deadline = new Deadline(Number(opt["deadline-min"]) * 60_000);
const report = new Report("datapath", { ...opt });
const REPO = new URL("../", import.meta.url).pathname;
const MAIN = `${REPO}main.ts`;
const VNI_DEV = "flannel.1";

// ---- small helpers ----

async function ipBatch(ns: string, tool: "ip" | "bridge", lines: string[]): Promise<number> {
  if (lines.length === 0) return 0;
  const t = performance.now();
  await runOk([tool, "-n", ns, "-batch", "-"], {
    stdin: lines.join("\n") + "\n",
    timeoutMs: 120_000,
  });
  return performance.now() - t;
}

async function waitUntil(what: string, ms: number, fn: () => Promise<boolean>): Promise<void> {
  const end = Date.now() + ms;
  let last: unknown = null;
  while (Date.now() < end) {
    try {
      if (await fn()) return;
    } catch (e) {
      last = e;
    }
    await sleep(100);
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}${last ? `: ${last}` : ""}`);
}

interface HostFacts {
  name: string;
  netns: string;
  ip: string;
  /** "198.19.7.0/24" */
  cidr: string;
  subnetAddr: string;
  mac: string | null;
}

async function hostFacts(c: Cluster, withMac: boolean): Promise<HostFacts[]> {
  return await Promise.all(c.hosts.map(async (h) => {
    const env = await c.readSubnetEnv(h);
    if (!env) throw new Error(`${h.name} has no subnet.env`);
    let mac: string | null = null;
    if (withMac) {
      const l = JSON.parse(await c.exec(h, ["ip", "-j", "link", "show", VNI_DEV]));
      mac = l[0].address;
    }
    return {
      name: h.name,
      netns: h.netns,
      ip: h.ip,
      cidr: formatCidr(env.subnet),
      subnetAddr: formatIp(env.subnet.ip),
      mac,
    };
  }));
}

/** Routes to the other hosts' subnets present on `h`. */
async function peerRoutesPresent(c: Cluster, h: HostFacts, all: HostFacts[]): Promise<boolean> {
  const have = new Set((await c.routes(h.name)).map((r) => r.dst));
  return all.filter((p) => p !== h).every((p) => have.has(p.cidr));
}

/** Removes weft's (or the hand-made) overlay entries from every host. */
async function flush(c: Cluster, backend: string) {
  for (const h of c.hosts) {
    if (backend === "vxlan") {
      const r = await c.run(h, ["ip", "link", "del", VNI_DEV]);
      if (r.code !== 0 && !/Cannot find device/.test(r.stderr)) {
        throw new Error(`deleting ${VNI_DEV} on ${h.name}: ${r.stderr}`);
      }
    } else {
      await c.exec(h, ["ip", "route", "flush", "root", "198.19.0.0/16", "dev", "eth0"]);
    }
  }
}

/** flannel's entries for `backend`, made by hand with `ip -batch` / `bridge -batch`. */
async function handMade(c: Cluster, backend: string, facts: HostFacts[]) {
  for (const h of facts) {
    const peers = facts.filter((p) => p !== h);
    if (backend === "vxlan") {
      await ipBatch(h.netns, "ip", [
        `link add ${VNI_DEV} address ${h.mac} mtu 1450 type vxlan id 1 local ${h.ip} dev eth0 ` +
        `dstport 8472 nolearning`,
        `link set ${VNI_DEV} up`,
        `addr add ${h.subnetAddr}/32 dev ${VNI_DEV}`,
        ...peers.map((p) =>
          `neigh replace ${p.subnetAddr} lladdr ${p.mac} dev ${VNI_DEV} nud permanent`
        ),
      ]);
      await ipBatch(
        h.netns,
        "bridge",
        peers.map((p) => `fdb replace ${p.mac} dev ${VNI_DEV} dst ${p.ip} self permanent`),
      );
      await ipBatch(
        h.netns,
        "ip",
        peers.map((p) => `route replace ${p.cidr} via ${p.subnetAddr} dev ${VNI_DEV} onlink`),
      );
    } else {
      await ipBatch(
        h.netns,
        "ip",
        peers.map((p) => `route replace ${p.cidr} via ${p.ip} dev eth0`),
      );
    }
  }
  for (const h of facts) {
    if (!await peerRoutesPresent(c, h, facts)) {
      throw new Error(`hand-made routes missing on ${h.name}`);
    }
  }
}

/**
 * What the kernel of `host` holds for the overlay, as comparable text lines: the vxlan device
 * (`ip -d -j link`, minus ifindex/stats), the routes into the cluster network except the pod
 * bridge's, and the vxlan neighbours and FDB entries. Used to show weft's entries and the
 * hand-made ones are the same, so a throughput difference cannot come from them.
 */
async function kernelState(c: Cluster, host: string, backend: string): Promise<string[]> {
  const j = async (cmd: string[]) => {
    const r = await c.run(host, cmd);
    return r.code === 0 && r.stdout.trim() ? JSON.parse(r.stdout) as Record<string, unknown>[] : [];
  };
  const out: string[] = [];
  const routes = await j(["ip", "-d", "-j", "route", "show", "root", "198.19.0.0/16"]);
  for (const r of routes.filter((r) => r.dev !== "cni0")) out.push(`route ${JSON.stringify(r)}`);
  if (backend !== "vxlan") return out.sort();
  for (const l of await j(["ip", "-d", "-j", "link", "show", VNI_DEV])) {
    for (const k of ["ifindex", "link_index", "stats64", "operstate", "flags", "qdisc"]) {
      delete l[k];
    }
    out.push(`link ${JSON.stringify(l)}`);
  }
  for (const n of await j(["ip", "-j", "neigh", "show", "dev", VNI_DEV])) {
    out.push(`neigh ${JSON.stringify(n)}`);
  }
  for (const f of await j(["bridge", "-j", "fdb", "show", "dev", VNI_DEV])) {
    if (f.dst) out.push(`fdb ${JSON.stringify(f)}`);
  }
  return out.sort();
}

/** Lines only one side has ("weft only: …", "hand only: …"); empty when identical. */
function stateDiff(weft: string[], hand: string[]): string[] {
  const w = new Set(weft);
  const h = new Set(hand);
  return [
    ...weft.filter((x) => !h.has(x)).map((x) => `weft only: ${x}`),
    ...hand.filter((x) => !w.has(x)).map((x) => `hand only: ${x}`),
  ];
}

// ---- agents ----

async function startAgents(c: Cluster, backend: string) {
  for (const h of c.hosts) {
    if (h.agent && !h.agent.status) continue;
    // The registry's config says vxlan (seeded by the first start); --backend selects per node.
    c.startAgent(h, { backend: "vxlan", extraArgs: ["--backend", backend] });
  }
  await Promise.all(c.hosts.map((h) => h.agent!.waitReady(30_000)));
}

async function stopAgents(c: Cluster) {
  await Promise.all(
    c.hosts.map((h) => h.agent && !h.agent.status ? h.agent.stop("SIGTERM") : null),
  );
}

// ---- 1. throughput ----

interface IperfSample {
  bps: number;
  retransmits: number | null;
  load: number;
}

async function iperf(c: Cluster, from: Pod, to: Pod): Promise<IperfSample> {
  const secs = Number(opt["iperf-seconds"]);
  const load = load1();
  const r = await c.run(from, [
    "iperf3",
    "-c",
    to.ip,
    "-p",
    "5201",
    "-t",
    String(secs),
    "-O",
    "1",
    "-J",
  ], { timeoutMs: (secs + 15) * 1000 });
  let j: {
    error?: string;
    end?: { sum_received?: { bits_per_second: number }; sum_sent?: { retransmits?: number } };
  };
  try {
    j = JSON.parse(r.stdout);
  } catch {
    throw new Error(`iperf3 from ${from.name} to ${to.ip}: ${r.stderr || r.stdout || "no output"}`);
  }
  if (j.error || !j.end?.sum_received) throw new Error(`iperf3: ${j.error ?? "no result"}`);
  return {
    bps: j.end.sum_received.bits_per_second,
    retransmits: j.end.sum_sent?.retransmits ?? null,
    load,
  };
}

async function waitIperfServer(c: Cluster, from: Pod, to: Pod) {
  await waitUntil("iperf3 server", 10_000, async () => {
    const r = await c.run(from, ["bash", "-c", `exec 3<>/dev/tcp/${to.ip}/5201`], {
      timeoutMs: 2000,
    });
    return r.code === 0;
  });
}

// ---- 2. latency ----

interface MonitorEvent {
  at: number;
  deleted: boolean;
  key: string;
}

/** `ip -ts monitor route` in a namespace; events for 198.19.x routes with their timestamps. */
function startMonitor(ns: string) {
  const events: MonitorEvent[] = [];
  const child = new Deno.Command("ip", {
    args: ["-n", ns, "-ts", "monitor", "route"],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const dec = new TextDecoder();
  const done = (async () => {
    let buf = "";
    for await (const chunk of child.stdout) {
      buf += dec.decode(chunk, { stream: true });
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        // [2026-11-25T16:05:19.747495] Deleted 198.19.5.0/24 via ... (local time, µs)
        const m = /^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d+)\]\s+(Deleted\s+)?(198\.19\.\S+)/
          .exec(line);
        if (!m) continue;
        const at = new Date(m[1]).getTime() + Number(`0.${m[2]}`) * 1000;
        events.push({ at, deleted: !!m[3], key: m[4].replace("/", "-") });
      }
    }
  })();
  return {
    events,
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
      await child.status;
      await done.catch(() => {});
    },
  };
}

async function writerChild(c: Cluster, backend: string, del: boolean): Promise<WriteResult[]> {
  const count = Number(opt["latency-leases"]);
  const args = [
    `${REPO}bench/lib/lease_writer.ts`,
    "--registry",
    registry,
    "--count",
    String(count),
    "--interval-ms",
    String(opt["latency-interval-ms"]),
    "--first-subnet",
    "128",
    "--backend",
    backend,
    "--public-base",
    "198.18.0.100",
    "--ttl",
    "600",
  ];
  if (registry === "etcd") args.push("--endpoint", c.etcd!.endpoint, "--prefix", c.etcdPrefix);
  else args.push("--kv-path", c.kvPath!);
  if (del) args.push("--delete");
  const r = await run(denoInNs(c.nsOf("reg"), args), {
    timeoutMs: 60_000 + count * Number(opt["latency-interval-ms"]),
    cwd: REPO,
  });
  const out = r.stdout.trim().split("\n").filter(Boolean).map((l) => JSON.parse(l) as WriteResult);
  if (out.length !== count) {
    throw new Error(`lease writer exited ${r.code}: ${r.stderr.trim() || r.stdout.slice(0, 500)}`);
  }
  return out;
}

async function latency(c: Cluster, backend: string) {
  const count = Number(opt["latency-leases"]);
  const plan = leasePlan({
    count,
    firstSubnet: 128,
    subnetLen: 24,
    publicBase: "198.18.0.100",
    backend,
  });
  const keys = plan.map((p) => p.key);
  const monitors = c.hosts.map((h) => startMonitor(h.netns));
  let raw: RawWatch | null = null;
  try {
    raw = await startRawWatch(
      registry === "etcd"
        ? {
          kind: "etcd",
          endpoint: c.etcd!.endpoint,
          prefix: c.etcdPrefix,
          netns: c.hosts[2].netns,
        }
        : { kind: "kv", path: c.kvPath!, prefix: "/coreos.com/network", netns: c.hosts[2].netns },
    );
    await sleep(300); // let the monitors subscribe
    const rows: Cell[][] = [];
    const data: Record<string, unknown> = {};
    for (const del of [false, true]) {
      const writes = await writerChild(c, backend, del);
      const bad = writes.filter((w) => !w.ok);
      if (bad.length) {
        report.problem(`${bad.length} lease ${del ? "deletes" : "writes"} failed: ${bad[0].error}`);
      }
      const seenIn = (m: ReturnType<typeof startMonitor>) => {
        const first = new Map<string, number>();
        for (const e of m.events) {
          if (e.deleted === del && !first.has(e.key)) first.set(e.key, e.at);
        }
        return first;
      };
      await waitUntil(
        `routes ${del ? "removed" : "added"} on every host and the baseline watcher`,
        15_000,
        () =>
          Promise.resolve(
            monitors.every((m) => keys.every((k) => seenIn(m).has(k))) &&
              keys.every((k) => (del ? raw!.deletes : raw!.puts).has(k)),
          ),
      ).catch((e) => report.problem(String(e)));
      const t0 = new Map(writes.map((w) => [w.key, w.t0]));
      const lat = (m: Map<string, number>) =>
        keys.filter((k) => m.has(k)).map((k) => m.get(k)! - t0.get(k)!);
      const base = summarize(lat(del ? raw.deletes : raw.puts));
      const what = del ? "delete → route gone" : "create → route present";
      rows.push([
        backend,
        what,
        "registry watch (baseline)",
        `${base.n}/${count}`,
        base.p50,
        base.p99,
        base.max,
        1,
      ]);
      const all: number[] = [];
      monitors.forEach((m, i) => {
        const l = lat(seenIn(m));
        all.push(...l);
        const s = summarize(l);
        rows.push([
          backend,
          what,
          c.hosts[i].name,
          `${s.n}/${count}`,
          s.p50,
          s.p99,
          s.max,
          round(ratio(s.p50, base.p50)),
        ]);
      });
      const s = summarize(all);
      rows.push([
        backend,
        what,
        "all hosts",
        `${s.n}/${count * c.hosts.length}`,
        s.p50,
        s.p99,
        s.max,
        round(ratio(s.p50, base.p50)),
      ]);
      data[del ? "delete" : "create"] = {
        baseline: base,
        all: s,
        write: summarize(writes.map((w) => w.t1 - w.t0)),
      };
    }
    report.data[`latency_${backend}`] = data;
    report.section(
      `lease → kernel route latency, ms (${backend}, ${registry}, ${count} leases ${
        opt["latency-interval-ms"]
      } ms apart)`,
      ["backend", "event", "observer", "seen", "p50", "p99", "max", "p50 ratio"],
      rows,
      [
        "from just before the registry call (writer in the registry host) to the route event in each host's kernel (`ip -ts monitor route`)",
        `baseline: ${
          registry === "etcd" ? "etcdctl watch in h3" : "bare KV counter poller"
        } — when the registry itself reports the change`,
      ],
    );
  } finally {
    await raw?.stop();
    for (const m of monitors) await m.stop();
  }
}

// ---- 1 + 2 per backend ----

async function backendPhase(
  c: Cluster,
  backend: "vxlan" | "host-gw",
  pods: { a: Pod | null; b: Pod | null },
) {
  deadline.check(`the ${backend} phase`);
  console.log(`\n# ${backend}: starting agents`);
  await startAgents(c, backend);
  if (!pods.a) {
    pods.a = await c.addPod("h1");
    pods.b = await c.addPod("h2");
  }
  const a = pods.a!;
  const b = pods.b!;
  let facts = await hostFacts(c, backend === "vxlan");
  for (const h of facts) {
    await waitUntil(`peer routes on ${h.name}`, 20_000, () => peerRoutesPresent(c, h, facts));
  }
  const ping = await c.ping(a, b.ip, { count: 2 });
  if (ping.received === 0) {
    throw new Error(`pod ${a.ip} cannot reach ${b.ip} through weft ${backend}`);
  }
  if (!skip.has("latency")) await latency(c, backend);
  if (skip.has("throughput")) {
    await stopAgents(c);
    await flush(c, backend);
    return;
  }
  const server = spawnLogged(
    ["ip", "netns", "exec", b.netns, "iperf3", "-s", "-p", "5201"],
    `${c.dir}/iperf3-${backend}.log`,
  );
  const weftS: IperfSample[] = [];
  const handS: IperfSample[] = [];
  let weftState: string[] | null = null;
  let handState: string[] | null = null;
  try {
    await waitIperfServer(c, a, b);
    const rounds = Number(opt.rounds);
    for (let r = 0; r < rounds; r++) {
      deadline.check(`throughput round ${r + 1} (${backend})`);
      if (r > 0) {
        await flush(c, backend); // hand-made entries of the previous round
        await startAgents(c, backend);
        facts = await hostFacts(c, backend === "vxlan");
        for (const h of facts) {
          await waitUntil(`peer routes on ${h.name}`, 20_000, () => peerRoutesPresent(c, h, facts));
        }
      }
      weftS.push(await iperf(c, a, b));
      weftState ??= await kernelState(c, "h1", backend);
      await stopAgents(c);
      await flush(c, backend);
      await handMade(c, backend, facts);
      if ((await c.ping(a, b.ip, { count: 1 })).received === 0) {
        throw new Error(`hand-made ${backend} entries do not carry traffic`);
      }
      handS.push(await iperf(c, a, b));
      handState ??= await kernelState(c, "h1", backend);
      console.log(
        `  round ${r + 1}: weft ${(weftS[r].bps / 1e9).toFixed(2)} Gbit/s, hand-made ${
          (handS[r].bps / 1e9).toFixed(2)
        } Gbit/s (load ${weftS[r].load}/${handS[r].load})`,
      );
    }
    await flush(c, backend);
  } finally {
    await stopProcess(server, "SIGTERM", 3000).catch(() => {});
  }
  const mw = median(weftS.map((s) => s.bps));
  const mh = median(handS.map((s) => s.bps));
  const diff = stateDiff(weftState ?? [], handState ?? []);
  report.data[`throughput_${backend}`] = {
    weft: weftS,
    hand: handS,
    kernelDiff: diff,
    weftState,
    handState,
  };
  const gbit = (x: number | null) => x === null ? null : x / 1e9;
  const r = ratio(mw, mh);
  // With 2 shared cores the spread between samples is often larger than the 3 % goal: a miss
  // whose sample ranges overlap is reported as inconclusive, not as a real difference.
  const overlap = Math.max(...weftS.map((s) => s.bps)) >= Math.min(...handS.map((s) => s.bps));
  const verdict = r === null
    ? "no data"
    : r >= 0.97
    ? "≥ 0.97 met"
    : overlap
    ? "inconclusive (ranges overlap)"
    : "≥ 0.97 MISSED";
  report.section(
    `pod-to-pod TCP throughput (${backend})`,
    ["backend", "datapath", "median Gbit/s", "min", "max", "retransmits", "ratio", "goal"],
    [
      [
        backend,
        "weft",
        gbit(mw),
        gbit(Math.min(...weftS.map((s) => s.bps))),
        gbit(Math.max(...weftS.map((s) => s.bps))),
        weftS.reduce((x, s) => x + (s.retransmits ?? 0), 0),
        round(r),
        verdict,
      ],
      [
        backend,
        "hand-made (ip)",
        gbit(mh),
        gbit(Math.min(...handS.map((s) => s.bps))),
        gbit(Math.max(...handS.map((s) => s.bps))),
        handS.reduce((x, s) => x + (s.retransmits ?? 0), 0),
        1,
        "",
      ],
    ],
    [
      `${weftS.length} alternating rounds of iperf3 -t ${
        opt["iperf-seconds"]
      } -O 1, pod on h1 → pod on h2`,
      `kernel state on h1, weft vs hand-made (device, routes, neighbours, FDB): ${
        diff.length ? `${diff.length} differences: ${diff.slice(0, 4).join("; ")}` : "identical"
      }`,
      `load average during the samples: ${
        [...weftS, ...handS].map((s) => s.load).join(", ")
      } (2 shared cores: other work on the machine moves these numbers)`,
    ],
  );
}

// ---- 3. programming time ----

interface ChildRep {
  reconcileAdd: number;
  reconcileDel: number;
  applyAdd: number;
  applyDel: number;
  counts: Record<string, { routes: number; neigh: number; fdb: number }>;
}

async function kernelCounts(ns: string, vxlan: boolean) {
  const routes =
    (await runOk(["ip", "-n", ns, "route", "show", "root", "198.19.0.0/16"], { timeoutMs: 30_000 }))
      .split("\n").filter((l) => l.startsWith("198.19.")).length;
  if (!vxlan) return { routes, neigh: 0, fdb: 0 };
  const neigh =
    (await runOk(["ip", "-n", ns, "neigh", "show", "dev", VNI_DEV, "nud", "permanent"], {
      timeoutMs: 30_000,
    }))
      .split("\n").filter((l) => l.startsWith("198.19.")).length;
  const fdb =
    (await runOk(["bridge", "-n", ns, "fdb", "show", "dev", VNI_DEV], { timeoutMs: 30_000 }))
      .split("\n").filter((l) => / dst /.test(l)).length;
  return { routes, neigh, fdb };
}

function batchLines(backend: string, plan: PlannedLease[], del: boolean) {
  if (backend === "host-gw") {
    return {
      ip: plan.map((p) => `route ${del ? "del" : "replace"} ${p.cidr} via ${p.publicIP} dev ext0`),
      bridge: [] as string[],
    };
  }
  if (del) {
    return {
      ip: [
        ...plan.map((p) => `route del ${p.cidr} via ${p.subnetAddr} dev ${VNI_DEV} onlink`),
        ...plan.map((p) => `neigh del ${p.subnetAddr} dev ${VNI_DEV}`),
      ],
      bridge: plan.map((p) => `fdb del ${p.mac} dev ${VNI_DEV} dst ${p.publicIP} self`),
    };
  }
  return {
    ip: [
      ...plan.map((p) =>
        `neigh replace ${p.subnetAddr} lladdr ${p.mac} dev ${VNI_DEV} nud permanent`
      ),
      ...plan.map((p) => `route replace ${p.cidr} via ${p.subnetAddr} dev ${VNI_DEV} onlink`),
    ],
    bridge: plan.map((p) => `fdb replace ${p.mac} dev ${VNI_DEV} dst ${p.publicIP} self permanent`),
  };
}

async function programming(ns: string) {
  const reps = Number(opt["prog-reps"]);
  const rows: Cell[][] = [];
  for (const backend of backends) {
    for (const n of sizes) {
      deadline.check(`programming ${backend} ${n}`);
      console.log(`\n# programming ${n} ${backend} peers`);
      const r = await run(
        denoInNs(ns, [
          `${REPO}bench/lib/program_child.ts`,
          "--backend",
          backend,
          "--n",
          String(n),
          "--reps",
          String(reps),
          "--iface",
          "ext0",
        ]),
        { timeoutMs: Math.min(600_000, deadline.left()), cwd: REPO },
      );
      if (r.code !== 0) {
        report.problem(`program_child ${backend} ${n}: ${r.stderr.trim().slice(-1500)}`);
        continue;
      }
      const child = JSON.parse(r.stdout) as { reps: ChildRep[] };
      const vx = backend === "vxlan";
      for (const [i, rep] of child.reps.entries()) {
        const full = rep.counts.afterAdd;
        const ok = full.routes === n && (!vx || (full.neigh === n && full.fdb === n)) &&
          rep.counts.afterDel.routes === 0 && rep.counts.afterApply.routes === n &&
          rep.counts.afterApplyDel.routes === 0;
        if (!ok) {
          report.problem(
            `weft ${backend} ${n} rep ${i + 1}: wrong kernel counts ${JSON.stringify(rep.counts)}`,
          );
        }
      }
      // Baseline: the same entries with ip -batch (and bridge -batch), same namespace.
      const plan = leasePlan({
        count: n,
        firstSubnet: 2,
        subnetLen: 29,
        publicBase: "198.18.64.2",
        backend,
      });
      const add: number[] = [];
      const del: number[] = [];
      if (vx) {
        await ipBatch(ns, "ip", [
          `link add ${VNI_DEV} type vxlan id 1 local 198.18.64.1 dev ext0 dstport 8472 nolearning`,
          `link set ${VNI_DEV} up`,
          `addr add 198.19.0.8/32 dev ${VNI_DEV}`,
        ]);
      }
      try {
        for (let i = 0; i < reps; i++) {
          const a = batchLines(backend, plan, false);
          add.push(await ipBatch(ns, "bridge", a.bridge) + await ipBatch(ns, "ip", a.ip));
          const k = await kernelCounts(ns, vx);
          if (k.routes !== n || (vx && (k.neigh !== n || k.fdb !== n))) {
            report.problem(`ip -batch ${backend} ${n}: wrong kernel counts ${JSON.stringify(k)}`);
          }
          const d = batchLines(backend, plan, true);
          del.push(await ipBatch(ns, "ip", d.ip) + await ipBatch(ns, "bridge", d.bridge));
          const z = await kernelCounts(ns, vx);
          if (z.routes !== 0 || z.neigh !== 0 || z.fdb !== 0) {
            report.problem(`ip -batch ${backend} ${n} delete left ${JSON.stringify(z)}`);
          }
        }
      } finally {
        if (vx) await run(["ip", "-n", ns, "link", "del", VNI_DEV]);
        await run(["ip", "-n", ns, "route", "flush", "root", "198.19.0.0/16"]);
      }
      const m = (f: (x: ChildRep) => number) => median(child.reps.map(f));
      const row = (what: string, rc: number | null, ap: number | null, ip: number | null) =>
        rows.push([
          backend,
          n,
          what,
          rc,
          ap,
          ip,
          round(ratio(rc, ip)),
          round(ratio(ap, ip)),
          (ratio(Math.max(rc ?? Infinity, ap ?? Infinity), ip) ?? Infinity) <= 2 ? "met" : "MISSED",
        ]);
      row("install", m((x) => x.reconcileAdd), m((x) => x.applyAdd), median(add));
      row("remove", m((x) => x.reconcileDel), m((x) => x.applyDel), median(del));
      report.data[`programming_${backend}_${n}`] = {
        weft: child.reps,
        ipBatchAdd: add,
        ipBatchDel: del,
      };
    }
  }
  report.section(
    "programming N peers in one namespace, ms (median of reps)",
    [
      "backend",
      "N",
      "op",
      "weft reconcile",
      "weft apply",
      "ip -batch",
      "ratio reconcile",
      "ratio apply",
      "goal ≤ 2",
    ],
    rows,
    [
      "weft: VxlanBackend/HostGwBackend in a child deno process (libnl over FFI), timed around reconcile()/apply() only",
      "install = reconcile(N peers) from empty / apply(N added); remove = reconcile([]) / apply(N removed)",
      "vxlan = neighbour + FDB + onlink route per peer; host-gw = one route per peer; kernel counts verified after every step",
      "ip -batch: wall time of `ip -n <ns> -batch -` (+ `bridge -batch` for FDB), process start included",
    ],
  );
}

/** A real agent started against a registry that already holds N leases: spawn → N routes. */
async function endToEnd(c: Cluster, ns: string) {
  const rows: Cell[][] = [];
  for (const backend of backends) {
    for (const n of sizes) {
      deadline.check(`end-to-end ${backend} ${n}`);
      console.log(`\n# end to end: agent start with ${n} ${backend} leases in the registry`);
      const kvPath = `${c.dir}/prog-${backend}-${n}.kv`;
      const plan = leasePlan({
        count: n,
        firstSubnet: 2,
        subnetLen: 29,
        publicBase: "198.18.64.2",
        backend,
      });
      const reg = await openKvRegistry({ path: kvPath });
      let writeMs: number;
      try {
        await reg.putConfig(
          JSON.stringify({ Network: "198.19.0.0/16", SubnetLen: 29, Backend: { Type: backend } }),
        );
        const t = performance.now();
        const w = await writeLeases(reg, plan, { intervalMs: 0, ttlSeconds: 3600 });
        writeMs = performance.now() - t;
        if (w.some((x) => !x.ok)) throw new Error(`writing leases: ${w.find((x) => !x.ok)!.error}`);
      } finally {
        await reg.close();
      }
      const logFile = `${c.dir}/prog-agent-${backend}-${n}.log`;
      const t0 = Date.now();
      const agent = spawnLogged(
        denoInNs(ns, [
          MAIN,
          "run",
          "--registry",
          "kv",
          "--kv-path",
          kvPath,
          "--iface",
          "ext0",
          "--subnet-file",
          `${c.dir}/prog-${backend}-${n}.env`,
          "--iptables-forward-rules=false",
        ]),
        logFile,
        { env: { NO_COLOR: "1" }, cwd: REPO },
      );
      let routesAt: number | null = null;
      try {
        await waitUntil(
          `${n} routes from the agent`,
          Math.min(180_000, deadline.left()),
          async () => {
            if (agent.status) throw new Error(`agent exited: ${await Deno.readTextFile(logFile)}`);
            const out = await runOk(["ip", "-n", ns, "route", "show", "root", "198.19.0.0/16"], {
              timeoutMs: 30_000,
            });
            const k = out.split("\n").filter((l) =>
              l.startsWith("198.19.") && / via /.test(l)
            ).length;
            if (k >= n) routesAt = Date.now();
            return k >= n;
          },
        );
      } catch (e) {
        report.problem(`end to end ${backend} ${n}: ${(e as Error).message.slice(0, 1500)}`);
      } finally {
        await stopProcess(agent, "SIGKILL", 5000).catch(() => {});
        if (backend === "vxlan") await run(["ip", "-n", ns, "link", "del", VNI_DEV]);
        await run(["ip", "-n", ns, "route", "flush", "root", "198.19.0.0/16"]);
      }
      const log = await Deno.readTextFile(logFile).catch(() => "");
      const ts = (re: RegExp) => {
        const m = re.exec(log);
        return m ? Date.parse(m[1]) : null;
      };
      const start = ts(/^(\S+Z) INFO\s+main: weft .* starting/m);
      const leased = ts(/^(\S+Z) INFO\s+agent: subnet .* leased/m);
      const reconciled = ts(/^(\S+Z) INFO\s+agent: datapath reconciled with/m);
      const progMs = leased !== null && reconciled !== null ? reconciled - leased : null;
      const ipb =
        (report.data[`programming_${backend}_${n}`] as { ipBatchAdd?: number[] } | undefined)
          ?.ipBatchAdd;
      const base = ipb ? median(ipb) : null;
      rows.push([
        backend,
        n,
        writeMs / 1000,
        routesAt !== null ? (routesAt - t0) / 1000 : null,
        start !== null ? (start - t0) / 1000 : null,
        progMs !== null ? progMs / 1000 : null,
        base !== null ? base / 1000 : null,
        round(ratio(progMs, base)),
      ]);
    }
  }
  report.section(
    "end to end: agent start with N leases already in the registry (Deno KV), seconds",
    [
      "backend",
      "N",
      "registry write s",
      "spawn → N routes s",
      "spawn → first log s",
      "leased → reconciled s",
      "ip -batch s",
      "ratio",
    ],
    rows,
    [
      "spawn → N routes: polled with `ip route show root 198.19.0.0/16` every 100 ms",
      "leased → reconciled: from the agent's own log (list N leases, decode, program the kernel)",
      "ratio = (leased → reconciled) / ip -batch install of the same entries (from the programming table)",
      "registry write s: N sequential createLease calls into the KV file (not part of the agent's time)",
    ],
  );
}

// ---- main ----

let exitCode = 0;
try {
  console.log(`weft datapath benchmark: registry ${registry}, load ${load1()}`);
  await withCluster({ hosts: 3, registry }, async (c) => {
    console.log(`cluster ${c.runId} in ${c.dir}`);
    report.data.runId = c.runId;
    const pods: { a: Pod | null; b: Pod | null } = { a: null, b: null };
    if (!skip.has("throughput") || !skip.has("latency")) {
      for (const b of backends) await backendPhase(c, b, pods);
    }
    if (!skip.has("programming") || !skip.has("e2e")) {
      // A scratch namespace named like the run's own, so the harness's teardown removes it.
      const ns = `${HARNESS_PREFIX}${c.runId}-prog`;
      await createNs(ns);
      await runOk(["ip", "-n", ns, "link", "add", "ext0", "type", "veth", "peer", "name", "ext0p"]);
      await runOk(["ip", "-n", ns, "addr", "add", "198.18.64.1/18", "dev", "ext0"]);
      await runOk(["ip", "-n", ns, "link", "set", "ext0", "up"]);
      await runOk(["ip", "-n", ns, "link", "set", "ext0p", "up"]);
      if (!skip.has("programming")) await programming(ns);
      if (!skip.has("e2e")) await endToEnd(c, ns);
    }
  });
} catch (e) {
  exitCode = 1;
  report.problem(`aborted: ${(e as Error).stack ?? e}`);
} finally {
  const path = await report.write();
  console.log(
    `\nresults: ${path} (${Math.round((Date.now() - report.startedAt.getTime()) / 1000)} s)`,
  );
}
Deno.exit(exitCode);
