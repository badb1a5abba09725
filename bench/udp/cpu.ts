/**
 * CPU-per-packet arithmetic of the udp benchmark and its last table: what bounded each
 * udp-backend run, read off the counters of its window (a Worker thread near a full core, the
 * TUN queue or a socket buffer overflowing, the receiving pod's own socket, or all CPUs busy).
 *
 * @example
 * ```ts
 * perPkt(w.agentCpu.sender?.total, u.delivered); // µs of agent CPU per delivered packet
 * boundsSection(ctx, udpPhase);
 * ```
 */
import { type Cell, median } from "../lib/report.ts";
import type { CpuDelta } from "./probes.ts";
import type { PhaseResult, Window } from "./measure.ts";
import type { UdpCtx } from "./flags.ts";

export const gbit = (bps: number | null) => bps == null ? null : bps / 1e9;
export const med = (xs: (number | null | undefined)[]) =>
  median(xs.filter((x): x is number => x != null && Number.isFinite(x)));
export const perPkt = (cpuS: number | null | undefined, pkts: number) =>
  cpuS == null || pkts <= 0 ? null : (cpuS * 1e6) / pkts;
/** Worker `i`'s CPU in the window as % of one core. */
export const wkrPct = (d: CpuDelta | null, i: number, wallS: number) =>
  d && d.workers[i] != null ? (100 * d.workers[i]) / wallS : null;
/** "tx/rx" worker percentages of one side, medians over runs. */
export function wkrPair(runs: { window: Window }[], side: "sender" | "receiver"): string {
  const f = (i: number) => med(runs.map((t) => wkrPct(t.window.agentCpu[side], i, t.window.wallS)));
  const tx = f(0), rx = f(1);
  return tx == null || rx == null ? "-" : `${Math.round(tx)}/${Math.round(rx)}`;
}
export const avgOf = (xs: number[]) => xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null;
/** Packets per wake-up of worker `i` (packets it handled ÷ its sleeps in poll). */
export const perWake = (pkts: number, d: CpuDelta | null, i: number) =>
  d && d.workerSleeps[i] > 0 ? pkts / d.workerSleeps[i] : null;
/** Below this share of idle CPU in the idle window, machine-wide CPU per packet means nothing. */
export const SATURATED = 0.1;
export const CPUS = navigator.hardwareConcurrency;

/**
 * What limited each udp-backend measurement, read off the counters of its window: a Worker
 * thread near a full core, the TUN queue or a socket buffer overflowing, the receiving pod's
 * own socket, or all CPUs busy (then every thread, ours and iperf3's, waits for a CPU).
 */
export function bound(w: Window, lostInPod = 0, idleShare: number | null = null): string {
  const why: string[] = [];
  const busy = w.system.busy / (w.wallS * CPUS);
  const threads: [string, number | null][] = [
    ["h1 tx worker", wkrPct(w.agentCpu.sender, 0, w.wallS)],
    ["h1 rx worker", wkrPct(w.agentCpu.sender, 1, w.wallS)],
    ["h2 tx worker", wkrPct(w.agentCpu.receiver, 0, w.wallS)],
    ["h2 rx worker", wkrPct(w.agentCpu.receiver, 1, w.wallS)],
  ];
  const [name, pct] = threads.reduce((a, b) => (b[1] ?? 0) > (a[1] ?? 0) ? b : a);
  if (pct != null && pct >= 90) why.push(`${name} saturated (${Math.round(pct)}% of a core)`);
  if (busy >= 0.9) {
    const agents = ((w.agentCpu.sender?.total ?? 0) + (w.agentCpu.receiver?.total ?? 0)) /
      w.wallS;
    const other = idleShare == null
      ? ""
      : `; without our traffic ${Math.round(100 * (1 - idleShare))}% were busy`;
    why.push(
      `all ${CPUS} CPUs busy (${Math.round(100 * busy)}%; the two agents used ` +
        `${agents.toFixed(2)} cores, busiest thread ${name} ${Math.round(pct ?? 0)}%${other})`,
    );
  }
  const c = w.counters;
  if (c.sender.devTxDropped > 0) why.push(`TUN queue overflow on h1 (${c.sender.devTxDropped})`);
  const sock = c.sender.udpSndbufErrors + c.receiver.udpRcvbufErrors;
  if (sock > 0) why.push(`UDP socket buffers (${sock} errors)`);
  if (lostInPod > 0) why.push(`receiving pod's socket buffer (${lostInPod} dropped)`);
  // not_ipv4 is the kernel's own IPv6 router solicitations on flannel0: no traffic of ours.
  const drops = Object.entries(w.fwd.drops).filter(([k]) => !k.includes("not_ipv4"))
    .map(([k, v]) => `${k} ${v}`);
  if (drops.length) why.push(`forwarder drops: ${drops.join(", ")}`);
  return why.length ? why.join("; ") : `nothing saturated (CPUs ${Math.round(100 * busy)}% busy)`;
}

export function boundsSection(ctx: UdpCtx, ph: PhaseResult) {
  const { P, report } = ctx;
  const rows: Cell[][] = [];
  for (const s of P.streams) {
    for (const t of ph.tcp.filter((x) => x.streams === s)) {
      rows.push([`TCP ${s}x rep ${t.rep}`, gbit(t.bps), "Gbit/s", bound(t.window)]);
    }
  }
  for (const u of ph.udp) {
    rows.push([
      `UDP ${u.offeredPps} pps`,
      Math.round(u.deliveredPps),
      "pps",
      bound(u.window, u.window.counters.pod.udpRcvbufErrors, u.idleShare),
    ]);
  }
  report.section("What bounded the udp backend's figures", [
    "run",
    "result",
    "unit",
    "bound",
  ], rows);
}
