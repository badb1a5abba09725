/**
 * The fuzz targets of test/fuzz in the unit suite: each with a few hundred cases (100 per
 * property) and a fixed seed, so a failure here reproduces exactly; the report carries the seed,
 * path and shrunk counterexample. `deno task fuzz` runs the same properties at ≥ 10,000 cases.
 */
import { runTarget } from "../fuzz/harness.ts";
import { TARGETS } from "../fuzz/targets.ts";

const SEED = 0x5eed10;
const RUNS = 100;

for (const t of TARGETS) {
  Deno.test(`fuzz: ${t.name} (${RUNS} cases per property, seed ${SEED})`, () => {
    const r = runTarget(t, { runs: RUNS, seed: SEED });
    if (r.failures.length) throw new Error(r.failures.join("\n\n"));
  });
}
