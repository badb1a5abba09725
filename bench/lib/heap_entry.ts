/**
 * The agent (main.ts) with a heap snapshot on SIGUSR2, for benchmarks that ask where an agent's
 * memory goes (`scale/event_cost.ts --heap-snapshot-dir`): each signal writes
 * `$WEFT_HEAP_SNAPSHOT_DIR/weft-<pid>-<n>.heapsnapshot` (Chrome DevTools' format; `heap_summary.ts`
 * sums it by constructor). Started as a test cluster's agent entry (`entry` of test/kit/cluster.ts).
 *
 * @example
 * ```ts
 * c.startAgent("h1", { entry: HEAP_ENTRY, env: { WEFT_HEAP_SNAPSHOT_DIR: "/tmp/snaps" } });
 * agent.signal("SIGUSR2");
 * ```
 */
import { writeHeapSnapshot } from "node:v8";
import { main } from "../../src/cli/main.ts";

export const HEAP_ENTRY = new URL(import.meta.url).pathname;

if (import.meta.main) {
  const dir = Deno.env.get("WEFT_HEAP_SNAPSHOT_DIR") ?? "/tmp";
  let n = 0;
  Deno.addSignalListener("SIGUSR2", () => {
    writeHeapSnapshot(`${dir}/weft-${Deno.pid}-${n++}.heapsnapshot`);
  });
  Deno.exit(await main(Deno.args));
}
