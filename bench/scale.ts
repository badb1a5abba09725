/**
 * Scale benchmark: N simulated nodes (default 100, 1000, 5000) against one real etcd
 * (test/kit/etcd.ts) and one real Deno KV file. Each node is weft's real LeaseManager and
 * PeerWatcher without a datapath, `--per-worker` nodes per Worker thread (`scale/node_worker.ts`;
 * one run: `scale/simulate.ts`). Measured per registry and N: time until all N hold distinct
 * leases; one new lease → seen by all N watchers (p50/p99/max); steady-state registry load (write
 * rate; etcd CPU, RSS and gRPC calls/s from its /metrics; KV file size; the simulation's own CPU);
 * how the renewals of leases created together are spread. Then the real thing for memory: one
 * `weft run` agent with `--peers` (5000) peer leases next to one with none, idle
 * (`scale/agent_idle.ts`), and the agent's whole periodic round with that many peers programmed
 * (`scale/relist.ts` roundCost, per `--round-backends`). `--v8-flags` runs those two phases with
 * other V8 flag sets next to weft's (`;` between sets, `,` inside one; `-`: no flags): the idle
 * agents of every set share one window, the rounds alternate between the sets, `--passes` times.
 * With `--event-peers 5,5000`: one real agent's CPU per peer event with that many peers, and the
 * ratio between them (`scale/event_cost.ts`). Prints tables, writes
 * bench/results/scale-<timestamp>.json.
 *
 * @example
 * ```sh
 * deno run -A bench/scale.ts                                  # kv and etcd, N = 100,1000,5000
 * deno run -A bench/scale.ts --registries kv --sizes 100,1000 --steady-seconds 10
 * deno run -A bench/scale.ts --sizes "" --peers 5000            # only the idle-agent phase
 * deno run -A bench/scale.ts --sizes "" --peers 0 --event-peers 5,5000   # only CPU per event
 * deno run -A bench/scale.ts --sizes "" --passes 2 \
 *   --v8-flags="--optimize-for-size,--expose-gc;--expose-gc;-"   # weft's flags vs two others
 * ```
 */
import { parseArgs } from "node:util";
import { startEtcd } from "../test/kit/etcd.ts";
import { median, ratio, Report, round } from "./lib/report.ts";
import { load1, memAvailableMiB } from "./lib/sys.ts";
import { type SimResult, simulate, type Target } from "./scale/simulate.ts";
import { agentIdle, type IdleRow } from "./scale/agent_idle.ts";
import { type RoundCost, roundCost } from "./scale/relist.ts";
import { eventCost, type EventCostOptions, type EventCostRow } from "./scale/event_cost.ts";
import { V8_FLAGS } from "../src/base/v8_flags.ts";

