/**
 * Control-plane benchmark: real `weft run --backend alloc` processes on loopback against each
 * registry (a shared Deno KV file; a real etcd from test/kit/etcd.ts), measuring
 *
 * 1. convergence — N agents (50, 200) until all hold distinct leases (every subnet.env written,
 *    all distinct, `weft leases` lists N), started in waves; with memory (RSS, PSS) and CPU.
 *    Baseline: N × `main.ts version` (deno start + loading weft's module graph) in the same waves.
 *    (`control_plane/convergence.ts`)
 * 2. peer-event latency — leases written straight into the registry on a schedule (default 100,
 *    50 ms apart), seen by real agents ("peer added" log lines) and by an in-process PeerWatcher.
 *    Baseline: the registry's own notification (etcdctl watch; a bare KV counter poller).
 *    (`control_plane/latency.ts`)
 * 3. idle memory — one agent after 10 s idle. Baseline: an idle bare deno process.
 *    (`control_plane/idle.ts`, on the latency phase's agents)
 *
 * This file is the entry point: flags (`control_plane/flags.ts`), the phases in order per
 * registry, the report. Agents run in the root namespace with `--iptables-forward-rules=false`
 * (no rules on the test machine); only loopback and 198.18.0.0/15 addresses are used. Everything
 * started is stopped and every temp dir removed, also on Ctrl-C.
 *
 * @example
 * ```sh
 * deno run -A bench/control_plane.ts                        # everything, both registries
 * deno run -A bench/control_plane.ts --registries etcd --sizes 50 --skip latency
 * ```
 */
import { startEtcd } from "../test/kit/etcd.ts";
import { load1, memAvailableMiB } from "./lib/sys.ts";
import { parseFlags } from "./control_plane/flags.ts";
import { Session } from "./control_plane/session.ts";
import { target } from "./control_plane/agents.ts";
import { type Convergence, convergence, convergenceSection } from "./control_plane/convergence.ts";
import { latencyAndIdle } from "./control_plane/latency.ts";

const s = new Session(parseFlags(Deno.args));
const { registries, sizes, wave, skip, deadline, report } = s;

try {
  console.log(
    `weft control-plane benchmark ${s.runId}: registries ${
      registries.join(",")
    }, sizes ${sizes}, ` +
      `wave ${wave}, load ${load1()}, ${Math.round(memAvailableMiB())} MiB available`,
  );
  if (registries.includes("etcd")) s.etcd = await startEtcd();
  const conv: Convergence[] = [];
  for (const name of registries) {
    const t = target(name, s);
    if (!skip.has("latency")) await latencyAndIdle(s, t);
    if (skip.has("convergence")) continue;
    for (const n of sizes) {
      if (deadline.left() < 60_000) {
        report.problem(`skipped convergence ${name} N=${n}: run deadline nearly reached`);
        continue;
      }
      const c = await convergence(s, t, n);
      conv.push(c);
      console.log(
        `  ${name} N=${n}: ${c.seconds ?? "-"} s (baseline ${c.baselineSeconds ?? "-"} s)${
          c.error ? ` — ${c.error}` : ""
        }`,
      );
    }
  }
  if (conv.length) convergenceSection(s, conv);
} catch (e) {
  report.problem(`aborted: ${(e as Error).stack ?? e}`);
} finally {
  await s.etcd?.cleanup();
  await s.removeAll();
  const path = await report.write();
  console.log(
    `\nresults: ${path} (${Math.round((Date.now() - report.startedAt.getTime()) / 1000)} s)`,
  );
}
