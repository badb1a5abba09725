/**
 * The agent's CPU per peer event, and whether it grows with the number of peers (issue #12: "an
 * event costs the same with 5000 peers as with 5"). One real `weft run` agent (vxlan backend by
 * default, so each event's datapath programming is included) in a one-host test cluster
 * (test/kit/cluster.ts: network namespaces; etcd on the registry host, or a Deno KV file), with
 * `peers` peer leases (/29, written by `../lib/lease_writer.ts` on the registry host) present
 * before it starts. Once it has programmed them and settled: an idle window, then `events` lease
 * changes written one at a time `spacingMs` apart (half new peers, then their removal), then a
 * second idle window. CPU per event = (the agent's utime+stime over the event windows − its idle
 * rate × their length) ÷ events. On etcd, the gRPC calls etcd served per event (its /metrics),
 * less those of the same writes made before the agent started, are the agent's own per event.
 *
 * Periodic work is switched off for the measurement (`--reconcile-interval 3600`,
 * `--peer-probe-interval 0`): a 5000-peer reconcile or probe round falling into one window and not
 * the other would swamp the per-event figure; `relist.ts` and bench/datapath.ts measure those.
 *
 * @example
 * ```ts
 * const row = await eventCost({ kind: "etcd", peers: 5000, events: 1000, spacingMs: 10,
 *   idleSeconds: 10, backend: "vxlan", ttlSeconds: 3600 });
 * row.cpuUsPerEvent; // µs of agent CPU per lease change
 * ```
 */
import { withCluster } from "../../test/kit/cluster.ts";
import type { Cluster } from "../../test/kit/cluster.ts";
import { denoInNs } from "../../test/kit/netns.ts";
import { run, waitFor } from "../../test/kit/proc.ts";
import { V8_FLAGS } from "../../src/base/v8_flags.ts";
import { parseIp } from "../../src/base/ipv4.ts";
import { CLUSTER_NETWORK } from "../lib/leases.ts";
import type { WriteResult } from "../lib/lease_writer.ts";
import { CLK_TCK, load1, nowMs, sleep, statCpuTicks } from "../lib/sys.ts";
import { parseEtcdMetrics } from "./simulate.ts";
import { HEAP_ENTRY } from "../lib/heap_entry.ts";

const WRITER = new URL("../lib/lease_writer.ts", import.meta.url).pathname;
const HEALTHZ_PORT = 9917;
const SUBNET_LEN = 29;
const FIRST_PEER = 128;
/** etcd gRPC methods reported per event (the rest are summed into "other"). */
const METHODS = ["Range", "Txn", "Put", "DeleteRange", "LeaseGrant", "LeaseTimeToLive"];

export interface EventCostOptions {
  kind: "kv" | "etcd";
  peers: number;
  /** Lease changes in all (half additions, then their removals); even. */
  events: number;
  spacingMs: number;
  /** Length of each idle window (one before the events, one after). */
  idleSeconds: number;
  backend: "vxlan" | "udp" | "alloc";
  /** TTL of the peer leases and of the event leases (null: none). */
  ttlSeconds: number | null;
  /** More V8 flags for the agent (e.g. `--prof --logfile=/tmp/weft-%p.log` to profile it). */
  v8Flags?: string[];
  /**
   * Write a heap snapshot of the agent here after the measurement (`../lib/heap_entry.ts`; sum
   * it with `../lib/heap_summary.ts`); its path is the row's `heapSnapshot`.
   */
  heapSnapshotDir?: string;
}

