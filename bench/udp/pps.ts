/**
 * Small-packet phase of the udp benchmark: iperf3 UDP with `--payload`-byte datagrams at fixed
 * offered rates (`--rates`, pps), each in a measured window between two idle windows
 * (`--baseline-seconds`); the table gives sent and delivered pps, loss and where it happened,
 * and CPU per packet (agents, Worker threads, iperf3, machine-wide; `--skip cpu` leaves the CPU
 * columns out).
 *
 * @example
 * ```ts
 * await measurePps(ctx, rig, phase); // per backend, iperf3 server running in p2
 * ppsSection(ctx, phases);
 * ```
 */
import type { Cell } from "../lib/report.ts";
import { IPERF_PORT, type UdpCtx } from "./flags.ts";
import { iperfUdp } from "./iperf.ts";
import { idleWindow, measured, pcts, type PhaseResult, type Rig } from "./measure.ts";
import { CPUS, perPkt, perWake, SATURATED } from "./cpu.ts";

/** The fixed-rate runs of one backend into `out.udp` (each skipped when the deadline is near). */
export async function measurePps(ctx: UdpCtx, r: Rig, out: PhaseResult): Promise<void> {
  const { P, fits } = ctx;
  const { c, p1, p2 } = r;
  const { backend } = out;
  for (const pps of P.rates) {
    const need = P.ppsSeconds + 2 * P.baselineSeconds + 8;
    if (!fits(`${backend} UDP ${pps} pps`, need)) continue;
    const before = await idleWindow(P.baselineSeconds);
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
    const after = await idleWindow(P.baselineSeconds);
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
      }, loss ${result.lossPct.toFixed(3)}%, workers h1 ${pcts(w.agentCpu.sender, w.wallS)} h2 ${
        pcts(w.agentCpu.receiver, w.wallS)
      }`,
    );
  }
}

/** The small-packet table. */
export function ppsSection(ctx: UdpCtx, phases: PhaseResult[]): void {
  const { P, skip, report } = ctx;
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
}
