/**
 * Telling a live node that publishes our public IP from a dead one, through the registry alone
 * (issue: two hosts with one `--public-ip`). Leases carry their writer's identity
 * (`WeftNodeID`); a lease naming our public IP under another identity is a *rival*. Claiming it
 * writes it back unchanged but for our identity and a claim flag (peers see no datapath
 * change); a live holder sees the claim on its own key through its watch and writes the lease
 * back at once (LeaseManager.observeOwnWrite), so an answered claim means "alive: wait, not
 * ready", an unanswered one "dead: the lease is ours" (a host replaced with the same address).
 *
 * @example
 * ```ts
 * const claims = new Claims(registry, cfg, { claimWaitMs: 3000 });
 * if (claims.isRival(lease, me) && (await claims.claim(lease, me, 60)).outcome === "alive") {
 *   await claims.waitGone(lease); // claims.conflict says why, meanwhile
 * }
 * ```
 */
import { getLogger } from "@logtape/logtape";
import type { Registry } from "../registry/contract/registry.ts";
import { metrics } from "../base/metrics.ts";
import { sleep } from "../base/async.ts";
import { encodeLeaseValue, type KnownLease, type Lease, type LeaseAttrs } from "./codec.ts";
import { LeaseDecoder } from "./decode.ts";
import { namesNode, nodeAddress } from "./allocate.ts";
import type { NetworkConfig } from "../config/network.ts";

const log = getLogger(["weft", "lease"]);

/** Counted here and where a holder answers a claim. */
export const conflicts = metrics.counter(
  "weft_lease_conflicts_total",
  "Times another node publishing this node's public IP claimed or held this node's lease.",
);

/** What a claim found: the holder answered ("alive"), did not ("dead"), or someone else wrote. */
export interface ClaimOutcome {
  outcome: "alive" | "dead" | "changed";
  /** Revision of the lease after the claim (the claim's own write when "dead"). */
  revision: number;
}

export class Claims {
  #decoder: LeaseDecoder;
  #conflict: string | null = null;

  /** `claimWaitMs`: how long a claim waits for an answer (default 3 s). */
  constructor(
    readonly registry: Registry,
    readonly config: NetworkConfig,
    readonly opts: { claimWaitMs?: number } = {},
  ) {
    this.#decoder = new LeaseDecoder({ ipv6: config.enableIPv6 });
  }

  /** Why this node waits without a lease (another live node has its public IP), or null. */
  get conflict(): string | null {
    return this.#conflict;
  }

  /**
   * A lease naming `me`'s address (its IPv6 one on an IPv6-only network) under another identity
   * (both identities known).
   */
  isRival(l: Lease, me: LeaseAttrs): boolean {
    return !!me.nodeId && !!l.attrs.nodeId && l.attrs.nodeId !== me.nodeId &&
      namesNode(this.config, l, nodeAddress(this.config, me));
  }

  /**
   * Tells a live node with our public IP from a dead one, without disturbing either's datapath:
   * writes the lease back unchanged but for our identity and a claim flag, then waits. A live
   * holder sees the claim on its own key and writes the lease back ("alive"); an unanswered
   * claim leaves the lease ours ("dead": a host replaced with the same address, or an agent
   * whose identity file was lost). "changed": someone else wrote it meanwhile; look again.
   */
  async claim(
    rival: KnownLease,
    me: LeaseAttrs,
    ttlSeconds: number,
    signal?: AbortSignal,
  ): Promise<ClaimOutcome> {
    const ttl = rival.expiresAt === null ? null : ttlSeconds;
    const claim = encodeLeaseValue({ ...rival.attrs, nodeId: me.nodeId, claim: true });
    const r = await this.registry.updateLease(rival.key, claim, ttl, rival.revision);
    if (!r) return { outcome: "changed", revision: 0 };
    const waitMs = this.opts.claimWaitMs ?? 3000;
    log.warn(
      "lease {key} names this node's public IP {ip} but another node's identity ({other}); " +
        "claiming it: a live node keeps it by answering within {s} s",
      { key: rival.key, ip: rival.attrs.publicIP, other: rival.attrs.nodeId, s: waitMs / 1000 },
    );
    await sleep(waitMs, signal);
    signal?.throwIfAborted();
    const now = await this.registry.getLease(rival.key);
    if (now && now.revision === r.revision) return { outcome: "dead", revision: r.revision };
    const d = now ? this.#decoder.decode(now) : null;
    const alive = d && d.attrs.nodeId === rival.attrs.nodeId && !d.attrs.claim;
    return { outcome: alive ? "alive" : "changed", revision: now?.revision ?? 0 };
  }

  /**
   * Another live node holds `rival` with our public IP: this node is not ready ({@link conflict})
   * and waits, checking at the lease's expiry (at least every 10 s), until the lease is gone
   * or no longer that node's. Never competes for it meanwhile: two hosts must not flap one lease.
   */
  async waitGone(rival: KnownLease, signal?: AbortSignal): Promise<void> {
    this.#conflict = `public IP ${rival.attrs.publicIP} is published by another live node ` +
      `(weft node id ${rival.attrs.nodeId}) holding lease ${rival.key}: two hosts share this ` +
      `public IP. This node waits, without a lease, until that lease is gone; give each host ` +
      `its own address (--public-ip), or stop the other agent`;
    conflicts.inc();
    log.error("{msg}", { msg: this.#conflict });
    try {
      let cur: KnownLease | null = rival;
      while (cur && cur.attrs.nodeId === rival.attrs.nodeId) {
        const untilExpiry = cur.expiresAt === null ? 10_000 : cur.expiresAt - Date.now() + 500;
        await sleep(Math.min(10_000, Math.max(1000, untilExpiry)), signal);
        signal?.throwIfAborted();
        const now = await this.registry.getLease(rival.key);
        cur = now ? this.#decoder.decode(now) : null;
      }
      log.info("lease {key} of the other node with public IP {ip} is gone; acquiring", {
        key: rival.key,
        ip: rival.attrs.publicIP,
      });
    } finally {
      this.#conflict = null;
    }
  }
}
