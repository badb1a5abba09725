/**
 * flannel's iptables rules (masquerade chain FLANNEL-POSTRTG in nat, forward chain FLANNEL-FWD in
 * filter), built by pure functions and kept in place by a `RuleManager` that applies them with
 * one `iptables-restore --noflush` transaction and repairs them when someone else changes them.
 *
 * iptables is the one place where weft shells out, as flannel does: the rule syntax is the
 * iptables binary's, and going through it keeps weft working on both iptables-nft and legacy.
 *
 * @example
 * ```ts
 * const mgr = new RuleManager({
 *   network: parseCidr("198.19.0.0/16"),
 *   podSubnet: parseCidr("198.19.7.0/24"),
 *   ipMasq: true,
 *   forward: true,
 * });
 * await mgr.ensure(); // true: rules were missing and are now in place
 * mgr.startResync(5); // re-check every 5 s, log when something had to be repaired
 * // later, on `weft cleanup`:
 * await mgr.remove();
 * ```
 */
import { getLogger } from "@logtape/logtape";
import { formatCidr, type Ipv4Net, networkOf } from "../base/ipv4.ts";
import { metrics } from "../base/metrics.ts";

const log = getLogger(["weft", "iptables"]);

export const MASQ_CHAIN = "FLANNEL-POSTRTG";
export const FWD_CHAIN = "FLANNEL-FWD";
export const MASQ_COMMENT = "flanneld masq";
export const FWD_COMMENT = "flanneld forward";
/** kube-proxy marks packets it will masquerade itself; flannel skips them to avoid double NAT. */
export const KUBE_PROXY_MARK = "0x4000/0x4000";

const repairs = metrics.counter(
  "weft_iptables_repairs_total",
  "Times the iptables rules were found missing or changed and were (re)applied.",
);
const failures = metrics.counter(
  "weft_iptables_errors_total",
  "Failed attempts to check or apply the iptables rules.",
);

export type Table = "nat" | "filter";

/** One rule: `-A <chain> <args...>` in `table`. */
export interface Rule {
  table: Table;
  chain: string;
  args: string[];
}

export interface RuleParams {
  /** The cluster network (FLANNEL_NETWORK). */
  network: Ipv4Net;
  /** This node's leased subnet. */
  podSubnet: Ipv4Net;
  /** Add `--random-fully` to MASQUERADE (only when the iptables binary supports it). */
  randomFully: boolean;
}

const cidr = (n: Ipv4Net) => formatCidr(networkOf(n));

/** flannel's masquerade rules: the POSTROUTING jump first, then the FLANNEL-POSTRTG chain. */
export function masqRules(p: RuleParams): Rule[] {
  const net = cidr(p.network);
  const pod = cidr(p.podSubnet);
  const c = ["-m", "comment", "--comment", MASQ_COMMENT];
  const masq = p.randomFully ? ["-j", "MASQUERADE", "--random-fully"] : ["-j", "MASQUERADE"];
  const r = (args: string[]): Rule => ({ table: "nat", chain: MASQ_CHAIN, args });
  return [
    { table: "nat", chain: "POSTROUTING", args: [...c, "-j", MASQ_CHAIN] },
    r(["-m", "mark", "--mark", KUBE_PROXY_MARK, ...c, "-j", "RETURN"]),
    // Pod-to-pod traffic inside the overlay keeps its source address.
    r(["-s", pod, "-d", net, ...c, "-j", "RETURN"]),
    r(["-s", net, "-d", pod, ...c, "-j", "RETURN"]),
    // External traffic arriving for a local pod (e.g. via a NodePort) is not masqueraded.
    r(["!", "-s", net, "-d", pod, ...c, "-j", "RETURN"]),
    // Pods talking to the outside world, except multicast.
    r(["-s", net, "!", "-d", "224.0.0.0/4", ...c, ...masq]),
    // The host talking to pods on other nodes.
    r(["!", "-s", net, "-d", net, ...c, ...masq]),
  ];
}

/** flannel's forward rules: the FORWARD jump first, then the FLANNEL-FWD chain. */
export function forwardRules(network: Ipv4Net): Rule[] {
  const net = cidr(network);
  const c = ["-m", "comment", "--comment", FWD_COMMENT];
  return [
    { table: "filter", chain: "FORWARD", args: [...c, "-j", FWD_CHAIN] },
    { table: "filter", chain: FWD_CHAIN, args: ["-s", net, ...c, "-j", "ACCEPT"] },
    { table: "filter", chain: FWD_CHAIN, args: ["-d", net, ...c, "-j", "ACCEPT"] },
  ];
}

