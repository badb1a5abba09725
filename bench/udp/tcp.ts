/**
 * TCP phase of the udp benchmark: iperf3 pod p1 (h1) → pod p2 (h2) with 1 and 4 streams
 * (`--streams`), `--seconds` each after a 1 s omitted warm-up, `--reps` repetitions, each in a
 * measured window; the table gives medians and the ratios udp/vxlan (goal ≥ 0.11), udp-plain/vxlan
 * and the offload gain udp/udp-plain.
 *
 * @example
 * ```ts
 * await measureTcp(ctx, rig, phase);           // per backend, iperf3 server running in p2
 * const { ratios } = tcpSection(ctx, phases);   // after all backends
 * ```
 */
import { type Cell, ratio } from "../lib/report.ts";
import { IPERF_PORT, type UdpCtx } from "./flags.ts";
import { iperfTcp } from "./iperf.ts";
import { measured, pcts, type PhaseResult, type Rig } from "./measure.ts";
import { CPUS, gbit, med, perWake, wkrPair } from "./cpu.ts";

/** The TCP runs of one backend into `out.tcp` (each skipped when the deadline is near). */
export async function measureTcp(ctx: UdpCtx, r: Rig, out: PhaseResult): Promise<void> {
  const { P, fits } = ctx;
  const { c, p1, p2 } = r;
  const { backend } = out;
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

/** The median ratios of the goals, per stream count (index as in P.streams). */
export interface TcpRatios {
  ratios: (number | null)[];
  plainRatios: (number | null)[];
  offloadGain: (number | null)[];
}

/** The TCP table; returns the ratios for the goals and the JSON. */
export function tcpSection(ctx: UdpCtx, phases: PhaseResult[]): TcpRatios {
  const { P, report } = ctx;
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
  return { ratios, plainRatios, offloadGain };
}
