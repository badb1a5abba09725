/**
 * Latency phase of the udp benchmark: `--pings` echoes `--ping-interval` s apart (every hop
 * starts idle) and as many back to back (ping -A), after 10 warm-up echoes; plus the cold-path
 * table (`../lib/cold_path.ts`): what one loopback datagram costs warm and after an idle gap.
 *
 * @example
 * ```ts
 * await measurePing(ctx, rig, phase); // per backend
 * pingSection(ctx, phases);
 * coldSection(ctx);                   // after the cluster is gone
 * ```
 */
import { type Cell, percentile } from "../lib/report.ts";
import { coldPathProbe } from "../lib/cold_path.ts";
import type { UdpCtx } from "./flags.ts";
import { pingSeries } from "./iperf.ts";
import type { PhaseResult, Rig } from "./measure.ts";
import { avgOf } from "./cpu.ts";

/** The ping series of one backend into `out.ping` (skipped when the deadline is near). */
export async function measurePing(ctx: UdpCtx, r: Rig, out: PhaseResult): Promise<void> {
  const { P, fits } = ctx;
  const { c, p1, p2 } = r;
  const { backend } = out;
  if (!fits(`${backend} ping`, P.pings * P.pingInterval + 10)) return;
  // Warm-up echoes (not counted): neighbour entries, the workers' JIT, the socket paths.
  await pingSeries(c, p1, p2.ip, { count: 10, intervalS: P.pingInterval });
  for (const mode of ["interval", "back-to-back"] as const) {
    const s = await pingSeries(c, p1, p2.ip, {
      count: P.pings,
      intervalS: P.pingInterval,
      adaptive: mode === "back-to-back",
    });
    out.ping.push({ backend, mode, ...s });
    console.log(
      `  ping ${mode}: ${s.received}/${s.sent}, p50 ${percentile(s.rttMs, 50)} ms, ` +
        `p99 ${percentile(s.rttMs, 99)} ms`,
    );
  }
}

/** The ping table. */
export function pingSection(ctx: UdpCtx, phases: PhaseResult[]): void {
  const { P, report } = ctx;
  const pingRows: Cell[][] = phases.flatMap((ph) => ph.ping).map((p) => [
    p.backend,
    p.mode,
    p.sent,
    p.received,
    p.lossPct,
    avgOf(p.rttMs),
    percentile(p.rttMs, 50),
    percentile(p.rttMs, 99),
    p.rttMs.length ? Math.max(...p.rttMs) : null,
  ]);
  report.section(
    `Ping pod→pod, ${P.pings} echoes, after 10 warm-up (ms)`,
    ["backend", "mode", "sent", "recv", "loss %", "avg", "p50", "p99", "max"],
    pingRows,
    [
      `interval: ${P.pingInterval * 1000} ms apart, so every hop starts idle: the udp backend's ` +
      "4 Worker wake-ups per round trip (tx h1, rx h2, tx h2, rx h1) are in it; back-to-back: " +
      "ping -A, the next echo leaves when the reply is in, the path stays warm",
    ],
  );
}

/** The cold-path probe (bench/lib/cold_path.ts): what one hop costs when it starts idle. */
export function coldSection(ctx: UdpCtx): void {
  const { P, report } = ctx;
  const idleMs = Math.round(P.pingInterval * 1000);
  const r = coldPathProbe({ warm: 2000, cold: 100, idleMs });
  report.data.coldPath = r;
  report.section(
    `What starting idle costs here: one 84-byte loopback datagram, warm vs after ${idleMs} ms idle (µs)`,
    ["case", "samples", "send p50", "send p90", "send→recv p50", "send→recv p90"],
    [
      [
        "warm (back to back)",
        r.warm.samples,
        r.warm.sendUs.p50,
        r.warm.sendUs.p90,
        r.warm.roundUs.p50,
        r.warm.roundUs.p90,
      ],
      [
        `cold (${idleMs} ms idle first)`,
        r.cold.samples,
        r.cold.sendUs.p50,
        r.cold.sendUs.p90,
        r.cold.roundUs.p50,
        r.cold.roundUs.p90,
      ],
    ],
    [
      "measured in this benchmark's own process, root namespace loopback, sync FFI as the packet " +
      "workers call it; a udp-backend ping round trip at the interval above has 4 hops that each " +
      "start cold (a Worker woken from poll, then read/sendmmsg or recvmmsg/writev), and each hop's " +
      "syscall also carries the next namespace's receive path; kernel vxlan's round trip runs in " +
      "the sending context with no wake-up but ping's own",
    ],
  );
}
