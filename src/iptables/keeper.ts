/**
 * The keeper of flannel's iptables chains: a `RuleManager` applies the chains {@link chainSpecs}
 * wants with one `iptables-restore --noflush` transaction, verifies them by reading them back,
 * and is the agent's iptables {@link Part}: `apply()` on every lease (a new subnet rewrites the
 * chains, dropping the old subnet's rules), `check()` every `--iptables-resync` seconds (repairs
 * what someone else changed). With `family: 6` it keeps the same chains through ip6tables for the
 * IPv6 halves of the config and the lease. `iptablesOwned()` is what `weft cleanup` removes for
 * it, in both families.
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
 * // the agent: await mgr.apply(cfg, lease, null); runChecks(mgr, signal);
 * // later, on `weft cleanup`:
 * await mgr.remove();
 * ```
 */
import { getLogger } from "@logtape/logtape";
import {
  type ChainSpec,
  chainSpecs,
  FWD_CHAIN,
  type IpNet,
  MASQ_CHAIN,
  OWNED_CHAINS,
} from "./rules.ts";
import { metrics } from "../base/metrics.ts";
import type { NetworkConfig } from "../config/network.ts";
import type { Lease } from "../lease/codec.ts";
import type { CleanupReport, Owned } from "../backend/backend.ts";
import { RuleKeeper } from "../backend/rule_keeper.ts";
import { commandRunner, type Runner } from "../backend/command.ts";
import {
  chainInPlace,
  describeRestore,
  parseSave,
  renderChainRemoval,
  renderChainRepair,
  renderRestore,
  type TableState,
} from "./restore.ts";
import {
  commandFailed,
  detectBinary,
  familyOf,
  type IptablesBinary,
  IptablesError,
  type IptablesFamily,
  probeRandomFully,
} from "./exec.ts";

const LOG_CATEGORY = ["weft", "iptables"];
const log = getLogger(LOG_CATEGORY);

const repairs = metrics.counter(
  "weft_iptables_repairs_total",
  "Times the iptables rules were found missing or changed and were (re)applied.",
);
const failures = metrics.counter(
  "weft_iptables_errors_total",
  "Failed attempts to check or apply the iptables rules.",
);

export interface RuleManagerOptions {
  /** The cluster network; `apply()` sets it from the config. */
  network?: IpNet;
  /** This node's subnet; `apply()` sets it from the lease. */
  podSubnet?: IpNet;
  /** 4 (default): iptables; 6: ip6tables, with the IPv6 halves of the config and lease. */
  family?: 4 | 6;
  /** Install the masquerade chain (flannel's `--ip-masq`). */
  ipMasq: boolean;
  /** Install the forward chain (flannel's `--iptables-forward-rules`, default true). */
  forward: boolean;
  /** flannel's `--ip-masq-fully-random-disable`. */
  randomFullyDisable?: boolean;
  /** How often `check()` runs as a part (`--iptables-resync`), in seconds; default 5. */
  resyncSeconds?: number;
  /** Which iptables to use; detected from existing rules when omitted. */
  binary?: IptablesBinary;
  /** Prefix for every command, e.g. `["ip", "netns", "exec", "ns1"]` (used by tests). */
  commandPrefix?: string[];
  /** Replaces process spawning entirely (tests, dry runs). */
  runner?: Runner;
}

/** Keeps flannel's chains in place: check-and-repair, removal; the agent's iptables part. */
export class RuleManager extends RuleKeeper {
  readonly name: string;
  #opts: RuleManagerOptions;
  #run: Runner;
  #prefix: string[];
  #family?: IptablesFamily;
  #binary?: IptablesBinary;
  #randomFully?: boolean;

