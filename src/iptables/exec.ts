/**
 * Running the iptables binaries (through the rule keepers' runner, `backend/command.ts`), as
 * flannel does (the rule syntax is the binary's, and going through it keeps weft working on both
 * iptables-nft and legacy). Picks the flavour already in use, probes `--random-fully`, and turns a failed command
 * into an {@link IptablesError} that names the command, its stderr and what to do.
 *
 * @example
 * ```ts
 * const run = commandRunner(["ip", "netns", "exec", "ns1"]);
 * const bin = await detectBinary(run); // "iptables-legacy" when only legacy holds rules
 * const r = await run([familyOf(bin).save]);
 * ```
 */
import { type CmdResult, failureMessage, type Runner } from "../backend/command.ts";

/** A set of iptables binaries of one flavour. */
export interface IptablesFamily {
  iptables: string;
  save: string;
  restore: string;
}

export type IptablesBinary =
  | "iptables"
  | "iptables-nft"
  | "iptables-legacy"
  | "ip6tables"
  | "ip6tables-nft"
  | "ip6tables-legacy";

export function familyOf(bin: IptablesBinary): IptablesFamily {
  return { iptables: bin, save: `${bin}-save`, restore: `${bin}-restore` };
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
  return new IptablesError(failureMessage(argv, r, hint, input, prefix));
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
 * Picks the flavour (of iptables, or with `family` 6 of ip6tables) whose tables already hold rules (kube-proxy, docker and friends wrote them
 * there, and rules in the other flavour would be evaluated separately): legacy when only legacy
 * has rules, nft when only nft has, else the distribution's default `iptables`.
 */
export async function detectBinary(run: Runner, family: 4 | 6 = 4): Promise<IptablesBinary> {
  const base = family === 6 ? "ip6tables" : "iptables";
  const [nft, legacy] = await Promise.all([
    countRules(run, `${base}-nft-save`),
    countRules(run, `${base}-legacy-save`),
  ]);
  if (legacy > 0 && nft === 0) return `${base}-legacy`;
  if (nft > 0 && legacy === 0) return `${base}-nft`;
  return base;
}
