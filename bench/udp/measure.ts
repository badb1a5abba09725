/**
 * One measured window of the udp benchmark: agent CPU (per packet Worker thread), machine-wide
 * CPU, drop counters and forwarder metrics read around a traffic run ({@link measured}); idle
 * windows without our traffic ({@link idleWindow}); and the result types of one backend's
 * phase. The rig is the 2-host cluster with pod p1 on h1 and p2 on h2.
 *
 * @example
 * ```ts
 * const { result, w } = await measured(rig, "udp", () => iperfTcp(c, p1, p2.ip, 5201, o));
 * w.agentCpu.sender?.workers; // CPU seconds of h1's tx and rx Worker threads in the window
 * ```
 */
import type { Cluster, Host, Pod } from "../../test/kit/cluster.ts";
import { load1, sleep } from "../lib/sys.ts";
import type { PingSeries, TcpResult, UdpResult } from "./iperf.ts";
import {
  countersDelta,
  type CpuDelta,
  cpuDelta,
  metricByLabel,
  metricSum,
  type NsCounters,
  nsCounters,
  procCpu,
  runnable,
  scrapeMetrics,
  type SystemCpu,
  systemCpu,
  systemDelta,
} from "./probes.ts";
import { HEALTHZ } from "./flags.ts";

/** Other iperf3 processes on the machine (another benchmark would share the CPUs with ours). */
export function foreignIperfs(ours: Set<number>): number {
  let n = 0;
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name) || ours.has(Number(e.name))) continue;
    try {
      if (Deno.readTextFileSync(`/proc/${e.name}/comm`).trim() === "iperf3") n++;
    } catch { /* exited */ }
  }
  return n;
}

// ---- one measured window: agent CPU, counters and metrics around a traffic run ----

export interface Window {
  wallS: number;
  agentCpu: { sender: CpuDelta | null; receiver: CpuDelta | null };
  system: SystemCpu;
  /** Drop counters: sender and receiver host namespaces, and the receiving pod's (iperf3's socket). */
  counters: { sender: NsCounters; receiver: NsCounters; pod: NsCounters };
  /** Forwarder counters (udp backend only; 0 for vxlan). */
  fwd: { txPackets: number; rxPackets: number; drops: Record<string, number> };
  load1: number;
  /** Runnable threads machine-wide, sampled at the start and the end of the window. */
  runnable: number[];
}

export interface Rig {
  c: Cluster;
  h1: Host;
  h2: Host;
  p1: Pod;
  p2: Pod;
}

export function device(backend: string): string {
  return backend.startsWith("udp") ? "flannel0" : "flannel.1";
}

export async function measured<T>(r: Rig, backend: string, fn: () => Promise<T>) {
  const { c, h1, h2, p2 } = r;
  const dev = device(backend);
  const [m1a, m2a, n1a, n2a, npa] = await Promise.all([
    scrapeMetrics(c, h1, HEALTHZ),
    scrapeMetrics(c, h2, HEALTHZ),
    nsCounters(c, h1, dev),
    nsCounters(c, h2, dev),
    nsCounters(c, p2, "eth0"),
  ]);
  const run0 = runnable();
  const s0 = systemCpu();
  const a1 = procCpu(h1.agent!.pid), a2 = procCpu(h2.agent!.pid);
  const t0 = performance.now();
  const result = await fn();
  const wallS = (performance.now() - t0) / 1000;
  const b1 = procCpu(h1.agent!.pid), b2 = procCpu(h2.agent!.pid);
  const s1 = systemCpu();
  const run1 = runnable();
  const [m1b, m2b, n1b, n2b, npb] = await Promise.all([
    scrapeMetrics(c, h1, HEALTHZ),
    scrapeMetrics(c, h2, HEALTHZ),
    nsCounters(c, h1, dev),
    nsCounters(c, h2, dev),
    nsCounters(c, p2, "eth0"),
  ]);
  const drops: Record<string, number> = {};
  for (const [m0, m1, who] of [[m1a, m1b, "h1"], [m2a, m2b, "h2"]]) {
    const before = metricByLabel(m0, "weft_udp_dropped_packets_total");
    for (const [k, v] of Object.entries(metricByLabel(m1, "weft_udp_dropped_packets_total"))) {
      const d = v - (before[k] ?? 0);
      if (d > 0) drops[`${who} ${k.replace(/^reason="(.*)"$/, "$1")}`] = d;
    }
  }
  const w: Window = {
    wallS,
    agentCpu: { sender: cpuDelta(a1, b1), receiver: cpuDelta(a2, b2) },
    system: systemDelta(s0, s1),
    counters: {
      sender: countersDelta(n1a, n1b),
      receiver: countersDelta(n2a, n2b),
      pod: countersDelta(npa, npb),
    },
    fwd: {
      txPackets: metricSum(m1b, "weft_udp_tx_packets_total") -
        metricSum(m1a, "weft_udp_tx_packets_total"),
      rxPackets: metricSum(m2b, "weft_udp_rx_packets_total") -
        metricSum(m2a, "weft_udp_rx_packets_total"),
      drops,
    },
    load1: load1(),
    runnable: [run0, run1],
  };
  return { result, w };
}

export interface TcpRun extends TcpResult {
  backend: string;
  streams: number;
  rep: number;
  window: Window;
}
export interface UdpRun extends UdpResult {
  backend: string;
  /**
   * Machine-wide CPU rate (CPU-seconds per second) without our traffic: the quieter of two idle
   * windows, just before and just after the run (other work on the machine comes and goes).
   */
  idleBusyRate: number;
  idleSoftirqRate: number;
  /** Share of all CPUs idle in that window (near 0: the machine is saturated by other work). */
  idleShare: number;
  window: Window;
}
export interface PingRun extends PingSeries {
  backend: string;
  /** "interval": --ping-interval apart; "back-to-back": ping -A, the path never idles. */
  mode: "interval" | "back-to-back";
}
export interface PhaseResult {
  backend: string;
  mtu: number;
  tcp: TcpRun[];
  udp: UdpRun[];
  ping: PingRun[];
  foreignIperf3: number;
  load1: number;
}

/** Machine-wide CPU over `seconds` without our traffic: what other work burns. */
export async function idleWindow(seconds: number): Promise<SystemCpu> {
  const a = systemCpu();
  await sleep(seconds * 1000);
  return systemDelta(a, systemCpu());
}

export function pcts(d: CpuDelta | null, wallS: number): string {
  if (!d || d.workers.length === 0) return "-";
  return d.workers.map((x) => `${Math.round((100 * x) / wallS)}%`).join("/");
}
