/**
 * Counter probes for bench/udp.ts: CPU ticks of a process and its threads (/proc/<pid>/stat and
 * task/<tid>/stat), machine-wide CPU (/proc/stat), the udp backend's Prometheus counters, and a
 * host namespace's drop counters (flannel0 TX drops, UDP socket buffer errors). Traffic probes
 * (iperf3, ping) are in ./iperf.ts.
 *
 * @example
 * ```ts
 * const a = procCpu(agent.pid), s0 = systemCpu(), n0 = await nsCounters(c, h1, "flannel0");
 * // ... traffic ...
 * const d = cpuDelta(a, procCpu(agent.pid)); // d.workers: the packet Worker threads' seconds
 * ```
 */
import type { Cluster, NsRef } from "../../test/kit/cluster.ts";
import { CLK_TCK, statCpuTicks } from "../lib/sys.ts";

// ---- CPU ----

export interface ProcCpu {
  /** utime + stime of the whole process, seconds. */
  total: number;
  /** Per thread: comm, CPU seconds and voluntary context switches (sleeps), by tid. */
  threads: Map<number, { comm: string; cpu: number; sleeps: number }>;
}

/** CPU seconds of a live process and its threads; null when the process is gone. */
export function procCpu(pid: number): ProcCpu | null {
  try {
    const total = statCpuTicks(Deno.readTextFileSync(`/proc/${pid}/stat`)) / CLK_TCK;
    const threads = new Map<number, { comm: string; cpu: number; sleeps: number }>();
    for (const e of Deno.readDirSync(`/proc/${pid}/task`)) {
      try {
        const text = Deno.readTextFileSync(`/proc/${pid}/task/${e.name}/stat`);
        const comm = text.slice(text.indexOf("(") + 1, text.lastIndexOf(")"));
        const status = Deno.readTextFileSync(`/proc/${pid}/task/${e.name}/status`);
        const v = /^voluntary_ctxt_switches:\s+(\d+)/m.exec(status);
        threads.set(Number(e.name), {
          comm,
          cpu: statCpuTicks(text) / CLK_TCK,
          sleeps: v ? Number(v[1]) : 0,
        });
      } catch { /* thread ended */ }
    }
    return { total, threads };
  } catch {
    return null;
  }
}

export interface CpuDelta {
  /** Process CPU seconds over the window. */
  total: number;
  /**
   * The packet Workers' threads ("worker-N" by Deno, in creation order: [0] is the tx worker
   * TUN → UDP, [1] the rx worker UDP → TUN, as perf confirms: tun_do_read runs in the first),
   * seconds.
   */
  workers: number[];
  /** Voluntary context switches of those threads (each a sleep in poll(), so a wake-up). */
  workerSleeps: number[];
}

/** CPU used between two samples of one process. */
export function cpuDelta(a: ProcCpu | null, b: ProcCpu | null): CpuDelta | null {
  if (!a || !b) return null;
  const workers: number[] = [];
  const workerSleeps: number[] = [];
  const tids = [...b.threads.keys()].sort((x, y) => x - y);
  for (const tid of tids) {
    const t = b.threads.get(tid)!;
    if (!t.comm.startsWith("worker-")) continue;
    workers.push(t.cpu - (a.threads.get(tid)?.cpu ?? 0));
    workerSleeps.push(t.sleeps - (a.threads.get(tid)?.sleeps ?? 0));
  }
  return { total: b.total - a.total, workers, workerSleeps };
}

export interface SystemCpu {
  /** Seconds summed over all CPUs since boot. */
  busy: number;
  softirq: number;
  idle: number;
}

/** Threads runnable right now, machine-wide (procs_running of /proc/stat). */
export function runnable(): number {
  const m = /^procs_running (\d+)/m.exec(Deno.readTextFileSync("/proc/stat"));
  return m ? Number(m[1]) : 0;
}

