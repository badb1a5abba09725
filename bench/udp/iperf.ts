/**
 * Traffic probes for bench/udp.ts, each bounded in time and run inside the cluster's namespaces:
 * a long-lived iperf3 server in a pod, iperf3 TCP and fixed-rate UDP between two pods, and a
 * ping series with per-echo RTTs.
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

// ---- iperf3 ----

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

  /** Kills the server (one still running at exit is killed by the kit's exit hook). */
  async stop(): Promise<void> {
    await stopProcess(this.proc, "SIGKILL", 3000);
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
