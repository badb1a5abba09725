/**
 * The udp benchmark's command line (flags, defaults and `--help` text, unchanged from when the
 * benchmark was one file) and the run context every phase reads: the decoded parameters `P`,
 * the backends' network configs, the report, and the whole-run deadline (`fits`).
 *
 * @example
 * ```ts
 * const ctx = udpContext(parseFlags(Deno.args)); // exits 2 on a bad flag or without root
 * if (ctx.fits("vxlan ping", 12)) { ... }
 * ```
 */
import { parseArgs } from "node:util";
import { Report } from "../lib/report.ts";

export const USAGE =
  `Usage: deno run -A bench/udp.ts [--registry kv|etcd] [--backends udp,udp-plain,vxlan]
  [--seconds 5] [--reps 3] [--streams 1,4] [--rates 25000,50000,100000] [--pps-seconds 5]
  [--payload 64] [--pod-sockbuf 2M] [--pings 200] [--ping-interval 0.01] [--baseline-seconds 2]
  [--skip tcp,pps,ping,cpu] [--deadline-s 420]`;

/** Parses the flags (strings, as given); prints the usage and exits on --help. */
export function parseFlags(args: string[]) {
  const { values: opt } = parseArgs({
    args,
    options: {
      registry: { type: "string", default: "kv" },
      backends: { type: "string", default: "udp,udp-plain,vxlan" },
      seconds: { type: "string", default: "5" },
      reps: { type: "string", default: "3" },
      streams: { type: "string", default: "1,4" },
      rates: { type: "string", default: "25000,50000,100000" },
      "pps-seconds": { type: "string", default: "5" },
      payload: { type: "string", default: "64" },
      "pod-sockbuf": { type: "string", default: "" },
      pings: { type: "string", default: "200" },
      "ping-interval": { type: "string", default: "0.01" },
      "baseline-seconds": { type: "string", default: "2" },
      skip: { type: "string", default: "" },
      "deadline-s": { type: "string", default: "420" },
      help: { type: "boolean", default: false },
    },
  });
  if (opt.help) {
    console.log(USAGE);
    Deno.exit(0);
  }
  return opt;
}

export type Flags = ReturnType<typeof parseFlags>;

/** A positive number option, or exit 2 naming the flag. */
function num(name: string, v: string, int = true): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0 || (int && !Number.isInteger(n))) {
    console.error(
      `bench/udp.ts: --${name} ${v}: expected a positive ${int ? "integer" : "number"}`,
    );
    Deno.exit(2);
  }
  return n;
}
const list = (name: string, v: string) => v.split(",").filter(Boolean).map((x) => num(name, x));

/**
 * The backends a run can measure, as network config Backend objects: the udp backend as it
 * ships (TUN offloads on), the same without TUN offloads (the same-run baseline of that
 * change), and kernel vxlan (the reference of the goals).
 */
export const BACKEND_CONFIGS: Record<string, Record<string, unknown>> = {
  udp: { Type: "udp" },
  "udp-plain": { Type: "udp", TunOffload: false },
  vxlan: { Type: "vxlan" },
};

/** Agents' /metrics port (the udp backend's counters). */
export const HEALTHZ = 8472;
export const IPERF_PORT = 5201;

/** Validates the flags (exit 2 naming a bad one; root needed) into the run's context. */
export function udpContext(opt: Flags) {
  if (Deno.uid() !== 0) {
    console.error("bench/udp.ts needs root (it creates network namespaces)");
    Deno.exit(2);
  }
  const registry = opt.registry as "kv" | "etcd";
  if (registry !== "kv" && registry !== "etcd") {
    console.error(`bench/udp.ts: --registry ${opt.registry}: expected kv or etcd`);
    Deno.exit(2);
  }
  const backends = opt.backends.split(",").filter(Boolean);
  for (const b of backends) {
    if (!(b in BACKEND_CONFIGS)) {
      console.error(
        `bench/udp.ts: --backends: "${b}" is not one of ${Object.keys(BACKEND_CONFIGS).join(", ")}`,
      );
      Deno.exit(2);
    }
  }
  const P = {
    /** iperf3 -w for the fixed-rate runs ("" = iperf3's default socket buffers). */
    podSockBuf: opt["pod-sockbuf"],
    seconds: num("seconds", opt.seconds),
    reps: num("reps", opt.reps),
    streams: list("streams", opt.streams),
    rates: list("rates", opt.rates),
    ppsSeconds: num("pps-seconds", opt["pps-seconds"]),
    payload: num("payload", opt.payload),
    pings: num("pings", opt.pings),
    pingInterval: num("ping-interval", opt["ping-interval"], false),
    baselineSeconds: num("baseline-seconds", opt["baseline-seconds"], false),
    deadlineS: num("deadline-s", opt["deadline-s"]),
  };
  const skip = new Set(opt.skip.split(",").filter(Boolean));

  const started = Date.now();
  const deadline = started + P.deadlineS * 1000;
  const report = new Report("udp", { registry, backends, ...P, skip: [...skip] });

  /** True when `needS` more seconds fit before the deadline (else the step is skipped, noted). */
  function fits(what: string, needS: number): boolean {
    if (Date.now() + needS * 1000 <= deadline) return true;
    report.problem(`skipped ${what}: it would not finish before the ${P.deadlineS} s deadline`);
    return false;
  }
  return { registry, backends, P, skip, started, deadline, report, fits };
}

export type UdpCtx = ReturnType<typeof udpContext>;