const { values: v } = parseArgs({
  args: Deno.args,
  options: {
    registries: { type: "string", default: "kv,etcd" },
    sizes: { type: "string", default: "100,1000,5000" },
    "per-worker": { type: "string", default: "250" },
    ttl: { type: "string", default: "86400" },
    "renew-margin-s": { type: "string", default: "3600" },
    "steady-seconds": { type: "string", default: "20" },
    probes: { type: "string", default: "10" },
    "probe-interval-ms": { type: "string", default: "200" },
    "phase-timeout-s": { type: "string", default: "1200" },
    "deadline-min": { type: "string", default: "120" },
    "etcd-clients": { type: "string", default: "worker" },
    "wave-size": { type: "string", default: "0" },
    "wave-interval-ms": { type: "string", default: "1000" },
    "call-timeout-s": { type: "string", default: "10" },
    "list-concurrency": { type: "string", default: "" },
    "watch-start": { type: "string", default: "acquired" },
    "share-decoded": { type: "boolean", default: false },
    peers: { type: "string", default: "5000" },
    "idle-seconds": { type: "string", default: "20" },
    "peer-ttl": { type: "string", default: "600" },
    "round-backends": { type: "string", default: "vxlan,host-gw" },
    "round-reps": { type: "string", default: "10" },
    "event-peers": { type: "string", default: "" },
    events: { type: "string", default: "1000" },
    "event-spacing-ms": { type: "string", default: "10" },
    "event-idle-seconds": { type: "string", default: "10" },
    "event-backend": { type: "string", default: "vxlan" },
    "event-v8-flags": { type: "string", default: "" },
    "event-heap-snapshot-dir": { type: "string", default: "" },
    "v8-flags": { type: "string", default: V8_FLAGS.join(",") },
    passes: { type: "string", default: "1" },
    help: { type: "boolean", default: false },
  },
});
if (v.help) {
  console.log(
    "Usage: deno run -A bench/scale.ts [--registries kv,etcd] [--sizes 100,1000,5000]\n" +
      "  [--per-worker 250] [--ttl 86400] [--renew-margin-s 3600] [--steady-seconds 20]\n" +
      "  [--probes 10] [--probe-interval-ms 200] [--phase-timeout-s 1200] [--deadline-min 120]\n" +
      "  [--etcd-clients worker|node] [--wave-size 0] [--wave-interval-ms 1000]\n" +
      "  [--call-timeout-s 10] [--list-concurrency N] (default: 25000/N, 1..25)\n" +
      "  [--watch-start acquired|list] [--share-decoded]\n" +
      "  [--peers 5000] [--idle-seconds 20] [--peer-ttl 600]\n" +
      "  [--round-backends vxlan,host-gw] [--round-reps 10]\n" +
      '  [--v8-flags="<set>;<set>"] (default weft\'s; "-": no flags) [--passes 1]\n' +
      "  [--event-peers 5,5000] [--events 1000] [--event-spacing-ms 10] [--event-idle-seconds 10]\n" +
      "  [--event-backend vxlan|udp|alloc] [--event-v8-flags=--prof,--logfile=/tmp/weft-%p.log]\n" +
      "  [--event-heap-snapshot-dir DIR] (the agent's heap after the events; lib/heap_summary.ts)\n" +
      '  (--sizes "": the --peers phases only; --peers 0 or --idle-seconds 0: no idle phase;\n' +
      '  --round-backends "": no round phase; --event-peers: CPU per event)',
  );
  Deno.exit(0);
}
const report = new Report("scale", v);
const deadline = Date.now() + Number(v["deadline-min"]) * 60_000;
if (!["worker", "node"].includes(v["etcd-clients"])) {
  console.error(`--etcd-clients ${v["etcd-clients"]}: say worker or node`);
  Deno.exit(2);
}
/**
 * Acquisitions and first lists at once per Worker (`--list-concurrency`, else this): at most
 * ~25 000 lease entries being read per Worker thread, 25 lists at the most (N ≤ 1000: 25; N=5000:
 * 5). A Worker's nodes share one thread: with 25 lists of up to 5000 leases at once it fell tens of
 * seconds behind its sockets. On Deno KV that stalled N=5000 (the Worker holding the write lock
 * waited for its thread: 2922 leased in 30 min; with 5, all in 353 s); on etcd its calls passed
 * their deadline and its connection's keepalive ping timed out (the connection dropped, every
 * watch on it restarted: 4304 of 5000 leased in 25 min, session 8).
 */
