/**
 * The control-plane benchmark's command line: flags, defaults and `--help` text (unchanged from
 * when the benchmark was one file; other tools and the README rely on them).
 *
 * @example
 * ```ts
 * const opt = parseFlags(Deno.args); // exits 0 after printing the usage on --help
 * opt.sizes; // "50,200"
 * ```
 */
import { parseArgs } from "node:util";

export const USAGE =
  `Usage: deno run -A bench/control_plane.ts [--registries kv,etcd] [--sizes 50,200]
  [--wave 50] [--wave-timeout-s 180] [--min-free-mib 3072] [--latency-agents 3]
  [--latency-leases 100] [--latency-interval-ms 50] [--latency-ttl 600 (0 = none)]
  [--idle-seconds 10]
  [--skip convergence,latency] [--deadline-min 30]`;

/** Parses the flags (strings, as given); prints the usage and exits on --help. */
export function parseFlags(args: string[]) {
  const { values: opt } = parseArgs({
    args,
    options: {
      registries: { type: "string", default: "kv,etcd" },
      sizes: { type: "string", default: "50,200" },
      wave: { type: "string", default: "50" },
      "wave-timeout-s": { type: "string", default: "180" },
      "min-free-mib": { type: "string", default: "3072" },
      "latency-agents": { type: "string", default: "3" },
      "latency-leases": { type: "string", default: "100" },
      "latency-interval-ms": { type: "string", default: "50" },
      "latency-ttl": { type: "string", default: "600" },
      "idle-seconds": { type: "string", default: "10" },
      skip: { type: "string", default: "" },
      "deadline-min": { type: "string", default: "30" },
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