  constructor(opts: RuleManagerOptions) {
    super(LOG_CATEGORY, opts.resyncSeconds);
    this.name = opts.family === 6 ? "ip6tables rules" : "iptables rules";
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

  /** Rules follow the lease: a new subnet rewrites the chains, dropping the old subnet's rules. */
  async apply(cfg: NetworkConfig, lease: Lease, _prev: Lease | null): Promise<void> {
    if (this.#opts.family === 6) {
      if (!cfg.ipv6 || !lease.subnet6) {
        throw new IptablesError("the ip6tables rules need an IPv6 network and lease half");
      }
      this.update({ network: cfg.ipv6.network, podSubnet: lease.subnet6 });
    } else this.update({ network: cfg.network, podSubnet: lease.subnet });
    await this.ensure();
  }

  async #init(): Promise<IptablesFamily> {
    if (this.#family) return this.#family;
    const bin = this.#opts.binary ?? await detectBinary(this.#run, this.#opts.family ?? 4);
    const rf = await probeRandomFully(this.#run, bin, this.#prefix);
    this.#randomFully = rf;
    this.#binary = bin;
    this.#family = familyOf(bin);
    log.debug("using {bin} (random-fully {rf})", { bin, rf: rf ? "supported" : "not supported" });
    return this.#family;
  }

  /** The chains as they should be now. */
  specs(): ChainSpec[] {
    const o = this.#opts;
    if (!o.network || !o.podSubnet) {
      throw new IptablesError("the iptables rules need the network and subnet; apply a lease");
    }
    const randomFully = (this.#randomFully ?? false) && !o.randomFullyDisable;
    return chainSpecs({ ...o, network: o.network, podSubnet: o.podSubnet, randomFully });
  }

  async #save(fam: IptablesFamily): Promise<Map<string, TableState>> {
    const r = await this.#run([fam.save]);
    if (r.code !== 0) {
      throw commandFailed(
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
      throw commandFailed(
        argv,
        r,
        "Check that the kernel has the nat/filter tables (modules nf_nat, xt_comment, " +
          "xt_MASQUERADE or nft_masq) and that no other tool holds the xtables lock.",
        input,
        this.#prefix,
      );
    }
  }

  /**
   * Checks the rules and repairs them when they differ. Returns true when it changed anything.
   * Throws an `IptablesError` when a command fails.
   */
  ensure(): Promise<boolean> {
    return this.serial(async () => {
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

  /**
   * Deletes our jump rules and chains. Looks in the flavour in use and in the other flavours
   * present, so `weft cleanup` also finds rules a previous run left in the other one.
   */
  remove(): Promise<void> {
    return this.serial(async () => {
      const fam = await this.#init();
      const base = this.#opts.family === 6 ? "ip6tables" : "iptables";
      const bins = new Set<IptablesBinary>([this.#binary!, `${base}-nft`, `${base}-legacy`]);
      for (const bin of bins) {
        const f = bin === this.#binary ? fam : familyOf(bin);
        let state: Map<string, TableState>;
        try {
          state = await this.#save(f);
        } catch (e) {
          if (f === fam) throw e;
          continue; // that flavour is not installed: nothing of ours can be there
        }
        const perTable = new Map<string, string[]>(
          OWNED_CHAINS.map((
            c,
          ) => [c.table, renderChainRemoval(c.table, c.chain, state.get(c.table))]),
        );
        const input = renderRestore(perTable);
        if (input) {
          await this.#restore(f, input);
          log.info("removed weft's iptables chains ({bin})", { bin });
        }
      }
    });
  }
}

/**
 * What `weft cleanup` removes for the iptables part: flannel's chains and their jumps, in every
 * flavour, each reported as it was listed; a dry run reports and changes nothing.
 */
export function iptablesOwned(run: Runner = commandRunner()): Owned {
  const remove = async (rep: CleanupReport) => {
    const reporting: Runner = async (argv, stdin) => {
      if (!argv[0].endsWith("-restore")) return run(argv, stdin);
      const bin = argv[0].replace(/-restore$/, "");
      const r = rep.dryRun ? { code: 0, stdout: "", stderr: "" } : await run(argv, stdin);
      if (r.code === 0) { for (const d of describeRestore(bin, stdin ?? "")) rep.did(d); }
      return r;
    };
    try {
      await new RuleManager({ ipMasq: false, forward: false, runner: reporting }).remove();
    } catch (e) {
      rep.fail(
        `cannot remove the ${MASQ_CHAIN}/${FWD_CHAIN} iptables chains: ${(e as Error).message}`,
      );
    }
    // The IPv6 chains (dual stack). A host without ip6tables has none of them: only noted.
    try {
      await new RuleManager({ ipMasq: false, forward: false, runner: reporting, family: 6 })
        .remove();
    } catch (e) {
      const msg = (e as Error).message;
      const say = msg.includes("not found in PATH") ? rep.note : rep.fail;
      say.call(rep, `cannot remove the ${MASQ_CHAIN}/${FWD_CHAIN} ip6tables chains: ${msg}`);
    }
  };
  return { owner: "iptables", remove };
}
