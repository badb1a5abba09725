/**
 * The udp benchmark's tables once every backend is measured: TCP, small packets, ping, the
 * goals of issue 4, the cold-path probe and what bounded the udp backend's figures; plus the
 * JSON's `phases` and `ratios`.
 *
 * @example
 * ```ts
 * tables(ctx, phases); // also with phases missing: each table shows what was measured
 * ```
 */
import { type Cell, percentile } from "../lib/report.ts";
import type { UdpCtx } from "./flags.ts";
import type { PhaseResult } from "./measure.ts";
import { tcpSection } from "./tcp.ts";
import { ppsSection } from "./pps.ts";
import { coldSection, pingSection } from "./ping.ts";
import { avgOf, boundsSection } from "./cpu.ts";

export function tables(ctx: UdpCtx, phases: PhaseResult[]): void {
  const { P, skip, report } = ctx;
  const { ratios, plainRatios, offloadGain } = tcpSection(ctx, phases);
  ppsSection(ctx, phases);
  pingSection(ctx, phases);

  // Goals, as issue 4 states them.
  const udp = phases.find((p) => p.backend === "udp");
  const at50 = udp?.udp.find((u) => u.offeredPps === 50_000);
  const ping = udp?.ping.find((p) => p.mode === "interval");
  const warm = udp?.ping.find((p) => p.mode === "back-to-back");
  const goals: Cell[][] = [];
  for (const [i, s] of P.streams.entries()) {
    goals.push([
      `TCP ${s}x udp/vxlan ≥ 0.11`,
      ratios[i] == null ? "-" : ratios[i]!.toFixed(3),
      ratios[i] == null ? "-" : ratios[i]! >= 0.11 ? "yes" : "NO",
    ]);
  }
  if (at50) {
    const pod = at50.window.counters.pod.udpRcvbufErrors;
    const path = Math.max(0, at50.lost - pod);
    goals.push([
      `no loss at 50 kpps (udp), end to end${
        P.podSockBuf ? ` (pods' sockets: iperf3 -w ${P.podSockBuf})` : " (iperf3's default sockets)"
      }`,
      `${at50.lossPct.toFixed(3)}% of ${Math.round(at50.sentPps)} pps sent`,
      at50.lost === 0 ? "yes" : "NO",
    ]);
    goals.push([
      "… of it outside the receiving pod's socket",
      `${path} packets (${pod} were dropped by the pod's own socket buffer)`,
      path === 0 ? "yes" : "NO",
    ]);
  }
  for (const p of [ping, warm]) {
    if (!p) continue;
    const avg = avgOf(p.rttMs);
    goals.push([
      `ping < 0.15 ms, loss-free (udp, ${p.mode})`,
      `avg ${avg?.toFixed(3)} ms, p50 ${percentile(p.rttMs, 50)} ms, ${p.sent - p.received} lost`,
      avg != null && avg < 0.15 && p.received === p.sent ? "yes" : "NO",
    ]);
  }
  report.section("Goals (issue 4)", ["goal", "measured", "met"], goals);
  if (!skip.has("ping")) {
    try {
      coldSection(ctx);
    } catch (e) {
      report.problem(`cold-path probe failed: ${(e as Error).message}`);
    }
  }
  if (udp) boundsSection(ctx, udp);
  report.data.phases = phases;
  report.data.ratios = Object.fromEntries(
    P.streams.flatMap((s, i) => [
      [`tcp_${s}`, ratios[i]],
      [`tcp_${s}_plain`, plainRatios[i]],
      [`tcp_${s}_offload_gain`, offloadGain[i]],
    ]),
  );
}
