/**
 * The V8 flags weft runs with. `--optimize-for-size` caps the young generation at 1 MiB
 * semi-spaces and makes the heap grow and shrink for memory rather than speed: an agent's work
 * comes in bursts (a list of 5000 leases, a reconcile) with little alive in between, and without
 * it V8 keeps the heap the burst grew to (an agent on Deno KV with 5000 peer leases: ~110 MiB RSS
 * with V8's defaults, ~75 MiB with this).
 *
 * `--expose-gc`: the agent runs one memory-reducing full GC 1 s after each full list and
 * reconcile (src/agent/heap_trim.ts). Without it the heap only grew: V8's memory reducer ran once,
 * 30 s after start, and each periodic re-list of 5000 peers left the heap a few MiB larger (an
 * etcd agent: 86 → 97 MiB RSS over 3 minutes).
 *
 * The price is CPU (measured session 6, bench/README.md "V8 flags"): besides the 1 MiB semi-spaces
 * (its one flag implication), V8 checks `--optimize-for-size` itself and makes every full GC a
 * memory-reducing, compacting one. 25 KV lists of 5000 leases: 382 scavenges and 20 such GCs, 69
 * ms of CPU per list, against 19 scavenges, 2 full GCs and 35 ms with `--expose-gc` alone; the
 * periodic round of 5000 peers (relist + reconcile) costs about twice as much with it (kv vxlan
 * 234 against 119 ms, medians of 11 interleaved passes). It is kept because without it an etcd
 * agent with 5000 peers holds ~1 MiB more (re-list peaks 85–98 MiB against 83–92) while one with no
 * peers holds ~3 MiB less, so 5000 peers / no peers was 1.04–1.15 (over the ≤ 1.10 goal in 3 of 10
 * windows) against 1.02–1.08 with it; and the round's ≤ 50 ms goal is missed either way (the
 * cheapest set still 65–157 ms). `--expose-gc,--max-semi-space-size=1` (0.40–0.73 of this round
 * in 4 passes; etcd 1.03–1.07 in 5 windows) is the middle candidate.
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
