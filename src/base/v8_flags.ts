/**
 * The V8 flags weft runs with. `--optimize-for-size` caps the young generation at 1 MiB
 * semi-spaces and makes the heap grow and shrink for memory rather than speed: an agent's work
 * comes in bursts (a list of 5000 leases, a reconcile) with little alive in between, and without
 * it V8 keeps the heap the burst grew to (an agent on Deno KV with 5000 peer leases: ~110 MiB RSS
 * with V8's defaults, ~75 MiB with this).
 *
 * `--expose-gc`: the agent runs one memory-reducing full GC 5 s after each full list and
 * reconcile (src/agent/heap_trim.ts). Without it the heap only grew: V8's memory reducer ran once,
 * 30 s after start, and each periodic re-list of 5000 peers left the heap a few MiB larger (an
 * etcd agent: 86 → 97 MiB RSS over 3 minutes).
 *
 * V8 flags cannot be set from inside a running program, so they are given where weft starts:
 * `deno task compile` bakes them into the executable (src/tools/compile.ts), `deno task weft`
 * passes them (deno.json; test/unit/v8_flags_test.ts keeps the two equal), and benchmarks start
 * agents with `DENO_V8_FLAGS` (which deno and compiled executables both read).
 *
 * @example
 * ```ts
 * const args = ["run", `--v8-flags=${V8_FLAGS.join(",")}`, "main.ts"];
 * const env = { DENO_V8_FLAGS: V8_FLAGS.join(",") };
 * ```
 */
export const V8_FLAGS: readonly string[] = [
  "--optimize-for-size",
  "--expose-gc",
];