export interface EventCostRow {
  kind: string;
  backend: string;
  peers: number;
  /** Peer events the agent applied in the event windows (weft_peer_events_applied_total). */
  events: number;
  eventSeconds: number | null;
  eventCpuMs: number | null;
  /** Agent CPU % of a core in the idle windows before and after the events. */
  idleCpuPct: [number | null, number | null];
  cpuUsPerEvent: number | null;
  /** Of that, the kernel's (stime over the event windows ÷ events; idle not subtracted). */
  sysUsPerEvent?: number;
  /** etcd only: the agent's gRPC calls per event, by method (writer's own calls subtracted). */
  callsPerEvent?: Record<string, number>;
  /** etcd only: the writer's own gRPC calls per event, by method (measured without the agent). */
  writerCallsPerEvent?: Record<string, number>;
  load1: [number, number];
  /**
   * With `--trace-gc` in v8Flags: the agent's GCs over the event windows, told by their
   * timestamps (V8 writes the trace through a block-buffered stdout, so where a line lands in the
   * log says little), and their pause time (incremental marking steps included).
   */
  gcs?: { markCompact: number; scavenge: number; markCompactMs: number; scavengeMs: number };
  /** The full-GC lines of the event windows (sizes before → after, and V8's reason). */
  fullGcLines?: string[];
  heapSnapshot?: string;
  error?: string;
}

/** The agent's CPU ticks, sampled in the background so a window can start at a write's t0. */
class CpuSamples {
  #samples: Sample[] = [];
  #timer: ReturnType<typeof setInterval>;
  constructor(readonly pid: number) {
    this.take();
    this.#timer = setInterval(() => this.take(), 20);
  }
  /** Samples now: [epoch ms, utime+stime ticks, stime ticks]. */
  take(): Sample {
    const s: Sample = [nowMs(), ...readTicks(this.pid)];
    this.#samples.push(s);
    return s;
  }
  /** The last sample taken at or before `t`. */
  before(t: number): Sample {
    let best = this.#samples[0];
    for (const s of this.#samples) if (s[0] <= t) best = s;
    return best;
  }
  stop() {
    clearInterval(this.#timer);
  }
}

type Sample = [number, number, number];

/** [utime+stime, stime] of `pid`, in ticks. */
function readTicks(pid: number): [number, number] {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  // stime is field 15: the 13th after "(comm) " (statCpuTicks sums it with utime).
  return [statCpuTicks(stat), Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[12])];
}

/** Sum of the counters `name` in Prometheus text (every label set). */
function counter(text: string, name: string): number {
  let n = 0;
  for (const l of text.split("\n")) {
    if (l.startsWith(`${name} `) || l.startsWith(`${name}{`)) n += Number(l.split(" ").pop());
  }
  return n;
}

async function agentMetrics(c: Cluster): Promise<string> {
  return await c.exec("h1", [
    "curl",
    "-sS",
    "--max-time",
    "5",
    `http://127.0.0.1:${HEALTHZ_PORT}/metrics`,
  ]);
}

async function etcdCalls(c: Cluster): Promise<Map<string, number>> {
  const text = await c.exec("reg", [
    "curl",
    "-sS",
    "--max-time",
    "5",
    `${c.etcd!.endpoint}/metrics`,
  ]);
  return parseEtcdMetrics(text).byMethod;
}

function perEvent(
  a: Map<string, number>,
  b: Map<string, number>,
  events: number,
): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [m, n] of b) {
    const d = n - (a.get(m) ?? 0);
    if (d === 0) continue;
    const k = METHODS.includes(m) ? m : "other";
    out[k] = (out[k] ?? 0) + d / events;
  }
  return out;
}

/** Runs lease_writer.ts on the registry host; its results (throws when a write failed). */
async function writer(c: Cluster, o: EventCostOptions, args: string[]): Promise<WriteResult[]> {
  const reg = o.kind === "kv"
    ? ["--registry", "kv", "--kv-path", c.kvPath!]
    : ["--registry", "etcd", "--endpoint", c.etcd!.endpoint, "--prefix", c.etcdPrefix];
  const r = await run(
    denoInNs(c.nsOf("reg"), [
      WRITER,
      ...reg,
      "--subnet-len",
      String(SUBNET_LEN),
      "--backend",
      o.backend,
      "--ttl",
      String(o.ttlSeconds ?? 0),
      "--max-seconds",
      "600",
      ...args,
    ]),
    { timeoutMs: 620_000 },
  );
  const out = r.stdout.split("\n").filter((l) => l.startsWith("{")).map((l) =>
    JSON.parse(l) as WriteResult
  );
  const bad = out.filter((w) => !w.ok);
  if (r.code !== 0 || bad.length) {
    throw new Error(
      `lease_writer ${args.join(" ")} failed (exit ${r.code}, ${bad.length} failed writes: ` +
        `${bad[0]?.error ?? "-"}): ${r.stderr.slice(-800)}`,
    );
  }
  return out;
}