/** Machine-wide CPU from /proc/stat (all namespaces: other work on the machine counts too). */
export function systemCpu(): SystemCpu {
  const line = Deno.readTextFileSync("/proc/stat").split("\n")[0];
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system, idle, iowait, irq, softirq, steal] = v;
  return {
    busy: (user + nice + system + irq + softirq + steal) / CLK_TCK,
    softirq: softirq / CLK_TCK,
    idle: (idle + iowait) / CLK_TCK,
  };
}

export function systemDelta(a: SystemCpu, b: SystemCpu): SystemCpu {
  return { busy: b.busy - a.busy, softirq: b.softirq - a.softirq, idle: b.idle - a.idle };
}

// ---- counters in a host namespace ----

/** The agent's /metrics, fetched inside the host namespace (bash /dev/tcp: no extra tool). */
export async function scrapeMetrics(c: Cluster, host: NsRef, port: number): Promise<string> {
  const script = `exec 3<>/dev/tcp/127.0.0.1/${port} || exit 7
printf 'GET /metrics HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3
cat <&3`;
  const r = await c.run(host, ["bash", "-c", script], { timeoutMs: 5000 });
  return r.code === 0 ? r.stdout : "";
}

/** Sum of every sample of metric `name` (all label sets), 0 when absent. */
export function metricSum(text: string, name: string): number {
  let sum = 0;
  for (const l of text.split("\n")) {
    if (l.startsWith(`${name} `) || l.startsWith(`${name}{`)) sum += Number(l.split(" ").pop());
  }
  return sum;
}

/** `name{labels}` samples of one metric as label text → value. */
export function metricByLabel(text: string, name: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const l of text.split("\n")) {
    if (!l.startsWith(`${name}{`)) continue;
    const close = l.lastIndexOf("}");
    out[l.slice(name.length + 1, close)] = Number(l.slice(close + 1).trim());
  }
  return out;
}

export interface NsCounters {
  /** TX drops of a device (for flannel0: the TUN queue overflowed before weft read it). */
  devTxDropped: number;
  devRxDropped: number;
  /** /proc/net/snmp Udp: receive buffer overflows, send buffer errors, all input errors. */
  udpRcvbufErrors: number;
  udpSndbufErrors: number;
  udpInErrors: number;
}

/** Drop counters of `dev` and the namespace's UDP stack. */
export async function nsCounters(c: Cluster, host: NsRef, dev: string): Promise<NsCounters> {
  const [link, snmp] = await Promise.all([
    c.run(host, ["ip", "-s", "-j", "link", "show", dev], { timeoutMs: 5000 }),
    c.run(host, ["cat", "/proc/net/snmp"], { timeoutMs: 5000 }),
  ]);
  let tx = 0, rx = 0;
  try {
    const s = JSON.parse(link.stdout)[0].stats64;
    tx = s.tx.dropped;
    rx = s.rx.dropped;
  } catch { /* device absent: zeros */ }
  const udp = snmp.stdout.split("\n").filter((l) => l.startsWith("Udp: "));
  const field = (name: string) => {
    if (udp.length < 2) return 0;
    const i = udp[0].split(" ").indexOf(name);
    return i < 0 ? 0 : Number(udp[1].split(" ")[i]);
  };
  return {
    devTxDropped: tx,
    devRxDropped: rx,
    udpRcvbufErrors: field("RcvbufErrors"),
    udpSndbufErrors: field("SndbufErrors"),
    udpInErrors: field("InErrors"),
  };
}

export function countersDelta(a: NsCounters, b: NsCounters): NsCounters {
  return {
    devTxDropped: b.devTxDropped - a.devTxDropped,
    devRxDropped: b.devRxDropped - a.devRxDropped,
    udpRcvbufErrors: b.udpRcvbufErrors - a.udpRcvbufErrors,
    udpSndbufErrors: b.udpSndbufErrors - a.udpSndbufErrors,
    udpInErrors: b.udpInErrors - a.udpInErrors,
  };
}
