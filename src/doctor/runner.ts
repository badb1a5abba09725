/**
 * Runs doctor checks: each group of checks under its own time limit (a group that hangs becomes
 * one `fail` naming it, never a hung doctor), and {@link mapLimit} for per-peer work with bounded
 * parallelism (500 peers finish in seconds without opening 500 things at once).
 *
 * @example
 * ```ts
 * const results = await runGroups([{ name: "registry", run: () => registryChecks(f) }], 10_000);
 * const rtts = await mapLimit(peers, 32, (p) => prober.probe(p.ip, opts));
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

/** `fn` over `items` with at most `limit` running at once; results in the items' order. */
export async function mapLimit<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T, index: number) => Promise<R>,
): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  return out;
}
