/**
 * The keeper of flannel's nftables tables (`"EnableNFTables": true`): the agent's nftables
 * {@link RuleKeeper}. `apply()` writes every wanted table whole with one `nft -f -` transaction
 * (declare, flush, refill: a new subnet's rules replace the old one's) and deletes flannel's table
 * of a family that is not served; `check()`, every `--iptables-resync` seconds, lists each table
 * and rewrites it when the listing differs from the one read right after weft wrote it (a rule
 * deleted or added by hand, the table deleted). Comparing against nft's own listing keeps the
 * check independent of how a given nft version prints rules. `fully-random` is dropped, with a
 * warning, when the kernel or nft refuses it. `nftOwned()` is what `weft cleanup` removes.
 *
 * @example
 * ```ts
 * const k = new NftKeeper({ ipMasq: true, forward: true, commandPrefix: ["ip", "netns", "exec", "ns1"] });
 * await k.apply(cfg, lease, null);        // table ip flannel-ipv4 in place
 * await k.check();                        // false: nothing changed since
 * await removeNftTables(commandRunner()); // ["nftables table ip flannel-ipv4"]
 * ```
 */
import { formatCidr, networkOf } from "../base/ipv4.ts";
import { formatCidr6 } from "../base/ipv6.ts";
import { metrics } from "../base/metrics.ts";
import type { NetworkConfig } from "../config/network.ts";
import type { Lease } from "../lease/codec.ts";
import type { CleanupReport, Owned } from "../backend/backend.ts";
import { RuleKeeper } from "../backend/rule_keeper.ts";
import { type CmdResult, commandRunner, failureMessage, type Runner } from "../backend/command.ts";
import {
  NFT_TABLE,
  type NftFamily,
  type NftTableParams,
  removalScript,
  tableScript,
} from "./rules.ts";

const repairs = metrics.counter(
  "weft_nftables_repairs_total",
  "Times the nftables tables were found missing or changed and were rewritten.",
);
const failures = metrics.counter(
  "weft_nftables_errors_total",
  "Failed attempts to check or write the nftables tables.",
);

const FAMILIES: NftFamily[] = ["ip", "ip6"];
const HINT = "Check that nft (package nftables) is installed and that the kernel has nf_tables " +
  "with NAT (modules nf_tables, nft_chain_nat, nft_masq).";

/** A failed nft command: the message names the command, its stderr and what to do. */
export class NftError extends Error {
  override name = "NftError";
}

/** One table as the keeper wants it: everything but the switches the keeper holds itself. */
export type NftTarget = Pick<NftTableParams, "family" | "network" | "podSubnet">;

export interface NftKeeperOptions {
  /** Fill chain `postrtg` (flannel's `--ip-masq`). */
  ipMasq: boolean;
  /** Fill chain `forward` (flannel's `--iptables-forward-rules`). */
  forward: boolean;
  /** flannel's `--ip-masq-fully-random-disable` (flanneld ignores it with nftables; weft not). */
  randomFullyDisable?: boolean;
  /** How often `check()` runs as a part (`--iptables-resync`), in seconds; default 5. */
  resyncSeconds?: number;
  /** Prefix for every command, e.g. `["ip", "netns", "exec", "ns1"]` (used by tests). */
  commandPrefix?: string[];
  /** Replaces process spawning entirely (tests). */
  runner?: Runner;
}

/** Keeps flannel's nftables tables in place: one transaction per write, check-and-repair. */
export class NftKeeper extends RuleKeeper {
  readonly name = "nftables rules";
  #opts: NftKeeperOptions;
  #run: Runner;
  #prefix: string[];
  #targets: NftTarget[] = [];
  /** Each table's listing right after weft wrote it: what `check()` compares against. */
  #written = new Map<NftFamily, string>();
  /** False once nft refused `fully-random`. */
  #fullyRandomOk = true;

  constructor(opts: NftKeeperOptions) {
    super(["weft", "nftables"], opts.resyncSeconds);
    this.#opts = { ...opts };
    this.#prefix = opts.commandPrefix ?? [];
    this.#run = opts.runner ?? commandRunner(this.#prefix);
  }

  /** Whether the tables use `masquerade fully-random` (after the first write). */
  get fullyRandom(): boolean {
    return this.#fullyRandomOk && !this.#opts.randomFullyDisable;
  }

  /**
   * The tables follow the lease: `ip flannel-ipv4` from the config's Network and the lease's
   * subnet, and with IPv6 on, `ip6 flannel-ipv6` from the IPv6 halves of both (an IPv6-only
   * config has the `ip6` table alone).
   */
  apply(cfg: NetworkConfig, lease: Lease, _prev: Lease | null): Promise<void> {
    const targets: NftTarget[] = [];
    if (cfg.enableIPv4) {
      targets.push({
        family: "ip",
        network: formatCidr(networkOf(cfg.network)),
        podSubnet: formatCidr(networkOf(lease.subnet)),
      });
    }
    if (cfg.ipv6 && lease.subnet6) {
      targets.push({
        family: "ip6",
        network: formatCidr6(cfg.ipv6.network),
        podSubnet: formatCidr6(lease.subnet6),
      });
    }
    return this.write(targets);
  }

