/**
 * Lease → kernel route latency phase: leases written straight into the registry from the
 * registry host (`../lib/lease_writer.ts` as a child in that namespace), `--latency-interval-ms`
 * apart, then deleted; each host's `ip -ts monitor route` timestamps when its route appears and
 * disappears. Baseline: the registry's own watch seen from h3 (`../lib/raw_watch.ts`).
 *
 * @example
 * ```ts
 * await latency(ctx, cluster, "vxlan"); // agents running, peers' routes in place
 * ```
 */
import type { Cluster } from "../../test/kit/cluster.ts";
import { denoInNs } from "../../test/kit/netns.ts";
import { run, waitFor } from "../../test/kit/proc.ts";
import { type Cell, ratio, round, summarize } from "../lib/report.ts";
import { sleep } from "../lib/sys.ts";
import { leasePlan } from "../lib/leases.ts";
import type { WriteResult } from "../lib/lease_writer.ts";
import { type RawWatch, startRawWatch } from "../lib/raw_watch.ts";
import type { DatapathCtx } from "./flags.ts";
import { REPO } from "./hosts.ts";

export interface MonitorEvent {
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

async function writerChild(
  ctx: DatapathCtx,
  c: Cluster,
  backend: string,
  del: boolean,
): Promise<WriteResult[]> {
  const { opt, registry } = ctx;
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

export async function latency(ctx: DatapathCtx, c: Cluster, backend: string) {
  const { opt, registry, report } = ctx;
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
      const writes = await writerChild(ctx, c, backend, del);
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
      await waitFor(
        `routes ${del ? "removed" : "added"} on every host and the baseline watcher`,
        () =>
          Promise.resolve(
            monitors.every((m) => keys.every((k) => seenIn(m).has(k))) &&
              keys.every((k) => (del ? raw!.deletes : raw!.puts).has(k)),
          ),
        { timeoutMs: 15_000 },
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
