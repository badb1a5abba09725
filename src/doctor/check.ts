/**
 * What a doctor check reports: a status (`ok`, `warn`, `fail`), what it saw (naming the subnet,
 * address or device) and, for every warn and fail, the concrete fix. The exit code follows from
 * the worst status: 0 without a fail, 1 with one.
 *
 * @example
 * ```ts
 * const r = fail("kernel.route", "no route for 198.19.5.0/24 (peer 198.18.0.12)",
 *   "restart the agent, or: ip route replace 198.19.5.0/24 via 198.19.5.0 dev flannel.1 onlink");
 * exitCodeOf([r]); // 1
 * ```
 */

export type Status = "ok" | "warn" | "fail";

export interface CheckResult {
  status: Status;
  /** Area and check, e.g. "registry.reachable", "kernel.route", "probe.overlay". */
  check: string;
  /** What was seen, naming the subnet, address or device concerned. */
  saw: string;
  /** The command or flag that fixes it (warn and fail only). */
  fix?: string;
  /** The subnet the check is about, when it is about one peer (for --peer and JSON users). */
  subnet?: string;
}

export function ok(check: string, saw: string, subnet?: string): CheckResult {
  return subnet ? { status: "ok", check, saw, subnet } : { status: "ok", check, saw };
}

export function warn(check: string, saw: string, fix: string, subnet?: string): CheckResult {
  return subnet ? { status: "warn", check, saw, fix, subnet } : { status: "warn", check, saw, fix };
}

export function fail(check: string, saw: string, fix: string, subnet?: string): CheckResult {
  return subnet ? { status: "fail", check, saw, fix, subnet } : { status: "fail", check, saw, fix };
}

/** 1 when any check failed, else 0. */
export function exitCodeOf(results: CheckResult[]): number {
  return results.some((r) => r.status === "fail") ? 1 : 0;
}

/** How many checks have each status. */
export function countByStatus(results: CheckResult[]): Record<Status, number> {
  const c = { ok: 0, warn: 0, fail: 0 };
  for (const r of results) c[r.status]++;
  return c;
}
