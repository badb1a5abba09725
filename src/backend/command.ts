/**
 * Running a datapath tool (iptables-restore, nft) as a child process, optionally with a script on
 * stdin: the one process runner of the rule keepers. A tool that is not installed is a result with
 * code -1, never a throw, so callers decide whether its absence matters.
 *
 * @example
 * ```ts
 * const run = commandRunner(["ip", "netns", "exec", "ns1"]);
 * const r = await run(["nft", "-f", "-"], "add table ip flannel-ipv4\n");
 * if (r.code !== 0) console.error(r.stderr);
 * ```
 */

/** Result of one command. `code` -1 means it could not be started. */
export interface CmdResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `argv` (after the runner's prefix) with optional stdin. */
export type Runner = (argv: string[], stdin?: string) => Promise<CmdResult>;

/** A runner that spawns processes, each under `prefix` (e.g. `["ip","netns","exec","ns1"]`). */
export function commandRunner(prefix: string[] = [], timeoutMs = 30_000): Runner {
  return async (argv, stdin) => {
    const full = [...prefix, ...argv];
    let child: Deno.ChildProcess;
    try {
      child = new Deno.Command(full[0], {
        args: full.slice(1),
        stdin: stdin === undefined ? "null" : "piped",
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(timeoutMs),
      }).spawn();
    } catch (e) {
      const what = e instanceof Deno.errors.NotFound
        ? `"${full[0]}" was not found in PATH (install the package that provides it)`
        : String(e);
      return { code: -1, stdout: "", stderr: what };
    }
    if (stdin !== undefined) {
      const w = child.stdin.getWriter();
      await w.write(new TextEncoder().encode(stdin)).catch(() => {});
      await w.close().catch(() => {});
    }
    const out = await child.output();
    const dec = new TextDecoder();
    const stderr = dec.decode(out.stderr).trim() +
      (out.signal ? ` (killed by ${out.signal}, timeout ${timeoutMs} ms)` : "");
    return { code: out.code, stdout: dec.decode(out.stdout), stderr };
  };
}

/**
 * What an operator reads when `argv` (shown with `prefix`) failed: the command, how it failed,
 * its stderr, `hint` (what to do), and the script it was fed, if any.
 */
export function failureMessage(
  argv: string[],
  r: CmdResult,
  hint: string,
  input?: string,
  prefix: string[] = [],
): string {
  const cmd = [...prefix, ...argv].join(" ");
  const how = r.code === -1 ? "could not start" : `exited with ${r.code}`;
  let msg = `"${cmd}" ${how}: ${r.stderr || "(no stderr)"}. ${hint}`;
  if (input) msg += `\ninput was:\n${input}`;
  return msg;
}
