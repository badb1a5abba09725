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
 * 4. with `--families` 4,6 (the default) the cluster is dual stack (EnableIPv6, pods with an
 *    IPv4 and an IPv6 address, weft's `flannel-v6.1` / IPv6 routes beside the IPv4 entries) and
 *    phases 1 and 3 get IPv6 rows from the same run: pod-to-pod TCP over IPv6 (weft vs the same
 *    entries made with `ip -6 -batch`), and programming dual-stack peers (family 4+6).
 *    `--families 4` runs the IPv4-only cluster as before.
 *
 * This file is the entry point: flags (`datapath/flags.ts`), the cluster, the phases in order
 * (`datapath/latency.ts`, `throughput.ts`, `programming.ts`, `e2e.ts`; host helpers in
 * `hosts.ts`), the report. Only 198.18.0.0/15 addresses, only namespaces this run creates (all removed at the end, also on
 * failure or Ctrl-C: the harness deletes everything carrying the run id).
 *
 * @example
 * ```sh
 * sudo deno run -A bench/datapath.ts                        # everything, etcd registry
 * sudo deno run -A bench/datapath.ts --registry kv --skip throughput --sizes 1000
 * ```
 */
import { type Cluster, type Pod, withCluster } from "../test/kit/cluster.ts";
import { load1 } from "./lib/sys.ts";
import { datapathContext, type DatapathCtx, parseFlags } from "./datapath/flags.ts";
import { flush, hostFacts, startAgents, stopAgents, waitPeerRoutes } from "./datapath/hosts.ts";
import { latency } from "./datapath/latency.ts";
import { throughput } from "./datapath/throughput.ts";
import { createScratchNs, programming } from "./datapath/programming.ts";
import { endToEnd } from "./datapath/e2e.ts";

const ctx = datapathContext(parseFlags(Deno.args));
const { registry, backends, skip, deadline, report } = ctx;

/** Latency and throughput of one backend on the cluster (pods made on first use). */
async function backendPhase(
  ctx: DatapathCtx,
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
  const facts = await hostFacts(c, backend === "vxlan");
  await waitPeerRoutes(c, facts);
  for (const to of ctx.families.includes(6) ? [b.ip, b.ip6!] : [b.ip]) {
    const ping = await c.ping(a, to, { count: 2 });
    if (ping.received === 0) {
      throw new Error(`pod ${a.ip} cannot reach ${to} through weft ${backend}`);
    }
  }
  if (!skip.has("latency")) await latency(ctx, c, backend);
  if (skip.has("throughput")) {
    await stopAgents(c);
    await flush(c, backend);
    return;
  }
  await throughput(ctx, c, backend, a, b, facts);
}

let exitCode = 0;
try {
  const ipv6 = ctx.families.includes(6);
  console.log(
    `weft datapath benchmark: registry ${registry}, families ${ctx.families}${
      ipv6 ? " (dual-stack cluster)" : ""
    }, load ${load1()}`,
  );
  await withCluster({ hosts: 3, registry, ipv6 }, async (c) => {
    console.log(`cluster ${c.runId} in ${c.dir}`);
    report.data.runId = c.runId;
    const pods: { a: Pod | null; b: Pod | null } = { a: null, b: null };
    if (!skip.has("throughput") || !skip.has("latency")) {
      for (const b of backends) await backendPhase(ctx, c, b, pods);
    }
    if (!skip.has("programming") || !skip.has("e2e")) {
      const ns = await createScratchNs(c);
      if (!skip.has("programming")) await programming(ctx, ns);
      if (!skip.has("e2e")) await endToEnd(ctx, c, ns);
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
