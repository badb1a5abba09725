/**
 * Bounded child-process helpers for the test kit: every command gets a deadline, and a failure
 * message names the command, its exit code and its stderr, so a red test says why. `waitFor` is
 * the kit's one bounded poll.
 *
 * @example
 * ```ts
 * const out = await runOk(["ip", "netns", "list"]);          // throws with stderr on failure
 * const r = await run(["ping", "-c1", "198.18.0.2"], { timeoutMs: 3000 }); // never throws on exit code
 * await waitFor("etcd healthy", () => isHealthy(), { timeoutMs: 10_000 });
 * ```
 */
import { sleep } from "../../src/base/async.ts";

export { sleep };

export interface RunResult {
  code: number;
  /** True when the deadline killed the command. */
  timedOut: boolean;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  /** Kill the command (SIGKILL) after this long; default 10 s. */
  timeoutMs?: number;
  /** Text written to the command's stdin. */
  stdin?: string;
  env?: Record<string, string>;
  cwd?: string;
}

/** Default per-command deadline: `ip`/`sysctl` answer in milliseconds, so 10 s means "stuck". */
export const DEFAULT_TIMEOUT_MS = 10_000;

/** Runs `cmd` to completion (or its deadline) and returns exit code and output; never throws on exit code. */
export async function run(cmd: string[], opts: RunOptions = {}): Promise<RunResult> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const child = new Deno.Command(cmd[0], {
    args: cmd.slice(1),
    stdin: opts.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
    env: opts.env,
    cwd: opts.cwd,
  }).spawn();
  let timedOut = false;
  // A plain timer (not AbortSignal.timeout) so it is always cleared and never trips test sanitizers.
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
  }, timeoutMs);
  try {
    if (opts.stdin !== undefined) {
      const w = child.stdin.getWriter();
      await w.write(new TextEncoder().encode(opts.stdin));
      await w.close();
    }
    const out = await child.output();
    const dec = new TextDecoder();
    return {
      code: out.code,
      timedOut,
      stdout: dec.decode(out.stdout),
      stderr: dec.decode(out.stderr),
    };
  } finally {
    clearTimeout(timer);
  }
}

/** Error from {@link runOk}: carries the command and its result for callers that want details. */
export class CommandError extends Error {
  override name = "CommandError";
  constructor(readonly cmd: string[], readonly result: RunResult) {
    const why = result.timedOut ? "timed out and was killed" : `exited with code ${result.code}`;
    super(
      `command \`${cmd.join(" ")}\` ${why}: ${
        result.stderr.trim() || result.stdout.trim() || "(no output)"
      }`,
    );
  }
}

/** Runs `cmd` and returns its stdout; throws {@link CommandError} on a non-zero exit or timeout. */
export async function runOk(cmd: string[], opts: RunOptions = {}): Promise<string> {
  const r = await run(cmd, opts);
  if (r.code !== 0 || r.timedOut) throw new CommandError(cmd, r);
  return r.stdout;
}

export interface WaitOptions {
  timeoutMs: number;
  /** Poll period; default 100 ms. */
  intervalMs?: number;
  /**
   * When true, any error `check` throws ends the wait at once (as a failed check should), instead
   * of meaning "not yet". Default false.
   */
  stopOnError?: boolean;
}

/**
 * Polls `check` until it returns a non-undefined, non-false value, or throws after `timeoutMs`
 * naming `what` and the last error `check` threw (if any). `check` may throw to say "not yet"
 * (unless `stopOnError`); it may also throw {@link StopWaiting} to give up at once (e.g. the
 * process died). The kit's one bounded wait: tests wait with this and nothing else.
 */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined | false> | T | undefined | false,
  opts: WaitOptions,
): Promise<T> {
  const deadline = Date.now() + opts.timeoutMs;
  const interval = opts.intervalMs ?? 100;
  let lastError: unknown = undefined;
  // Bounded: the loop ends at the deadline whatever `check` does (each check must itself be bounded).
  while (true) {
    try {
      const v = await check();
      if (v !== undefined && v !== false) return v;
    } catch (e) {
      if (e instanceof StopWaiting) throw e;
      if (opts.stopOnError) {
        throw new StopWaiting(`${what}: ${e instanceof Error ? e.message : e}`, { cause: e });
      }
      lastError = e;
    }
    if (Date.now() >= deadline) break;
    await sleep(Math.min(interval, Math.max(0, deadline - Date.now())));
  }
  const last = lastError instanceof Error ? ` (last error: ${lastError.message})` : "";
  throw new Error(`timed out after ${opts.timeoutMs} ms waiting for ${what}${last}`);
}

/** Thrown from a {@link waitFor} check to abort the wait immediately with this message. */
export class StopWaiting extends Error {
  override name = "StopWaiting";
}