function listConcurrency(n: number): number {
  if (v["list-concurrency"] !== "") return Number(v["list-concurrency"]);
  return Math.max(1, Math.min(25, Math.floor(25_000 / n)));
}
const runId = Math.random().toString(36).slice(2, 8);
const sizes = v.sizes.split(",").filter(Boolean).map(Number);
const registries = v.registries.split(",").filter(Boolean) as ("kv" | "etcd")[];
/** The V8 flag sets compared; "" is V8's defaults. */
const flagSets = v["v8-flags"].split(";").map((f) => f.trim() === "-" ? "" : f.trim());
const passes = Math.max(1, Number(v.passes));
const flagsCell = (f: string) => f || "-";
console.log(
  `weft scale benchmark ${runId}: ${registries} × N=${sizes}, ${v["per-worker"]} nodes per ` +
    `Worker, load ${load1()}, ${Math.round(memAvailableMiB())} MiB available`,
);
const etcd = registries.includes("etcd") ? await startEtcd() : null;
const dir = await Deno.makeTempDir({ prefix: `weft-bench-scale-${runId}-` });
const results: SimResult[] = [];
const idle: (IdleRow & { pass: number; load: number })[] = [];
const eventRows: EventCostRow[] = [];
try {
  const eventPeers = v["event-peers"].split(",").filter(Boolean).map(Number);
  if (eventPeers.length) {
    if (!["vxlan", "udp", "alloc"].includes(v["event-backend"])) {
      throw new Error(
        `--event-backend ${
          v["event-backend"]
        }: say vxlan, udp or alloc (host-gw needs on-link peers)`,
      );
    }
    for (const kind of registries) {
      for (const p of eventPeers) {
        console.log(`  ${kind}: CPU per peer event, one agent with ${p} peers ...`);
        const r = await eventCost({
          kind,
          peers: p,
          events: Number(v.events),
          spacingMs: Number(v["event-spacing-ms"]),
          idleSeconds: Number(v["event-idle-seconds"]),
          backend: v["event-backend"] as EventCostOptions["backend"],
          ttlSeconds: Number(v["peer-ttl"]) > 0 ? Number(v["peer-ttl"]) : null,
          v8Flags: v["event-v8-flags"].split(",").filter(Boolean),
          heapSnapshotDir: v["event-heap-snapshot-dir"] || undefined,
        });
        eventRows.push(r);
        if (r.error) report.problem(`event cost ${kind} P=${p}: ${r.error}`);
      }
    }
    report.data.eventCost = eventRows;
    eventCostSection(eventRows);
  }
  if (Number(v.peers) > 0) {
    for (let pass = 0; pass < passes && Number(v["idle-seconds"]) > 0; pass++) {
      for (const kind of registries) {
        console.log(
          `  ${kind}: one agent with ${v.peers} peers, one with none, × ${flagSets.length} ` +
            `V8 flag sets, idle (pass ${pass + 1}, load ${load1()}) ...`,
        );
        const rows = await agentIdle({
          kind,
          dir,
          etcdEndpoint: etcd?.endpoint ?? null,
          runId: `${runId}p${pass}`,
          peers: Number(v.peers),
          peerTtlSeconds: Number(v["peer-ttl"]) > 0 ? Number(v["peer-ttl"]) : null,
          idleSeconds: Number(v["idle-seconds"]),
          v8Flags: flagSets,
          relist: pass === 0,
        });
        idle.push(...rows.map((r) => ({ ...r, pass: pass + 1, load: load1() })));
      }
    }
    report.data.idle = idle;
    if (idle.length) {
      report.section(
        `one agent idle ${v["idle-seconds"]} s, with and without peer leases`,
        [
          "registry",
          "V8 flags",
          "pass",
          "load",
          "peer leases",
          "RSS MiB",
          "RSS max",
          "anon MiB",
          "idle CPU %",
          "RSS vs no peers",
        ],
        idle.map((r) => {
          const base = idle.find((b) =>
            b.kind === r.kind && b.peers === 0 && b.v8Flags === r.v8Flags && b.pass === r.pass
          );
          return [
            r.kind,
            flagsCell(r.v8Flags),
            r.pass,
            r.load,
            r.peers,
            round(r.rssMiB),
            round(r.rssMaxMiB),
            round(r.anonMiB),
            round(r.cpuPct),
            round(r.rssMiB && base?.rssMiB ? r.rssMiB / base.rssMiB : null),
          ];
        }),
        [
          "weft run --backend alloc on loopback with the V8 flags shown (weft's: src/base/v8_flags.ts); /29 peer leases of backend alloc",
          "all agents of one registry and pass (every flag set, with and without peers) idle in the same window; load: 1-min average at its end",
          "measured after the lease, the first list and 3 s; CPU = user+sys over the window (one core = 100 %)",
          "RSS, anon: median of one sample a second over the window; RSS max: its largest (a periodic re-list in flight)",
        ],
      );
      report.section(
        `periodic reconciliation, registry side: PeerWatcher relist + takePeers, ${v.peers} peers`,
        ["registry", "peers", "first CPU ms", "CPU ms / round", "wall ms / round"],
        idle.filter((r) => r.relist).map((r) => [
          r.kind,
          r.relist!.peers,
          round(r.relist!.firstCpuMs),
          round(r.relist!.cpuMsPerRound),
          round(r.relist!.wallMsPerRound),
        ]),
        [
          "CPU of this bench process (process.cpuUsage; V8's default flags) over 5 rounds after a first, cold one",
          "the backend's reconcile comes on top: the whole-round table below",
        ],
      );
    }
    for (const r of idle) if (r.error) report.problem(`idle ${r.kind}: ${r.error}`);
    const rounds: (RoundCost & { pass: number; load: number })[] = [];
    for (let pass = 0; pass < passes; pass++) {
      for (const kind of registries) {
        for (const backend of v["round-backends"].split(",").filter(Boolean)) {
          for (
            const [v8Flags, gcBetween] of flagSets.flatMap((f) => [[f, false], [f, true]] as const)
          ) {
            console.log(
              `  ${kind}: periodic round with ${backend} and ${v.peers} peers, V8 flags ` +
                `${flagsCell(v8Flags)}${gcBetween ? ", a full GC before each round" : ""} ` +
                `(pass ${pass + 1}, load ${load1()}) ...`,
            );
            try {
              const r = await roundCost({
                kind,
                backend: backend as "vxlan" | "host-gw",
                peers: Number(v.peers),
                rounds: Number(v["round-reps"]),
                runId: `${runId}${rounds.length}`,
                dir,
                v8Flags,
                gcBetween,
              });
              rounds.push({ ...r, pass: pass + 1, load: load1() });
            } catch (e) {
              report.problem(
                `round ${kind} ${backend} ${flagsCell(v8Flags)}: ${(e as Error).message}`,
              );
            }
          }
        }
      }
    }
    report.data.rounds = rounds;
    if (rounds.length) {
      report.section(
        `periodic reconciliation, whole round: relist + takePeers + backend reconcile, ${v.peers} peers`,
        [
          "registry",
          "backend",
          "V8 flags",
          "GC",
          "pass",
          "load",
          "peers",
          "CPU ms / round",
          "relist",
          "(list)",
          "takePeers",
          "reconcile",
          "(kernel reads)",
          "wall ms / round",
          "start",
          "reconcile: 1st",
          "steady",
          "full diff",
          "restart",
          "after 1 event",
          "round after 1 event",
        ],
        rounds.map((r) => [
          r.registry,
          r.backend,
          flagsCell(r.v8Flags ?? ""),
          r.gcBetween ? "each" : "-",
          r.pass,
          r.load,
          r.peers,
          round(r.cpuMsPerRound),
          round(r.parts.relist),
          round(r.listCpuMs),
          round(r.parts.takePeers),
          round(r.parts.reconcile),
          round(r.kernelReadCpuMs),
          round(r.wallMsPerRound),
          round(r.firstCpuMs),
          round(r.reconcileCpuMs?.[0] ?? null),
          round(median(r.reconcileCpuMs?.slice(1) ?? [])),
          r.fullCpuMs?.length ? r.fullCpuMs.map((x) => round(x)).join("/") : "-",
          r.restartCpuMs?.length ? r.restartCpuMs.map((x) => round(x)).join("/") : "-",
          round(median(r.event?.reconcileCpuMs ?? [])),
          round(r.event?.cpuMsPerRound ?? null),
        ]),
        [
          `scale/round_child.ts in a scratch namespace (etcd: its own etcd there), every peer already programmed; mean of ${
            v["round-reps"]
          } rounds`,
          "CPU = user+sys of that process (process.cpuUsage); (list) = the registry's list alone, part of relist",
          "(kernel reads) = the route dump (vxlan: + FDB and neighbour dumps) through libnl alone, part of reconcile",
          "start = the first relist + reconcile: programs every peer, then reads the tables again and settles; reconcile: 1st = the first periodic round's, steady = median of the later ones; full diff = three periodic rounds that diff every entry (each the round after a narrowed repair of a route removed by hand; all present, nothing written), in order; restart = three first reconciles of a new backend on the same kernel (builds every peer's entries, diffs in full; code warm), in order; after 1 event = median reconcile of as many more rounds, each after one peer added or removed by an applied event (incremental diff); round after 1 event = its whole round, mean",
          "GC each = the agent's memory-reducing full GC (its heap trim) before each measured round: V8 drops compiled code with it, as between an agent's rounds minutes apart, so rounds run cold (the agent's worst case); - = rounds back to back",
          "one child per registry × backend × flag set × GC, one after another, then the next backend; load: 1-min average when the child ended",
        ],
      );
    }
  }
  for (const kind of registries) {
    for (const n of sizes) {
      if (Date.now() >= deadline) {
        report.problem(`${kind} N=${n}: skipped, --deadline-min ${v["deadline-min"]} reached`);
        continue;
      }
      const t: Target = kind === "kv"
        ? { kind, where: `${dir}/n${n}.kv`, prefix: "/coreos.com/network" }
        : { kind, where: etcd!.endpoint, prefix: `/weft-scale-${runId}-n${n}` };
      console.log(`  ${kind} N=${n} ...`);
      const r = await simulate(t, n, {
        perWorker: Number(v["per-worker"]),
        ttlSeconds: Number(v.ttl),
        renewMarginMs: Number(v["renew-margin-s"]) * 1000,
        steadySeconds: Number(v["steady-seconds"]),
        probes: Number(v.probes),
        probeIntervalMs: Number(v["probe-interval-ms"]),
        phaseMs: Number(v["phase-timeout-s"]) * 1000,
        deadline,
        etcdClients: v["etcd-clients"] as "worker" | "node",
        waveSize: Number(v["wave-size"]),
        waveIntervalMs: Number(v["wave-interval-ms"]),
        callTimeoutMs: Number(v["call-timeout-s"]) * 1000,
        listConcurrency: listConcurrency(n),
        watchStart: v["watch-start"] === "list" ? "list" : "acquired",
        shareDecoded: v["share-decoded"] === true,
      });
      results.push(r);
      if (r.error) report.problem(`${kind} N=${n}: ${r.error}`);
    }
  }
} finally {
  await etcd?.cleanup();
  await Deno.remove(dir, { recursive: true }).catch(() => {});
}
report.data.results = results;
if (results.length) {
  report.section(
    "simulated nodes: leases, peer-event fan-out, steady load",
    [
      "registry",
      "N",
      "all leased s",
      "distinct",
      "join sim CPU s",
      "join etcd CPU s",
      "join sent MiB",
      "caught up s",
      "catch-up sim / etcd CPU s",
      "catch-up sent MiB",
      "acquire p50 ms",
      "acquire p99 ms",
      "acquire retries",
      "event p50 ms",
      "event p99 ms",
      "event max ms",
      "seen",
      "sim CPU %",
      "sim RSS MiB",
      "writes/s",
      "reg CPU %",
      "reg RSS MiB",
      "reg req/s",
      "KV MiB",
      "renewals max/s",
      "renewal span s",
    ],
    results.map((r) => [
      r.kind,
      r.n,
      round(r.allLeasedSeconds),
      r.distinct ? "yes" : "NO",
      round(r.join.simCpuS),
      round(r.join.registryCpuS),
      round(r.join.sentMiB),
      round(r.allListedSeconds),
      `${round(r.catchUp.simCpuS)} / ${round(r.catchUp.registryCpuS)}`,
      round(r.catchUp.sentMiB),
      round(r.acquireMs.p50),
      round(r.acquireMs.p99),
      r.acquireRetries,
      round(r.probe.p50),
      round(r.probe.p99),
      round(r.probe.max),
      `${r.probe.seen}/${r.probe.want}`,
      round(r.steady.simCpuPct),
      round(r.steady.simRssMiB),
      round(r.steady.writesPerSec),
      round(r.steady.registryCpuPct),
      round(r.steady.registryRssMiB),
      round(r.steady.requestsPerSec),
      round(r.steady.kvFileMiB),
      r.renewals.maxPerSecond,
      r.renewals.spanSeconds,
    ]),
    [
      "event = a probe lease written by the control client → each of the N watchers' added event",
      "sim CPU/RSS: the whole simulation process (all Workers) during the steady window",
      "renewals: when each node's renewal loop will renew its lease, per second (max) and span",
      "caught up: spawn → every watcher holds all N − 1 other leases; catch-up: all leased → " +
      "caught up (the watchers' lists or watch replay the join did not cover)",
      "join: spawn → all leased; CPU of the simulation and of etcd, MiB etcd sent its clients " +
      "(calls by method and the load average at its end in the JSON: results[].join)",
      `etcd clients: ${
        v["etcd-clients"]
      } (worker: a Worker's nodes share one client, each node its ` +
      "own calls and watch stream); start waves: " +
      (Number(v["wave-size"]) > 0
        ? `${v["wave-size"]} nodes every ${v["wave-interval-ms"]} ms`
        : "none") +
      `; etcd call deadline ${
        v["call-timeout-s"]
      } s; acquisitions and first lists at once per Worker: ` +
      (v["list-concurrency"] === ""
        ? sizes.map((n) => `${listConcurrency(n)} at N=${n}`).join(", ")
        : Number(v["list-concurrency"]) > 0
        ? v["list-concurrency"]
        : "all") +
      `; watchers start from ${
        v["watch-start"] === "list" ? "a list of their own" : "the acquisition's list"
      }${
        v["share-decoded"] ? "; a Worker's nodes share their decoded leases (--share-decoded)" : ""
      }; listed = every watcher holds all N − 1 other leases`,
    ],
  );
}
console.log(`\nresults: ${await report.write()}`);

