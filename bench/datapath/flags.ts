/**
 * The datapath benchmark's command line: flags, defaults and `--help` text (unchanged from when
 * the benchmark was one file), and the run context every phase reads.
 *
 * @example
 * ```ts
 * const ctx = datapathContext(parseFlags(Deno.args)); // exits on --help or without root
 * ctx.backends; // ["vxlan", "host-gw"]
 * ```
 */
import { parseArgs } from "node:util";
import { Report } from "../lib/report.ts";
import { Deadline } from "../lib/sys.ts";

export const USAGE =
  `Usage: deno run -A bench/datapath.ts [--registry etcd|kv] [--backends vxlan,host-gw]
  [--families 4,6] [--rounds 3] [--iperf-seconds 5] [--sizes 1000,5000] [--prog-reps 5]
  [--latency-leases 100] [--latency-interval-ms 50]
  [--skip throughput,latency,programming,e2e] [--deadline-min 25]

  --families 4,6  the address families measured (default both). With 6 the cluster runs dual
                  stack (EnableIPv6; pods get an IPv4 and an IPv6 address) and every phase
                  runs on it: throughput gets IPv6 rows beside the IPv4 ones (from the same
                  rounds), programming gets dual-stack rows (family 4+6). --families 4 runs the
                  IPv4-only cluster of earlier runs.`;

/** Parses the flags (strings, as given); prints the usage and exits on --help. */
export function parseFlags(args: string[]) {
  const { values: opt } = parseArgs({
    args,
    options: {
      registry: { type: "string", default: "etcd" },
      rounds: { type: "string", default: "3" },
      "iperf-seconds": { type: "string", default: "5" },
      sizes: { type: "string", default: "1000,5000" },
      "prog-reps": { type: "string", default: "5" },
      "latency-leases": { type: "string", default: "100" },
      "latency-interval-ms": { type: "string", default: "50" },
      backends: { type: "string", default: "vxlan,host-gw" },
      families: { type: "string", default: "4,6" },
      skip: { type: "string", default: "" },
      "deadline-min": { type: "string", default: "25" },
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

/** What every datapath phase reads: the flags, decoded, and the one report and deadline. */
export interface DatapathCtx {
  opt: Flags;
  registry: "etcd" | "kv";
  backends: ("vxlan" | "host-gw")[];
  /** 4 and/or 6 (`--families`); with 6 the cluster is dual stack. */
  families: (4 | 6)[];
  sizes: number[];
  skip: Set<string>;
  deadline: Deadline;
  report: Report;
}

/** Checks root and the flags' values; exits 2 without root. */
export function datapathContext(opt: Flags): DatapathCtx {
  if (Deno.uid() !== 0) {
    console.error("bench/datapath.ts needs root (it creates network namespaces)");
    Deno.exit(2);
  }
  const registry = opt.registry as "etcd" | "kv";
  if (registry !== "etcd" && registry !== "kv") throw new Error("--registry: etcd or kv");
  const families = [...new Set(opt.families.split(",").filter(Boolean).map(Number))].sort();
  if (families.length === 0 || families.some((f) => f !== 4 && f !== 6)) {
    throw new Error(`--families "${opt.families}": give 4, 6 or 4,6`);
  }
  return {
    opt,
    registry,
    backends: opt.backends.split(",").filter(Boolean) as ("vxlan" | "host-gw")[],
    families: families as (4 | 6)[],
    sizes: opt.sizes.split(",").filter(Boolean).map(Number),
    skip: new Set(opt.skip.split(",").filter(Boolean)),
    deadline: new Deadline(Number(opt["deadline-min"]) * 60_000),
    report: new Report("datapath", { ...opt }),
  };
}
