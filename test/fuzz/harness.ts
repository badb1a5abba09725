/**
 * The fuzzing harness: each `test/fuzz/<target>_fuzz.ts` exports a {@link FuzzTarget}, a list of
 * fast-check properties over one parser or codec. {@link runTarget} checks every property with a
 * given seed and case count and returns what a runner prints: cases, time, and for a failure
 * fast-check's report (seed, path and the shrunk counterexample, so it reproduces).
 * `test/unit/fuzz_test.ts` runs each target with a few hundred cases and a fixed seed;
 * `deno task fuzz` (test/fuzz/main.ts) with `FUZZ_RUNS` (default 10,000) per property and
 * `FUZZ_SEED` (default random).
 *
 * @example
 * ```ts
 * const r = runTarget(configTarget, { runs: fuzzRuns(10_000), seed: fuzzSeed() });
 * if (r.failures.length) console.log(r.failures.join("\n"));
 * ```
 */
import fc from "fast-check";

/** One property; `skip` names the open defect that makes it fail today (re-enable once fixed). */
export interface FuzzProperty {
  name: string;
  /** A synchronous fast-check property (any argument types). */
  // deno-lint-ignore no-explicit-any
  property: () => fc.IRawProperty<any, false>;
  skip?: string;
}

export interface FuzzTarget {
  name: string;
  properties: FuzzProperty[];
}

export interface TargetResult {
  target: string;
  cases: number;
  ms: number;
  /** One fast-check report per failed property (seed, path, counterexample). */
  failures: string[];
  /** "<property>: <defect>" per skipped property. */
  skipped: string[];
}

/** Cases per property: `FUZZ_RUNS` from the environment, else `dflt`. */
export function fuzzRuns(dflt: number): number {
  const v = Number(Deno.env.get("FUZZ_RUNS") ?? "");
  return Number.isSafeInteger(v) && v > 0 ? v : dflt;
}

/** The seed: `FUZZ_SEED` from the environment, else `dflt` (random when not given). */
export function fuzzSeed(dflt = (Math.random() * 2 ** 31) | 0): number {
  const text = Deno.env.get("FUZZ_SEED")?.trim() ?? "";
  const v = Number(text);
  return text !== "" && Number.isSafeInteger(v) ? v | 0 : dflt;
}

/**
 * Checks every property of `t`; skipped ones are listed, not run, unless `runSkipped` (to see
 * whether their defect is fixed).
 */
export function runTarget(
  t: FuzzTarget,
  o: { runs: number; seed: number; runSkipped?: boolean },
): TargetResult {
  const r: TargetResult = { target: t.name, cases: 0, ms: 0, failures: [], skipped: [] };
  const t0 = performance.now();
  for (const p of t.properties) {
    if (p.skip && !o.runSkipped) {
      r.skipped.push(`${p.name}: ${p.skip}`);
      continue;
    }
    const d = fc.check(p.property(), {
      numRuns: o.runs,
      seed: o.seed,
    });
    r.cases += d.numRuns;
    if (d.failed) {
      r.failures.push(
        `${t.name} / ${p.name} (FUZZ_SEED=${o.seed}):\n${fc.defaultReportMessage(d)}\n` +
          `Error: ${(d.errorInstance as Error)?.message ?? d.errorInstance}`,
      );
    }
  }
  r.ms = performance.now() - t0;
  return r;
}

type ErrorClass = abstract new (...args: never[]) => Error;

/**
 * Runs `f`: its value, or the error it threw when that is one of `types` and its message names
 * one of `names` (when given). Anything else (a TypeError, a RangeError from inside, an error
 * that does not say which field) is rethrown as the property's failure.
 */
export function valueOrTyped<T>(
  f: () => T,
  types: ErrorClass[],
  names?: readonly string[],
): { value: T } | { error: Error } {
  try {
    return { value: f() };
  } catch (e) {
    if (!types.some((c) => e instanceof c)) {
      throw new Error(
        `unexpected ${(e as Error)?.name ?? typeof e}: ${(e as Error)?.message ?? e}`,
        {
          cause: e,
        },
      );
    }
    const msg = (e as Error).message;
    if (names && !names.some((n) => msg.includes(n))) {
      throw new Error(`error does not name ${names.join(" or ")}: ${msg}`);
    }
    return { error: e as Error };
  }
}

/** JSON values that parsers are most likely to mishandle, mixed with arbitrary JSON. */
export function hostileJson(): fc.Arbitrary<unknown> {
  return fc.oneof(
    fc.constantFrom(
      null,
      true,
      false,
      0,
      -1,
      1.5,
      1e300,
      -0,
      "",
      " ",
      "0",
      "1e3",
      "0x10",
      "198.18.0.0/15",
      "198.18.0.1",
      "256.0.0.0",
      "::1",
      "true",
      [],
      {},
      [1],
      { "__proto__": 1 },
    ),
    fc.jsonValue({ maxDepth: 2 }),
    fc.string({ maxLength: 20 }),
    fc.integer(),
  );
}

/** Keys that collide with Object.prototype, for parsers that look names up in plain objects. */
export const PROTO_KEYS = ["__proto__", "constructor", "toString", "hasOwnProperty", "valueOf"];

/** Sets `key` on a parsed-JSON-like object as JSON.parse would (an own property, even __proto__). */
export function setOwn(o: Record<string, unknown>, key: string, v: unknown): void {
  Object.defineProperty(o, key, { value: v, enumerable: true, writable: true, configurable: true });
}
