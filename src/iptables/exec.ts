/**
 * Running the iptables binaries: the one place where weft shells out, as flannel does (the rule
 * syntax is the binary's, and going through it keeps weft working on both iptables-nft and
 * legacy). Picks the flavour already in use, probes `--random-fully`, and turns a failed command
 * into an {@link IptablesError} that names the command, its stderr and what to do.
 *
 * @example
 * ```ts
 * const run = commandRunner(["ip", "netns", "exec", "ns1"]);
 * const bin = await detectBinary(run); // "iptables-legacy" when only legacy holds rules
 * const r = await run([familyOf(bin).save]);
 * ```
 */

/** A set of iptables binaries of one flavour. */
export interface IptablesFamily {
  iptables: string;
  save: string;
  restore: string;
}

export type IptablesBinary = "iptables" | "iptables-nft" | "iptables-legacy";

export function familyOf(bin: IptablesBinary): IptablesFamily {
  return { iptables: bin, save: `${bin}-save`, restore: `${bin}-restore` };
}

/** Result of one command. `code` -1 means it could not be started. */
export interface CmdResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `argv` (after the manager's prefix) with optional stdin. */
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
        ? `"${full[0]}" was not found in PATH (install iptables, nft or legacy flavour)`
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

/** A failed iptables command: the message names the command, its stderr and what to do. */
export class IptablesError extends Error {
  override name = "IptablesError";
}

/** The error for a failed command `argv` (shown with `prefix`), with a hint and the input fed. */
export function commandFailed(
  argv: string[],
  r: CmdResult,
  hint: string,
  input?: string,
  prefix: string[] = [],
): IptablesError {
  const cmd = [...prefix, ...argv].join(" ");
  const how = r.code === -1 ? "could not start" : `exited with ${r.code}`;
  let msg = `"${cmd}" ${how}: ${r.stderr || "(no stderr)"}. ${hint}`;
  if (input) msg += `\nrestore input was:\n${input}`;
  return new IptablesError(msg);
}

/** True when `iptables --version` is at least 1.6.2, the first with `--random-fully`. */
export function versionSupportsRandomFully(versionText: string): boolean {
  const m = /v(\d+)\.(\d+)\.(\d+)/.exec(versionText);
  if (!m) return false;
  const [a, b, c] = [Number(m[1]), Number(m[2]), Number(m[3])];
  return a > 1 || (a === 1 && (b > 6 || (b === 6 && c >= 2)));
}

const randomFullyCache = new Map<string, boolean>();

/** Whether `bin` supports `--random-fully` (asked once per binary and process). */
export async function probeRandomFully(
  run: Runner,
  bin: IptablesBinary,
  prefix: string[] = [],
): Promise<boolean> {
  let rf = randomFullyCache.get(bin);
  if (rf === undefined) {
    const v = await run([bin, "--version"]);
    if (v.code !== 0) {
      throw commandFailed(
        [bin, "--version"],
        v,
        "Install iptables or pick another flavour.",
        undefined,
        prefix,
      );
    }
    rf = versionSupportsRandomFully(v.stdout);
    randomFullyCache.set(bin, rf);
  }
  return rf;
}

async function countRules(run: Runner, save: string): Promise<number> {
  const r = await run([save]);
  if (r.code !== 0) return 0;
  return r.stdout.split("\n").filter((l) => l.startsWith("-A ")).length;
}

/**
 * Picks the flavour whose tables already hold rules (kube-proxy, docker and friends wrote them
 * there, and rules in the other flavour would be evaluated separately): legacy when only legacy
 * has rules, nft when only nft has, else the distribution's default `iptables`.
 */
export async function detectBinary(run: Runner): Promise<IptablesBinary> {
  const [nft, legacy] = await Promise.all([
    countRules(run, "iptables-nft-save"),
    countRules(run, "iptables-legacy-save"),
  ]);
  if (legacy > 0 && nft === 0) return "iptables-legacy";
  if (nft > 0 && legacy === 0) return "iptables-nft";
  return "iptables";
}
