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
 * This file is the entry point: flags and context (`udp/flags.ts`), the cluster, each backend's
 * phases in order (`udp/ping.ts`, `tcp.ts`, `pps.ts`; measured windows in `measure.ts`, CPU
 * arithmetic and the bounds table in `cpu.ts`, probes in `iperf.ts` and `probes.ts`, the
 * backend switch in `switch.ts`), then the tables (`tables.ts`).
 *
 * Prints tables and writes bench/results/udp-<timestamp>.json (every sample, per-run windows,
 * machine context). Bounded: `--deadline-s` (default 420) for the whole run; a measurement that
 * would not fit is skipped and listed as a problem; every command has its own timeout. Only
 * 198.18.0.0/15 addresses, only namespaces this run creates; the harness removes all of them
 * (and the kit's exit hook kills the iperf3 servers) at the end, on failure and on Ctrl-C. Share of the
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
import { withCluster } from "../test/kit/cluster.ts";
import { load1 } from "./lib/sys.ts";
import { IPERF_PORT, parseFlags, udpContext, type UdpCtx } from "./udp/flags.ts";
import { IperfServer } from "./udp/iperf.ts";
import { foreignIperfs, type PhaseResult, type Rig } from "./udp/measure.ts";
import { measurePing } from "./udp/ping.ts";
import { measureTcp } from "./udp/tcp.ts";
import { measurePps } from "./udp/pps.ts";
import { agentOptions, switchBackend } from "./udp/switch.ts";
import { tables } from "./udp/tables.ts";

const ctx = udpContext(parseFlags(Deno.args));
const { registry, backends, skip, started, report } = ctx;

/** Measures one backend into `out` (already listed, so a failure keeps what was measured). */
async function measureBackend(ctx: UdpCtx, r: Rig, out: PhaseResult): Promise<void> {
  const { c, p2 } = r;
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
    if (!skip.has("ping")) await measurePing(ctx, r, out);
    if (!skip.has("tcp")) await measureTcp(ctx, r, out);
    if (!skip.has("pps")) await measurePps(ctx, r, out);
  } finally {
    await srv.stop();
  }
}

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
      await measureBackend(ctx, rig, ph);
    }
  });
} catch (e) {
  failure = e;
  report.problem(`run failed: ${(e as Error).stack ?? e}`);
}
tables(ctx, phases);
const file = await report.write();
console.log(
  `\nwrote ${file} (${((Date.now() - started) / 1000).toFixed(0)} s, load now ${load1()})`,
);
if (failure) Deno.exit(1);
