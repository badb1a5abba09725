/**
 * The shape both firewall keepers share (iptables chains, nftables tables): a {@link Part} whose
 * kernel commands run one at a time, whose periodic `check()` is its `ensure()` (bring the rules
 * to what they should be; true when something had to change), logged as a repair, and whose
 * `stop()` only waits for the command in flight: the rules stay, as the datapath does.
 *
 * @example
 * ```ts
 * class MyKeeper extends RuleKeeper {
 *   readonly name = "my rules";
 *   constructor() { super(["weft", "mine"], 5); }
 *   apply() { return this.serial(async () => {}); }
 *   ensure() { return this.serial(async () => false); }
 * }
 * ```
 */
import { getLogger, type Logger } from "@logtape/logtape";
import type { NetworkConfig } from "../config/network.ts";
import type { Lease } from "../lease/codec.ts";
import type { Part } from "./part.ts";

export abstract class RuleKeeper implements Part {
  abstract readonly name: string;
  readonly checkIntervalMs: number;
  protected readonly log: Logger;
  #queue: Promise<unknown> = Promise.resolve();

  /** `category`: the log category; `resyncSeconds`: `--iptables-resync` (default 5). */
  constructor(category: string[], resyncSeconds = 5) {
    this.log = getLogger(category);
    this.checkIntervalMs = resyncSeconds * 1000;
  }

  abstract apply(cfg: NetworkConfig, lease: Lease, prev: Lease | null): Promise<void>;

  /** Checks the rules and repairs them when they differ; true when it changed anything. */
  abstract ensure(): Promise<boolean>;

  /** The periodic resync: `ensure()`, logging when something had to be repaired. */
  async check(): Promise<boolean> {
    if (!await this.ensure()) return false;
    this.log.warn(`${this.name} were missing or changed and have been restored`);
    return true;
  }

  /** Waits for a command in flight; the rules stay in place, as flannel leaves them. */
  async stop(): Promise<void> {
    await this.#queue;
  }

  /** Runs `fn` after every command queued before it (one kernel transaction at a time). */
  protected serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.#queue.then(fn, fn);
    this.#queue = next.catch(() => {});
    return next;
  }
}