function eventCostSection(rows: EventCostRow[]) {
  const calls = (r: EventCostRow, m: string | null) => {
    if (!r.callsPerEvent) return null;
    const e = Object.entries(r.callsPerEvent);
    return e.filter(([k]) => m ? k === m : k !== "Range").reduce((a, [, n]) => a + n, 0);
  };
  report.section(
    `CPU per peer event: one agent (${v["event-backend"]}), ${v.events} lease changes ${
      v["event-spacing-ms"]
    } ms apart`,
    [
      "registry",
      "peers",
      "events",
      "event s",
      "event CPU ms",
      "idle % before",
      "idle % after",
      "CPU µs/event",
      "vs fewest peers",
      "Range/event",
      "other calls/event",
      "load before",
      "load after",
    ],
    rows.map((r) => {
      const base = rows.find((b) => b.kind === r.kind && !b.error);
      return [
        r.kind,
        r.peers,
        r.events,
        round(r.eventSeconds),
        round(r.eventCpuMs),
        round(r.idleCpuPct[0]),
        round(r.idleCpuPct[1]),
        round(r.cpuUsPerEvent),
        round(base && base !== r ? ratio(r.cpuUsPerEvent, base.cpuUsPerEvent) : null),
        round(calls(r, "Range")),
        round(calls(r, null)),
        r.load1[0],
        r.load1[1],
      ];
    }),
    [
      "half the changes are new peer leases, half their removal; the peers were there before the agent started",
      "CPU µs/event = (agent utime+stime over the event windows − mean idle rate × their length) ÷ events",
      "periodic work off for the measurement: --reconcile-interval 3600 --peer-probe-interval 0",
      "etcd calls/event: etcd's gRPC calls over the event windows less the writer's own (same writes without the agent)",
    ],
  );
  // Runs of one size differ by ±25 % on a shared machine: repeat sizes (--event-peers
  // 5,5000,5,5000) and read the medians.
  const kinds = [...new Set(rows.map((r) => r.kind))];
  const summary = kinds.flatMap((kind) => {
    const ok = rows.filter((r) => r.kind === kind && !r.error && r.cpuUsPerEvent !== null);
    const sizes = [...new Set(ok.map((r) => r.peers))].sort((a, b) => a - b);
    const med = (p: number) => median(ok.filter((r) => r.peers === p).map((r) => r.cpuUsPerEvent!));
    return sizes.map((p) => [
      kind,
      p,
      ok.filter((r) => r.peers === p).length,
      round(med(p)),
      round(p === sizes[0] ? null : ratio(med(p), med(sizes[0]))),
    ]);
  });
  report.data.eventCostSummary = summary;
  report.section(
    "CPU per peer event: median per size",
    ["registry", "peers", "runs", "median µs/event", "vs fewest peers"],
    summary,
    ["goal (issue #12): an event costs the same with 5000 peers as with 5 (ratio ≈ 1)"],
  );
}
