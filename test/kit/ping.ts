/**
 * Bounded ICMP echo from inside a namespace with iputils `ping`, parsed into numbers. Losing
 * packets is a result, not an error: callers assert on `received`.
 *
 * @example
 * ```ts
 * const r = await pingFromNs("wharn-w3k9z1-h1", "198.18.0.12", { count: 3 });
 * // { sent: 3, received: 3, rttAvgMs: 0.06, error: null }
 * ```
 */
import { run } from "./proc.ts";

export interface PingOptions {
  /** Echo requests to send; default 3, at most 1000. */
  count?: number;
  /** Seconds to wait for each reply; default 2. */
  timeoutS?: number;
  /** Seconds between requests; default 0.2. */
  intervalS?: number;
  /** Payload size in bytes (ping -s); default ping's 56. Use it to test MTU. */
  size?: number;
  /** Set the DF bit (ping -M do), so an oversized packet fails instead of fragmenting. */
  dontFragment?: boolean;
}

export interface PingResult {
  sent: number;
  received: number;
  /** Average round trip in ms; null when nothing came back. */
  rttAvgMs: number | null;
  /** ping's complaint when it could not send at all (e.g. "Network is unreachable"). */
  error: string | null;
}

export async function pingFromNs(
  ns: string,
  ip: string,
  opts: PingOptions = {},
): Promise<PingResult> {
  const count = opts.count ?? 3;
  const timeoutS = opts.timeoutS ?? 2;
  const intervalS = opts.intervalS ?? 0.2;
  if (!Number.isInteger(count) || count < 1 || count > 1000) {
    throw new RangeError(`ping count ${count} must be an integer in 1..1000`);
  }
  // -w is ping's own overall deadline; the process deadline below is a backstop over it.
  const deadlineS = Math.ceil(count * intervalS + timeoutS);
  const args = ["-n", "-q", "-c", String(count), "-i", String(intervalS), "-W", String(timeoutS)];
  args.push("-w", String(deadlineS));
  if (opts.size !== undefined) args.push("-s", String(opts.size));
  if (opts.dontFragment) args.push("-M", "do");
  const r = await run(["ip", "netns", "exec", ns, "ping", ...args, ip], {
    timeoutMs: (deadlineS + 5) * 1000,
  });
  return parsePing(r.stdout, r.stderr);
}

/** Parses iputils ping summary lines. */
export function parsePing(stdout: string, stderr = ""): PingResult {
  const counts = /(\d+) packets transmitted, (\d+) (?:packets )?received/.exec(stdout);
  const rtt = /= [\d.]+\/([\d.]+)\/[\d.]+/.exec(stdout);
  const sent = counts ? Number(counts[1]) : 0;
  return {
    sent,
    received: counts ? Number(counts[2]) : 0,
    rttAvgMs: rtt ? Number(rtt[1]) : null,
    error: sent === 0 ? (stderr.trim() || stdout.trim() || "ping sent nothing") : null,
  };
}
