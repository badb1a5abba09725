/**
 * Measurement probes for bench/udp.ts, each bounded in time and run inside the cluster's
 * namespaces: iperf3 TCP and fixed-rate UDP between two pods, a ping series with per-echo RTTs,
 * CPU ticks of a process and its threads (/proc/<pid>/stat and task/<tid>/stat), machine-wide
 * CPU (/proc/stat), the udp backend's Prometheus counters, and a host namespace's drop counters
 * (flannel0 TX drops, UDP socket buffer errors).
 *
 * @example
 * ```ts
 * const srv = await IperfServer.start(c, p2, 5201, `${c.dir}/iperf3.log`);
 * const tcp = await iperfTcp(c, p1, p2.ip, 5201, { seconds: 5, streams: 4 });
 * const udp = await iperfUdp(c, p1, p2.ip, 5201, { seconds: 5, pps: 50_000, payload: 64 });
 * const rtt = await pingSeries(c, p1, p2.ip, { count: 200, intervalS: 0.01 });
 * await srv.stop();
 * ```
 */
import type { Cluster, NsRef, Pod } from "../../test/kit/cluster.ts";
import { run } from "../../test/kit/proc.ts";
import { type LoggedProcess, spawnLogged, stopProcess } from "../../test/kit/spawn.ts";

/** USER_HZ: /proc times are in these ticks. */
const CLK_TCK = 100;

// ---- iperf3 ----

/** Pids of long-lived children (iperf3 servers), killed synchronously if the bench is cut short. */
const liveChildren = new Set<number>();

/** SIGKILLs every iperf3 server still running (for unload and signal handlers). */
export function killChildrenSync(): void {
  for (const pid of liveChildren) {
    try {
      Deno.kill(pid, "SIGKILL");
    } catch { /* already gone */ }
  }
  liveChildren.clear();
}

/**
 * A long-lived `iperf3 -s` in a pod: kept for a whole phase so its CPU shows in iperf3's own
 * accounting and no client races a one-shot server's startup.
 */
export class IperfServer {
  private constructor(readonly proc: LoggedProcess, readonly port: number) {}

  static async start(c: Cluster, pod: Pod, port: number, logFile: string): Promise<IperfServer> {
    const proc = spawnLogged(
      ["ip", "netns", "exec", pod.netns, "iperf3", "-s", "-p", String(port)],
      logFile,
      { banner: `=== iperf3 server in ${pod.name} port ${port}` },
    );
    liveChildren.add(proc.pid);
    const s = new IperfServer(proc, port);
    // Listening is checked with ss rather than guessed with a sleep (bounded: 5 s).
    const end = Date.now() + 5000;
    while (Date.now() < end) {
      if (proc.status) break;
      const r = await c.run(pod, ["ss", "-Hltn", `sport = :${port}`], { timeoutMs: 3000 });
      if (r.stdout.trim() !== "") return s;
      await new Promise((r) => setTimeout(r, 50));
    }
    await s.stop();
    throw new Error(`iperf3 server in ${pod.name} did not listen on ${port} within 5 s`);
  }

  async stop(): Promise<void> {
    try {
      await stopProcess(this.proc, "SIGKILL", 3000);
    } finally {
      liveChildren.delete(this.proc.pid);
    }
  }
}

export interface TcpResult {
  /** Received bits per second (receiver side, omitted warm-up excluded). */
  bps: number;
  retransmits: number;
  /** iperf3's own CPU accounting (getrusage over the test), percent of one core. */
  clientCpuPct: number;
  serverCpuPct: number;
}

async function iperfJson(c: Cluster, from: NsRef, args: string[], timeoutMs: number) {
  const r = await run(["ip", "netns", "exec", c.nsOf(from), "iperf3", ...args, "-J"], {
    timeoutMs,
  });
  // deno-lint-ignore no-explicit-any -- iperf3's JSON, read field by field below
  let out: Record<string, any>;
  try {
    out = JSON.parse(r.stdout);
  } catch {
    throw new Error(
      `iperf3 ${args.join(" ")} gave no JSON (exit ${r.code}${r.timedOut ? ", timed out" : ""}): ` +
        (r.stderr.trim() || r.stdout.slice(0, 300)),
    );
  }
  if (out.error) throw new Error(`iperf3 ${args.join(" ")}: ${out.error}`);
  return out;
}

/** TCP from `from` to `ip` for `seconds` (after a 1 s omitted warm-up), `streams` parallel. */
export async function iperfTcp(
  c: Cluster,
  from: NsRef,
  ip: string,
  port: number,
  o: { seconds: number; streams: number },
): Promise<TcpResult> {
  const args = ["-c", ip, "-p", String(port), "-t", String(o.seconds), "-O", "1"];
  if (o.streams > 1) args.push("-P", String(o.streams));
  const out = await iperfJson(c, from, args, (o.seconds + 15) * 1000);
  return {
    bps: out.end.sum_received.bits_per_second,
    retransmits: out.end.sum_sent.retransmits ?? 0,
    clientCpuPct: out.end.cpu_utilization_percent.host_total,
    serverCpuPct: out.end.cpu_utilization_percent.remote_total,
  };
}

