/**
 * Runs doctor checks: each group of checks under its own time limit (a group that hangs becomes
 * one `fail` naming it, never a hung doctor). Per-peer work uses mapLimit (src/health/parallel.ts).
 *
 * @example
 * ```ts
 * const results = await runGroups([{ name: "registry", run: () => registryChecks(f) }], 10_000);
 * ```
 */
import { withTimeout } from "../base/async.ts";
import { type CheckResult, fail } from "./check.ts";

export interface CheckGroup {
  name: string;
  /** Gets the results of the groups before it (later checks can explain themselves by them). */
  /** Overrides the common time limit (e.g. probes, which grow with the peers). */
  timeoutMs?: number;
  run: (before: readonly CheckResult[]) => Promise<CheckResult[]> | CheckResult[];
}

/**
 * Runs the groups one after another (their order is the report's), each bounded by `timeoutMs`;
 * an exception or timeout in a group is a `fail` for that group.
 */
export async function runGroups(groups: CheckGroup[], timeoutMs: number): Promise<CheckResult[]> {
  const out: CheckResult[] = [];
  for (const g of groups) {
    try {
      out.push(
        ...await withTimeout(Promise.resolve(out).then(g.run), g.timeoutMs ?? timeoutMs, g.name),
      );
    } catch (e) {
      out.push(
        fail(
          `${g.name}.error`,
          `the ${g.name} checks could not run: ${(e as Error).message}`,
          "fix the error above and run weft doctor again",
        ),
      );
    }
  }
  return out;
}