  /** Writes `targets` (one table per family at most) and deletes flannel's other tables. */
  write(targets: NftTarget[]): Promise<void> {
    return this.serial(async () => {
      this.#targets = targets;
      await this.#counted(() => this.#write());
    });
  }

  /** Lists each table; rewrites all when one differs from what was written. */
  ensure(): Promise<boolean> {
    return this.serial(() =>
      this.#counted(async () => {
        if (this.#targets.length === 0) {
          throw new NftError("the nftables rules need the network and subnet; apply a lease");
        }
        let same = true;
        for (const t of this.#targets) {
          if (await this.#list(t.family) !== this.#written.get(t.family)) same = false;
        }
        if (same) return false;
        await this.#write();
        repairs.inc();
        return true;
      })
    );
  }

  async #counted<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      failures.inc();
      throw e;
    }
  }

  #script(fullyRandom: boolean, tables: string): string {
    const { ipMasq, forward } = this.#opts;
    const wanted = new Set(this.#targets.map((t) => t.family));
    const drop = removalScript(tables, FAMILIES.filter((f) => !wanted.has(f)));
    return this.#targets.map((t) => tableScript({ ...t, ipMasq, forward, fullyRandom })).join("") +
      drop;
  }

  async #write(): Promise<void> {
    const tables = await this.#nft(["list", "tables"]);
    const want = this.fullyRandom;
    let input = this.#script(want, tables.stdout);
    let r = await this.#run(["nft", "-f", "-"], input);
    if (r.code !== 0 && want) {
      // Old kernels (before 5.x nft_masq flags) or nft builds refuse fully-random: flannel
      // falls back to plain masquerade, and so does weft, saying so once.
      const plain = this.#script(false, tables.stdout);
      const r2 = await this.#run(["nft", "-f", "-"], plain);
      if (r2.code === 0) {
        this.#fullyRandomOk = false;
        this.log.warn("nft refused masquerade fully-random ({error}); using plain masquerade", {
          error: r.stderr,
        });
      }
      [r, input] = [r2, plain];
    }
    if (r.code !== 0) throw this.#failed(["nft", "-f", "-"], r, input);
    this.#written.clear();
    for (const t of this.#targets) this.#written.set(t.family, await this.#list(t.family));
  }

  /** `nft list table`: its text, or "" when the table does not exist. */
  async #list(family: NftFamily): Promise<string> {
    const argv = ["nft", "list", "table", family, NFT_TABLE[family]];
    const r = await this.#run(argv);
    if (r.code === 0) return r.stdout;
    if (r.code > 0 && /No such file or directory/.test(r.stderr)) return "";
    throw this.#failed(argv, r);
  }

  async #nft(args: string[]): Promise<CmdResult> {
    const r = await this.#run(["nft", ...args]);
    if (r.code !== 0) throw this.#failed(["nft", ...args], r);
    return r;
  }

  #failed(argv: string[], r: CmdResult, input?: string): NftError {
    return new NftError(failureMessage(argv, r, HINT, input, this.#prefix));
  }
}

/**
 * Deletes flannel's nftables tables (`ip flannel-ipv4`, `ip6 flannel-ipv6`) where present, in one
 * transaction, and nothing else; returns what it removed (or, `dryRun`, would remove). Without
 * nft on the host there is nothing of ours to remove: returns [].
 */
export async function removeNftTables(run: Runner, dryRun = false): Promise<string[]> {
  const r = await run(["nft", "list", "tables"]);
  if (r.code === -1) return [];
  if (r.code !== 0) {
    throw new NftError(failureMessage(["nft", "list", "tables"], r, HINT));
  }
  const script = removalScript(r.stdout);
  if (!script) return [];
  if (!dryRun) {
    const d = await run(["nft", "-f", "-"], script);
    if (d.code !== 0) throw new NftError(failureMessage(["nft", "-f", "-"], d, HINT, script));
  }
  return script.trim().split("\n").map((l) => `nftables ${l.replace(/^delete /, "")}`);
}

/** What `weft cleanup` removes for the nftables part: flannel's two tables, reported. */
export function nftOwned(run: Runner = commandRunner()): Owned {
  const remove = async (rep: CleanupReport) => {
    try {
      for (const d of await removeNftTables(run, rep.dryRun)) rep.did(d);
    } catch (e) {
      rep.fail(`cannot remove the flannel nftables tables: ${(e as Error).message}`);
    }
  };
  return { owner: "nftables", remove };
}