export interface UdpResult {
  offeredPps: number;
  /** Datagrams the client sent, per second. */
  sentPps: number;
  /** Datagrams the server received (sequence span minus lost), per second. */
  deliveredPps: number;
  delivered: number;
  lost: number;
  lossPct: number;
  seconds: number;
  clientCpuPct: number;
  serverCpuPct: number;
}

/** Fixed-rate UDP: `pps` datagrams/s of `payload` bytes each for `seconds`. */
export async function iperfUdp(
  c: Cluster,
  from: NsRef,
  ip: string,
  port: number,
  o: { seconds: number; pps: number; payload: number; window?: string },
): Promise<UdpResult> {
  // -b counts UDP payload bits.
  const bps = o.pps * o.payload * 8;
  const args = ["-c", ip, "-p", String(port), "-u", "-l", String(o.payload), "-b", String(bps)];
  args.push("-t", String(o.seconds));
  // -w: both ends' socket buffers (capped by net.core.rmem_max / wmem_max).
  if (o.window) args.push("-w", o.window);
  const out = await iperfJson(c, from, args, (o.seconds + 15) * 1000);
  const sent = out.end.sum_sent, recv = out.end.sum_received;
  const delivered = recv.packets - recv.lost_packets;
  return {
    offeredPps: o.pps,
    sentPps: sent.packets / sent.seconds,
    deliveredPps: delivered / recv.seconds,
    delivered,
    lost: recv.lost_packets,
    lossPct: recv.packets > 0 ? (100 * recv.lost_packets) / recv.packets : 100,
    seconds: recv.seconds,
    clientCpuPct: out.end.cpu_utilization_percent.host_total,
    serverCpuPct: out.end.cpu_utilization_percent.remote_total,
  };
}

// ---- ping ----

export interface PingSeries {
  sent: number;
  received: number;
  lossPct: number;
  rttMs: number[];
}

/**
 * `count` echoes `intervalS` apart (below 0.2 s needs root), or with `adaptive` each sent as
 * soon as the previous reply is back (ping -A: the path never goes idle); every RTT kept.
 */
export async function pingSeries(
  c: Cluster,
  from: NsRef,
  ip: string,
  o: { count: number; intervalS: number; adaptive?: boolean },
): Promise<PingSeries> {
  const deadline = Math.ceil(o.count * o.intervalS + 2);
  const args = ["ping", "-n", "-c", String(o.count), "-W", "1", "-w", String(deadline)];
  if (o.adaptive) args.push("-A");
  else args.push("-i", String(o.intervalS));
  args.push(ip);
  const r = await c.run(from, args, { timeoutMs: (deadline + 5) * 1000 });
  const rttMs = [...r.stdout.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1]));
  const tx = /(\d+) packets transmitted/.exec(r.stdout);
  const sent = tx ? Number(tx[1]) : 0;
  if (sent === 0) throw new Error(`ping ${ip} sent nothing: ${r.stderr.trim() || r.stdout}`);
  return { sent, received: rttMs.length, lossPct: (100 * (sent - rttMs.length)) / sent, rttMs };
}

// ---- CPU ----

function statTicks(text: string): number {
  // Fields after "(comm) ": state is f[0], utime f[11], stime f[12] (stat fields 14 and 15).
  const f = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return Number(f[11]) + Number(f[12]);
}

export interface ProcCpu {
  /** utime + stime of the whole process, seconds. */
  total: number;
  /** Per thread: comm, CPU seconds and voluntary context switches (sleeps), by tid. */
  threads: Map<number, { comm: string; cpu: number; sleeps: number }>;
}

/** CPU seconds of a live process and its threads; null when the process is gone. */
export function procCpu(pid: number): ProcCpu | null {
  try {
    const total = statTicks(Deno.readTextFileSync(`/proc/${pid}/stat`)) / CLK_TCK;
    const threads = new Map<number, { comm: string; cpu: number; sleeps: number }>();
    for (const e of Deno.readDirSync(`/proc/${pid}/task`)) {
      try {
        const text = Deno.readTextFileSync(`/proc/${pid}/task/${e.name}/stat`);
        const comm = text.slice(text.indexOf("(") + 1, text.lastIndexOf(")"));
        const status = Deno.readTextFileSync(`/proc/${pid}/task/${e.name}/status`);
        const v = /^voluntary_ctxt_switches:\s+(\d+)/m.exec(status);
        threads.set(Number(e.name), {
          comm,
          cpu: statTicks(text) / CLK_TCK,
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
