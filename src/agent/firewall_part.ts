/**
 * The agent's masquerade/forward rules part, in the mode the network config picks: flannel's
 * iptables chains, or its nftables tables with `"EnableNFTables": true`. The config is only known
 * once the agent has read it, so the choice happens at the first `apply()`. Switching modes
 * between runs is cleaned up, not doubled: entering nftables mode removes the FLANNEL-POSTRTG /
 * FLANNEL-FWD chains (and their jumps) an earlier iptables run left, entering iptables mode
 * removes the `flannel-ipv4` / `flannel-ipv6` tables; no other table, chain or rule is touched.
 * With IPv6 on, iptables mode keeps the same chains through ip6tables for the IPv6 halves
 * (nftables mode writes the `ip6 flannel-ipv6` table itself). An IPv6-only network has the
 * ip6tables chains (or the `ip6` table) alone: no IPv4 chain or table is written.
 * /readyz names the active keeper ("nftables rules not installed yet").
 *
 * @example
 * ```ts
 * const part = new FirewallPart({ ipMasq: true, forward: true, resyncSeconds: 5 });
 * await part.apply(cfg, lease, null); // cfg.enableNFTables picks the keeper
 * part.name;                          // "nftables rules"
 * ```
 */
import { getLogger } from "@logtape/logtape";
import type { NetworkConfig } from "../config/network.ts";
import type { Lease } from "../lease/codec.ts";
import type { Part } from "../backend/part.ts";
import { commandRunner, type Runner } from "../backend/command.ts";
import { RuleManager } from "../iptables/keeper.ts";
import { NftKeeper, type NftKeeperOptions, removeNftTables } from "../nftables/keeper.ts";

const log = getLogger(["weft", "agent"]);

/** The flags both rule keepers take (iptables' RuleManager and NftKeeper read the same ones). */
export type FirewallPartOptions = NftKeeperOptions;

type Mode = "iptables" | "nftables";

export class FirewallPart implements Part {
  readonly checkIntervalMs: number;
  #run: Runner;
  #iptables: RuleManager;
  /** The IPv6 chains, used in iptables mode when the config enables IPv6. */
  #ip6tables: RuleManager;
  #ipv6 = false;
  /** iptables mode with an IPv4 half (false: IPv6-only, the ip6tables chains alone). */
  #ipv4 = true;
  #nftables: NftKeeper;
  #mode: Mode | null = null;

  constructor(opts: FirewallPartOptions) {
    this.#run = opts.runner ?? commandRunner(opts.commandPrefix ?? []);
    this.#iptables = new RuleManager({ ...opts, runner: this.#run });
    this.#ip6tables = new RuleManager({ ...opts, runner: this.#run, family: 6 });
    this.#nftables = new NftKeeper({ ...opts, runner: this.#run });
    this.checkIntervalMs = this.#iptables.checkIntervalMs;
  }

  /** The keeper in use: what /readyz and the logs name. */
  get name(): string {
    return this.#ipv4 ? this.#active().name : this.#ip6tables.name;
  }

  /** The mode the config picked; null before the first apply. */
  get mode(): Mode | null {
    return this.#mode;
  }

  #active(): RuleManager | NftKeeper {
    return this.#mode === "nftables" ? this.#nftables : this.#iptables;
  }

  async apply(cfg: NetworkConfig, lease: Lease, prev: Lease | null): Promise<void> {
    const mode: Mode = cfg.enableNFTables ? "nftables" : "iptables";
    if (mode !== this.#mode) {
      this.#mode = mode;
      await this.#removeOtherMode(mode);
    }
    this.#ipv6 = mode === "iptables" && cfg.enableIPv6;
    this.#ipv4 = mode === "nftables" || cfg.enableIPv4;
    if (this.#ipv4) await this.#active().apply(cfg, lease, prev);
    if (this.#ipv6) await this.#ip6tables.apply(cfg, lease, prev);
  }

  async check(): Promise<boolean> {
    if (!this.#mode) return false;
    const a = this.#ipv4 ? await this.#active().check() : false;
    return this.#ipv6 ? (await this.#ip6tables.check()) || a : a;
  }

  async stop(): Promise<void> {
    await Promise.all([this.#iptables.stop(), this.#ip6tables.stop(), this.#nftables.stop()]);
  }

  /**
   * Removes what the other mode left on this host. Failing to is logged, never fatal: a host
   * without iptables (nftables mode on RHEL 10) or without nft has nothing of that mode.
   */
  async #removeOtherMode(mode: Mode): Promise<void> {
    try {
      if (mode === "nftables") {
        await new RuleManager({ ipMasq: false, forward: false, runner: this.#run }).remove();
        await new RuleManager({ ipMasq: false, forward: false, runner: this.#run, family: 6 })
          .remove().catch((e) => {
            log.debug("no ip6tables chains to remove: {error}", { error: (e as Error).message });
          });
        return;
      }
      for (const t of await removeNftTables(this.#run)) {
        log.info("removed {what} left by an nftables run (this config uses iptables)", {
          what: t,
        });
      }
    } catch (e) {
      const msg = (e as Error).message;
      const level = msg.includes("was not found in PATH") ? "debug" : "warn";
      log[level]("cannot remove the {other} rules an earlier run may have left: {error}", {
        other: mode === "nftables" ? "iptables" : "nftables",
        error: msg,
      });
    }
  }
}
