/**
 * `deno task fuzz`: every target with FUZZ_RUNS cases per property (default 10,000), seeded from
 * FUZZ_SEED or at random (printed, so a failure reproduces with `FUZZ_SEED=<seed> deno task fuzz`).
 * Prints per target: cases, time, result; exits 1 when a property fails. `FUZZ_TARGET=<substring>`
 * runs only matching targets; `FUZZ_SKIPPED=1` also runs the properties skipped for open defects.
 *
 * @example
 * ```sh
 * FUZZ_SEED=1234 FUZZ_RUNS=20000 deno task fuzz
 * ```
 */
import { fuzzRuns, fuzzSeed, runTarget } from "./harness.ts";
import { TARGETS } from "./targets.ts";

const runs = fuzzRuns(10_000);
const seed = fuzzSeed();
const only = Deno.env.get("FUZZ_TARGET") ?? "";
const runSkipped = Deno.env.get("FUZZ_SKIPPED") === "1";
console.log(`fuzz: FUZZ_SEED=${seed} FUZZ_RUNS=${runs} (cases per property)`);
let failed = 0, cases = 0;
const t0 = performance.now();
for (const t of TARGETS) {
  if (only && !t.name.includes(only)) continue;
  const r = runTarget(t, { runs, seed, runSkipped });
  cases += r.cases;
  const result = r.failures.length ? `FAILED (${r.failures.length})` : "ok";
  console.log(
    `${t.name.padEnd(22)} ${String(r.cases).padStart(8)} cases ${
      (r.ms / 1000).toFixed(1).padStart(6)
    } s  ${result}${r.skipped.length ? `, ${r.skipped.length} skipped` : ""}`,
  );
  for (const s of r.skipped) console.log(`  skipped: ${s}`);
  for (const f of r.failures) console.log(f.replace(/^/gm, "  "));
  failed += r.failures.length;
}
console.log(
  `fuzz: ${cases} cases in ${((performance.now() - t0) / 1000).toFixed(1)} s, ` +
    `${failed ? `${failed} failed` : "all passed"} (FUZZ_SEED=${seed})`,
);
if (failed) Deno.exit(1);
