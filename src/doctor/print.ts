/**
 * The doctor's output: one line per check (`ok`, `warn` or `fail`, the check, what it saw, and
 * the fix after "fix:"), then a summary line; or the same as JSON.
 *
 * @example
 * ```ts
 * renderText([ok("registry.reachable", "etcd answered in 3 ms")]);
 * // "ok   registry.reachable: etcd answered in 3 ms\n\n1 ok, 0 warn, 0 fail\n"
 * ```
 */
import { type CheckResult, countByStatus, exitCodeOf } from "./check.ts";

/** One line for one result (no newline). */
export function renderLine(r: CheckResult): string {
  const fix = r.fix ? ` -- fix: ${r.fix}` : "";
  return `${r.status.padEnd(4)} ${r.check}: ${oneLine(r.saw)}${oneLine(fix)}`;
}

/** The text report: every result in order, then the counts. */
export function renderText(results: CheckResult[]): string {
  const c = countByStatus(results);
  return results.map(renderLine).join("\n") +
    `\n\n${c.ok} ok, ${c.warn} warn, ${c.fail} fail\n`;
}

/** The JSON report: the checks, their counts and the exit code. */
export function renderJson(results: CheckResult[]): string {
  return JSON.stringify(
    { checks: results, summary: countByStatus(results), exitCode: exitCodeOf(results) },
    null,
    2,
  ) + "\n";
}

/** Registry content and error text can hold newlines; a check is one line. */
function oneLine(s: string): string {
  return s.replace(/[\r\n]+/g, " ");
}
