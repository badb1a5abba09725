/**
 * `iptables-save` and `iptables-restore` text: rules rendered the way iptables-save prints them
 * (so a rule read back compares equal as text), save output parsed into tables, and the
 * `iptables-restore --noflush` input that brings a table to a {@link ChainSpec} or removes our
 * chains. Pure functions.
 *
 * @example
 * ```ts
 * const state = parseSave(saveOutput);
 * const input = renderRestore(new Map([["nat", renderChainRepair(spec, state.get("nat"))]]));
 * ```
 */
import type { ChainSpec, Rule, Table } from "./rules.ts";

function quote(arg: string): string {
  return /[\s"'\\]/.test(arg) || arg === "" ? `"${arg.replace(/(["\\])/g, "\\$1")}"` : arg;
}

/**
 * A rule as an `iptables-save` / `iptables-restore` line. The argument order of the rule
 * builders is the one iptables-save prints, so a rule read back compares equal as text.
 */
export function renderRule(r: Rule, op: "-A" | "-D" = "-A"): string {
  return [op, r.chain, ...r.args].map(quote).join(" ");
}

/** What `iptables-save` shows for one table: its chains and its `-A` lines in order. */
export interface TableState {
  chains: Set<string>;
  rules: string[];
}

/** Parses `iptables-save` output into tables; comments and counters are ignored. */
export function parseSave(text: string): Map<string, TableState> {
  const tables = new Map<string, TableState>();
  let cur: TableState | undefined;
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    if (line.startsWith("*")) {
      cur = { chains: new Set(), rules: [] };
      tables.set(line.slice(1), cur);
    } else if (line.startsWith(":") && cur) {
      cur.chains.add(line.slice(1).split(/\s+/)[0]);
    } else if (line.startsWith("-A ") && cur) {
      cur.rules.push(line.replace(/\s+/g, " "));
    }
  }
  return tables;
}

function chainOf(line: string): string {
  return line.split(" ")[1];
}

function jumpsTo(line: string, chain: string): boolean {
  return line.endsWith(` -j ${chain}`) || line.includes(` -j ${chain} `);
}

/** True when `state` already holds exactly what `spec` asks for. */
export function chainInPlace(spec: ChainSpec, state: TableState | undefined): boolean {
  const jumps = state?.rules.filter((l) => chainOf(l) !== spec.chain && jumpsTo(l, spec.chain)) ??
    [];
  const exists = state?.chains.has(spec.chain) ?? false;
  if (spec.rules.length === 0) return !exists && jumps.length === 0;
  if (!exists) return false;
  const [jump, ...body] = spec.rules.map((r) => renderRule(r));
  const have = state!.rules.filter((l) => chainOf(l) === spec.chain);
  return jumps.length === 1 && jumps[0] === jump && have.join("\n") === body.join("\n");
}

/**
 * The `iptables-restore --noflush` lines for one table that bring `state` to `spec`: declaring
 * our chain creates it or flushes it, so its body is rewritten whole (which also drops the rules
 * of a previous subnet); the jump is added only when missing, and stray jumps are deleted.
 * Returns no lines when nothing is to be done.
 */
export function renderChainRepair(spec: ChainSpec, state: TableState | undefined): string[] {
  if (chainInPlace(spec, state)) return [];
  const jumps = state?.rules.filter((l) => chainOf(l) !== spec.chain && jumpsTo(l, spec.chain)) ??
    [];
  const out: string[] = [];
  if (spec.rules.length === 0) {
    for (const j of jumps) out.push(j.replace(/^-A /, "-D "));
    if (state?.chains.has(spec.chain)) out.push(`-F ${spec.chain}`, `-X ${spec.chain}`);
    return out;
  }
  const [jump, ...body] = spec.rules;
  const jumpLine = renderRule(jump);
  out.push(`:${spec.chain} - [0:0]`);
  for (const r of body) out.push(renderRule(r));
  let kept = false;
  for (const j of jumps) {
    if (j === jumpLine && !kept) kept = true;
    else out.push(j.replace(/^-A /, "-D "));
  }
  if (!kept) out.push(jumpLine);
  return out;
}

/** Wraps per-table lines into one restore input: `*table ... COMMIT` per table with changes. */
export function renderRestore(perTable: Map<string, string[]>): string {
  let s = "";
  for (const [table, lines] of perTable) {
    if (lines.length > 0) s += `*${table}\n${lines.join("\n")}\nCOMMIT\n`;
  }
  return s;
}

/** Removal lines for one table: delete every jump to our chain, then flush and delete it. */
export function renderChainRemoval(
  table: Table,
  chain: string,
  state: TableState | undefined,
): string[] {
  return renderChainRepair({ table, chain, rules: [] }, state);
}

/** What a removal did (or would do), from the `iptables-restore` input it fed, for operators. */
export function describeRestore(bin: string, input: string): string[] {
  const out: string[] = [];
  let table = "";
  for (const line of input.split("\n")) {
    if (line.startsWith("*")) table = line.slice(1);
    // Shown as the rule was listed (-A), which is what an operator finds in iptables-save.
    else if (line.startsWith("-D ")) {
      out.push(`iptables rule "-t ${table} -A ${line.slice(3)}" (${bin})`);
    } else if (line.startsWith("-X ")) {
      out.push(`iptables chain ${line.slice(3)} in table ${table} (${bin})`);
    }
  }
  return out;
}
