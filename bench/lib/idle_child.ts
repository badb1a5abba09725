/**
 * Baseline process for memory measurements: a deno process that does nothing for a while, either
 * bare (the runtime's floor) or after loading weft's whole CLI module graph without running it
 * (`--load-weft`: what the code alone costs). Exits by itself after `--seconds`.
 *
 * @example
 * ```sh
 * deno run -A bench/lib/idle_child.ts --seconds 30 --load-weft
 * ```
 */
import { parseArgs } from "node:util";

const { values: v } = parseArgs({
  args: Deno.args,
  options: {
    seconds: { type: "string", default: "60" },
    "load-weft": { type: "boolean", default: false },
  },
});
if (v["load-weft"]) await import("../../src/cli/main.ts");
console.log("ready");
await new Promise((r) => setTimeout(r, Number(v.seconds) * 1000));