function quote(arg: string): string {
  return /[\s"'\\]/.test(arg) || arg === "" ? `"${arg.replace(/(["\\])/g, "\\$1")}"` : arg;
}

/**
 * A rule as an `iptables-save` / `iptables-restore` line. The argument order above is the one
 * iptables-save prints, so a rule read back compares equal as text.
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

/** Our part of one table: the chain we own, its rules, and the built-in chain that jumps to it. */
export interface ChainSpec {
  table: Table;
  chain: string;
  /** `-A` lines, the jump rule first. Empty: the chain must not exist (feature turned off). */
  rules: Rule[];
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

function fail(
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

const randomFullyCache = new Map<string, boolean>();

/** True when `iptables --version` is at least 1.6.2, the first with `--random-fully`. */
export function versionSupportsRandomFully(versionText: string): boolean {
  const m = /v(\d+)\.(\d+)\.(\d+)/.exec(versionText);
  if (!m) return false;
  const [a, b, c] = [Number(m[1]), Number(m[2]), Number(m[3])];
  return a > 1 || (a === 1 && (b > 6 || (b === 6 && c >= 2)));
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

export interface RuleManagerOptions {
  network: Ipv4Net;
  podSubnet: Ipv4Net;
  /** Install the masquerade chain (flannel's `--ip-masq`). */
  ipMasq: boolean;
  /** Install the forward chain (flannel's `--iptables-forward-rules`, default true). */
  forward: boolean;
  /** flannel's `--ip-masq-fully-random-disable`. */
  randomFullyDisable?: boolean;
  /** Which iptables to use; detected from existing rules when omitted. */
  binary?: IptablesBinary;
  /** Prefix for every command, e.g. `["ip", "netns", "exec", "ns1"]` (used by tests). */
  commandPrefix?: string[];
  /** Replaces process spawning entirely (tests, dry runs). */
  runner?: Runner;
}

/** Keeps flannel's chains in place: check-and-repair, periodic resync, removal. */
export class RuleManager {
  #opts: RuleManagerOptions;
  #run: Runner;
  #prefix: string[];
  #family?: IptablesFamily;
  #binary?: IptablesBinary;
  #randomFully?: boolean;
  #queue: Promise<unknown> = Promise.resolve();
  #timer?: ReturnType<typeof setTimeout>;
  #stopped = true;

  constructor(opts: RuleManagerOptions) {
    this.#opts = { ...opts };
    this.#prefix = opts.commandPrefix ?? [];
    this.#run = opts.runner ?? commandRunner(this.#prefix);
  }

  /** The iptables flavour in use (after the first `ensure()` / `remove()`). */
  get binary(): IptablesBinary | undefined {
    return this.#binary;
  }

  /** Changes network/subnet/switches; the next `ensure()` rewrites our chains accordingly. */
  update(p: Partial<Pick<RuleManagerOptions, "network" | "podSubnet" | "ipMasq" | "forward">>) {
    this.#opts = { ...this.#opts, ...p };
  }

  async #init(): Promise<IptablesFamily> {
    if (this.#family) return this.#family;
    const bin = this.#opts.binary ?? await detectBinary(this.#run);
    let rf = randomFullyCache.get(bin);
    if (rf === undefined) {
      const v = await this.#run([bin, "--version"]);
      if (v.code !== 0) {
        throw fail(
          [bin, "--version"],
          v,
          "Install iptables or pick another flavour.",
          undefined,
          this.#prefix,
        );
      }
      rf = versionSupportsRandomFully(v.stdout);
      randomFullyCache.set(bin, rf);
    }
    this.#randomFully = rf;
    this.#binary = bin;
    this.#family = familyOf(bin);
    log.debug(`using ${bin} (random-fully ${rf ? "supported" : "not supported"})`);
    return this.#family;
  }

  /** The chains as they should be now. */
  specs(): ChainSpec[] {
    const o = this.#opts;
    const randomFully = (this.#randomFully ?? false) && !o.randomFullyDisable;
    const masq = o.ipMasq
      ? masqRules({ network: o.network, podSubnet: o.podSubnet, randomFully })
      : [];
    const fwd = o.forward ? forwardRules(o.network) : [];
    return [
      { table: "nat", chain: MASQ_CHAIN, rules: masq },
      { table: "filter", chain: FWD_CHAIN, rules: fwd },
    ];
  }

  async #save(fam: IptablesFamily): Promise<Map<string, TableState>> {
    const r = await this.#run([fam.save]);
    if (r.code !== 0) {
      throw fail(
        [fam.save],
        r,
        "weft cannot read the current rules; check that the iptables tools work on this host.",
        undefined,
        this.#prefix,
      );
    }
    return parseSave(r.stdout);
  }

  async #restore(fam: IptablesFamily, input: string): Promise<void> {
    const argv = [fam.restore, "--noflush", "--wait=5"];
    const r = await this.#run(argv, input);
    if (r.code !== 0) {
      throw fail(
        argv,
        r,
        "Check that the kernel has the nat/filter tables (modules nf_nat, xt_comment, " +
          "xt_MASQUERADE or nft_masq) and that no other tool holds the xtables lock.",
        input,
        this.#prefix,
      );
    }
  }

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.#queue.then(fn, fn);
    this.#queue = next.catch(() => {});
    return next;
  }

  /**
   * Checks the rules and repairs them when they differ. Returns true when it changed anything.
   * Throws an `IptablesError` when a command fails.
   */
  ensure(): Promise<boolean> {
    return this.#serial(async () => {
      try {
        const fam = await this.#init();
        const specs = this.specs();
        const state = await this.#save(fam);
        const perTable = new Map<string, string[]>();
        for (const s of specs) {
          const lines = renderChainRepair(s, state.get(s.table));
          if (lines.length) perTable.set(s.table, [...(perTable.get(s.table) ?? []), ...lines]);
        }
        if (perTable.size === 0) return false;
        const input = renderRestore(perTable);
        await this.#restore(fam, input);
        const after = await this.#save(fam);
        const wrong = specs.filter((s) => !chainInPlace(s, after.get(s.table)));
        if (wrong.length) {
          throw new IptablesError(
            `applied the ${wrong.map((s) => s.chain).join(", ")} rules with ${fam.restore} ` +
              `but ${fam.save} still shows them differently; another tool may be rewriting ` +
              `them at the same time, or this iptables prints rules in an unexpected form ` +
              `(report it with the output of "${fam.save}").`,
          );
        }
        repairs.inc();
        return true;
      } catch (e) {
        failures.inc();
        throw e;
      }
    });
  }

  /** Runs `ensure()` every `seconds` until `stop()` or `remove()`; logs repairs and failures. */
  startResync(seconds: number): void {
    this.stop();
    this.#stopped = false;
    const tick = async () => {
      if (this.#stopped) return;
      try {
        if (await this.ensure()) {
          log.warn(`iptables rules were missing or changed and have been restored`);
        }
      } catch (e) {
        log.error(`iptables resync failed: ${(e as Error).message}`);
      }
      if (!this.#stopped) this.#timer = setTimeout(tick, seconds * 1000);
    };
    this.#timer = setTimeout(tick, seconds * 1000);
  }

  /** Stops the periodic resync (rules stay in place, as flannel leaves them on shutdown). */
  stop(): void {
    this.#stopped = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /**
   * Deletes our jump rules and chains. Looks in the flavour in use and in the other flavours
   * present, so `weft cleanup` also finds rules a previous run left in the other one.
   */
  remove(): Promise<void> {
    this.stop();
    return this.#serial(async () => {
      const fam = await this.#init();
      const bins = new Set<IptablesBinary>([this.#binary!, "iptables-nft", "iptables-legacy"]);
      for (const bin of bins) {
        const f = bin === this.#binary ? fam : familyOf(bin);
        let state: Map<string, TableState>;
        try {
          state = await this.#save(f);
        } catch (e) {
          if (f === fam) throw e;
          continue; // that flavour is not installed: nothing of ours can be there
        }
        const perTable = new Map<string, string[]>([
          ["nat", renderChainRemoval("nat", MASQ_CHAIN, state.get("nat"))],
          ["filter", renderChainRemoval("filter", FWD_CHAIN, state.get("filter"))],
        ]);
        const input = renderRestore(perTable);
        if (input) {
          await this.#restore(f, input);
          log.info(`removed weft's iptables chains (${bin})`);
        }
      }
    });
  }
}