/** The event writes: `n` new leases from subnet `first`, spacingMs apart, then their removal. */
function eventArgs(o: EventCostOptions, first: number, del: boolean): string[] {
  return [
    "--count",
    String(o.events / 2),
    "--first-subnet",
    String(first),
    "--public-base",
    "198.18.64.1",
    "--interval-ms",
    String(o.spacingMs),
    ...(del ? ["--delete"] : []),
  ];
}

/**
 * The GCs of a `--trace-gc` log that fall into `windows` (ms since the agent started; V8's
 * timestamps count from its isolate's start, a few ms later, well inside the 20 ms sampling).
 */
export function gcsIn(
  log: string,
  windows: [number, number][],
): Pick<EventCostRow, "gcs" | "fullGcLines"> {
  const gcs = { markCompact: 0, scavenge: 0, markCompactMs: 0, scavengeMs: 0 };
  const fullGcLines: string[] = [];
  for (const l of log.split("\n")) {
    const m =
      / (\d+) ms: (.*?)(Scavenge|Mark-Compact).*?MB, (?:pooled: [\d.]+ MB, )?([\d.]+) \/ [\d.]+ ms(?: \(\+ ([\d.]+) ms in)?/
        .exec(l);
    if (!m) continue;
    const t = Number(m[1]);
    if (!windows.some(([a, b]) => t >= a && t <= b)) continue;
    const pause = Number(m[4]) + Number(m[5] ?? 0);
    if (m[3] === "Scavenge") {
      gcs.scavenge++;
      gcs.scavengeMs += pause;
    } else {
      gcs.markCompact++;
      gcs.markCompactMs += pause;
      fullGcLines.push(l.trim());
    }
  }
  return { gcs, fullGcLines };
}

export async function eventCost(o: EventCostOptions): Promise<EventCostRow> {
  if (o.events < 2 || o.events % 2) {
    throw new RangeError(`--events ${o.events}: give an even number ≥ 2`);
  }
  const row: EventCostRow = {
    kind: o.kind,
    backend: o.backend,
    peers: o.peers,
    events: 0,
    eventSeconds: null,
    eventCpuMs: null,
    idleCpuPct: [null, null],
    cpuUsPerEvent: null,
    load1: [load1(), 0],
  };
  try {
    await withCluster({ hosts: 1, registry: o.kind }, async (c) => {
      if (o.peers > 0) {
        await writer(c, o, [
          "--count",
          String(o.peers),
          "--first-subnet",
          String(FIRST_PEER),
          "--public-base",
          "198.18.8.1",
          "--interval-ms",
          "0",
          "--concurrency",
          "8",
        ]);
      }
      let first = FIRST_PEER + o.peers + 16;
      // The writer's own etcd calls for the same writes, without an agent watching.
      if (o.kind === "etcd") {
        const m0 = await etcdCalls(c);
        await writer(c, o, eventArgs(o, first, false));
        await writer(c, o, eventArgs(o, first, true));
        row.writerCallsPerEvent = perEvent(m0, await etcdCalls(c), o.events);
      }
      const agentT0 = nowMs();
      const agent = c.startAgent("h1", {
        backend: o.backend,
        netConfig: { SubnetLen: SUBNET_LEN },
        healthzPort: HEALTHZ_PORT,
        extraArgs: ["--reconcile-interval", "3600", "--peer-probe-interval", "0"],
        env: {
          DENO_V8_FLAGS: [...V8_FLAGS, ...o.v8Flags ?? []].join(","),
          ...o.heapSnapshotDir ? { WEFT_HEAP_SNAPSHOT_DIR: o.heapSnapshotDir } : {},
        },
        ...o.heapSnapshotDir ? { entry: HEAP_ENTRY } : {},
      });
      const env = await agent.waitReady(180_000);
      // The agent's own subnet must not be one the events write.
      const own = Math.floor(
        (parseIp(env.gateway) - parseIp(CLUSTER_NETWORK.split("/")[0])) / 2 ** (32 - SUBNET_LEN),
      );
      if (own >= first && own < first + o.events / 2) first = own + 1;
      const metric = async (name: string) => counter(await agentMetrics(c), name);
      await waitFor(`the agent to know ${o.peers} peers`, async () => {
        return (await metric("weft_peers")) === o.peers;
      }, { timeoutMs: 180_000, intervalMs: 500 });
      // Past the first reconcile's heap trim (heap_trim.ts: the GC after a burst, 5 s ticks).
      await sleep(12_000);
      const cpu = new CpuSamples(agent.pid);
      try {
        const idle = async () => {
          const a = cpu.take();
          await sleep(o.idleSeconds * 1000);
          const b = cpu.take();
          return (b[1] - a[1]) / CLK_TCK / ((b[0] - a[0]) / 1000);
        };
        const idleBefore = await idle();
        const applied0 = await metric("weft_peer_events_applied_total");
        const calls0 = o.kind === "etcd" ? await etcdCalls(c) : null;
        let ticks = 0;
        let sysTicks = 0;
        let ms = 0;
        const windows: [number, number][] = [];
        for (const del of [false, true]) {
          const w = await writer(c, o, eventArgs(o, first, del));
          const want = applied0 + (del ? o.events : o.events / 2);
          // The window ends at the sample taken just before the scrape that shows every event
          // applied (the scrape itself is not the event's cost).
          const end = await waitFor(`the agent to apply ${want - applied0} events`, async () => {
            const s = cpu.take();
            return (await metric("weft_peer_events_applied_total")) >= want ? s : false;
          }, { timeoutMs: 60_000, intervalMs: 50 });
          const start = cpu.before(w[0].t0);
          ticks += end[1] - start[1];
          sysTicks += end[2] - start[2];
          ms += end[0] - start[0];
          windows.push([start[0] - agentT0, end[0] - agentT0]);
        }
        const calls1 = o.kind === "etcd" ? await etcdCalls(c) : null;
        row.events = (await metric("weft_peer_events_applied_total")) - applied0;
        const idleAfter = await idle();
        if (o.heapSnapshotDir) {
          const file = `${o.heapSnapshotDir}/weft-${agent.pid}-0.heapsnapshot`;
          agent.signal("SIGUSR2");
          // Written in one go once it exists and its size stops changing.
          let size = -1;
          await waitFor(`the agent's heap snapshot ${file}`, async () => {
            const st = await Deno.stat(file).catch(() => null);
            const done = st !== null && st.size > 0 && st.size === size;
            size = st?.size ?? -1;
            return done;
          }, { timeoutMs: 60_000, intervalMs: 500 });
          row.heapSnapshot = file;
        }
        if (o.v8Flags?.includes("--trace-gc")) {
          cpu.stop();
          await agent.stop(); // flushes V8's buffered trace
          Object.assign(row, gcsIn(agent.log(), windows));
        }
        const idleRate = (idleBefore + idleAfter) / 2; // CPU s per s
        row.idleCpuPct = [idleBefore * 100, idleAfter * 100];
        row.eventSeconds = ms / 1000;
        row.eventCpuMs = ticks / CLK_TCK * 1000;
        row.cpuUsPerEvent = (ticks / CLK_TCK - idleRate * ms / 1000) * 1e6 / row.events;
        row.sysUsPerEvent = sysTicks / CLK_TCK * 1e6 / row.events;
        if (calls0 && calls1) {
          const all = perEvent(calls0, calls1, row.events);
          const mine: Record<string, number> = {};
          for (
            const m of new Set([...Object.keys(all), ...Object.keys(row.writerCallsPerEvent!)])
          ) {
            mine[m] = (all[m] ?? 0) - (row.writerCallsPerEvent![m] ?? 0);
          }
          row.callsPerEvent = mine;
        }
      } finally {
        cpu.stop();
      }
    });
  } catch (e) {
    row.error = (e as Error).message;
  }
  row.load1[1] = load1();
  return row;
}
