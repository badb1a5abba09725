/**
 * This node's lease: acquire it (own previous lease by public IP, then the subnet from the old
 * subnet.env, then a random one of the first 100 free subnets), keep it renewed, and take it back
 * when someone deletes it. Written once over the Registry interface.
 *
 * @example
 * ```ts
 * const mgr = new LeaseManager(registry, cfg, { ttlSeconds: 86400, renewMarginMs: 3600_000 });
 * const lease = await mgr.acquire({ publicIP: "198.18.0.11", backendType: "host-gw" }, null);
 * await mgr.runRenewal(signal, (l) => console.log("lease now", l.key)); // until signal aborts
 * ```
 */
import { getLogger } from "@logtape/logtape";
import type { NetworkConfig } from "../config/network.ts";
import { formatCidr, type Ipv4Net } from "../base/ipv4.ts";
import { formatCidr6, type Ipv6Net } from "../base/ipv6.ts";
import type { Registry } from "../registry/contract/registry.ts";
import { metrics } from "../base/metrics.ts";
import { encodeLeaseValue, type KnownLease, type LeaseAttrs, subnetKey } from "./codec.ts";
import {
  capacity,
  capacity6,
  chooseOwnLease,
  findOwnLease,
  freeSubnets,
  freeSubnets6,
  halfTakenBefore,
  hasUsableIpv6Half,
  inNetwork,
  inNetwork6,
  isAllocatable,
  isAllocatable6,
  isFree,
  isFree6,
  namesNode,
  nodeAddress,
} from "./allocate.ts";
import { LeaseDecoder } from "./decode.ts";
import { Claims, conflicts } from "./claim.ts";
import { sleep } from "../base/async.ts";
import { FatalError } from "../base/errors.ts";

const log = getLogger(["weft", "lease"]);

const leaseExpiry = metrics.gauge(
  "weft_lease_expiry_timestamp_seconds",
  "When this node's lease expires (0: reservation without expiry).",
);
const leaseHeld = metrics.gauge("weft_lease_held", "1 while this node holds a lease.");
const renewals = metrics.counter("weft_lease_renewals_total", "Successful lease renewals.");
const renewFailures = metrics.counter(
  "weft_lease_renewal_failures_total",
  "Failed lease renewal attempts (registry unreachable or compare failed).",
);
const acquisitions = metrics.counter(
  "weft_lease_acquisitions_total",
  "Leases acquired (first start, and again after the lease was lost).",
);

/** No subnet left in the network: an operator must enlarge the network or free leases. */
export class OutOfSubnetsError extends FatalError {
  override name = "OutOfSubnetsError";
}

export interface LeaseManagerOptions {
  /** Lease TTL in seconds (flannel: 24 h). */
  ttlSeconds: number;
  /** Renew this long before expiry (clamped to half the TTL for short test TTLs). */
  renewMarginMs: number;
  /** How many create races to lose before giving up (each re-lists). */
  maxRaceRetries?: number;
  /** Delay between renewal retries while the registry fails. */
  retryMs?: number;
  /**
   * How long a claim on a lease carrying another node's identity waits for that node to answer
   * (a live holder writes the lease back at once; its watch delivers the claim in milliseconds).
   */
  claimWaitMs?: number;
}

/** "198.19.5.0/24", "198.19.5.0/24 and 2001:db8:1:5::/64", or the IPv6 subnet alone. */
function describe(subnet: Ipv4Net, subnet6: Ipv6Net | null): string {
  if (!subnet6) return formatCidr(subnet);
  return subnet.prefix === 0
    ? formatCidr6(subnet6)
    : `${formatCidr(subnet)} and ${formatCidr6(subnet6)}`;
}

/** Outcome of claiming a lease that names this node's public IP but another node's identity. */

export class LeaseManager {
  #decoder: LeaseDecoder;
  #lease: KnownLease | null = null;
  #attrs: LeaseAttrs | null = null;
  #wake: (() => void) | null = null;
  #lost = false;
  /** A lease re-acquired whose datapath/subnet.env update has not succeeded yet. */
  #unapplied: KnownLease | null = null;
  /** A claim on our lease by another node with our public IP, to be answered. */
  #claimed: { revision: number; by: string } | null = null;
  #claims: Claims;

  constructor(
    readonly registry: Registry,
    readonly config: NetworkConfig,
    readonly opts: LeaseManagerOptions,
  ) {
    this.#claims = new Claims(registry, { claimWaitMs: opts.claimWaitMs });
    this.#decoder = new LeaseDecoder({ ipv6: config.enableIPv6 });
  }

  /** True while the lease is known lost and not yet re-acquired and applied. */
  get lost(): boolean {
    return this.#lost || this.#unapplied !== null;
  }

  /**
   * Why this node holds no lease although one names its public IP: another live node publishes
   * the same public IP and holds it (for /readyz). Null otherwise.
   */
  get conflict(): string | null {
    return this.#claims.conflict;
  }

  /** The lease currently held, or null before acquisition. */
  get lease(): KnownLease | null {
    return this.#lease;
  }

  /** All decodable leases now in the registry (malformed ones logged and skipped). */
  async list(): Promise<{ leases: KnownLease[]; revision: number }> {
    const { leases, revision } = await this.registry.listLeases();
    return { leases: this.#decoder.decodeAll(leases), revision };
  }

  /**
   * This node's lease from a previous run, found by public IP as {@link acquire} would choose it
   * (no changes made).
   */
  async findPrevious(
    publicIP: string,
    hints: { hint?: Ipv4Net | null; hint6?: Ipv6Net | null; nodeId?: string } = {},
  ): Promise<KnownLease | null> {
    return findOwnLease(this.config, (await this.list()).leases, publicIP, hints);
  }

  /**
   * Acquires a lease for `attrs`. `hint` is the subnet from an existing subnet.env. Which lease
   * naming our public IP is ours is decided by {@link chooseOwnLease}; one carrying another
   * node's identity is claimed first (see {@link Claims}), and while that node is alive this
   * waits (not ready, {@link conflict} says why) until its lease is gone. Lost create races are
   * retried with a fresh list; throws OutOfSubnetsError when nothing is free.
   *
   * With IPv6 enabled both halves are allocated together (`hint6`: the IPv6 subnet from
   * subnet.env); a lease of ours without a usable IPv6 half (IPv6 just enabled on a running
   * cluster) keeps its IPv4 subnet and gains an IPv6 half: the key changes, so the new key is
   * created and the old one deleted (flanneld instead picks a new subnet, renumbering the node).
   */
  async acquire(
    attrs: LeaseAttrs,
    hint: Ipv4Net | null,
    signal?: AbortSignal,
    hint6: Ipv6Net | null = null,
  ): Promise<KnownLease> {
    this.#attrs = attrs;
    const value = encodeLeaseValue(attrs);
    const tries = this.opts.maxRaceRetries ?? 20;
    let hintTries = 0;
    for (let attempt = 1; attempt <= tries; attempt++) {
      signal?.throwIfAborted();
      const { leases } = await this.list();
      const cfg = this.config;
      const { lease: own, others } = chooseOwnLease(cfg, leases, nodeAddress(cfg, attrs), {
        hint,
        hint6,
        nodeId: attrs.nodeId,
      });
      const rival = [own, ...others].find((l) => l && this.#claims.isRival(l, attrs));
      if (rival) {
        attempt--; // a claim is not a lost race
        const c = await this.#claims.claim(rival, attrs, this.opts.ttlSeconds, signal);
        if (c.outcome === "alive") {
          await this.#claims.waitGone(rival, signal);
        }
        continue;
      }
      if (own && !hasUsableIpv6Half(cfg, own)) {
        const held = await this.#addIpv6Half(own, attrs, leases, hint6, signal);
        if (held) return held;
        continue;
      }
      if (own) {
        const ttl = own.expiresAt === null ? null : this.opts.ttlSeconds;
        const r = await this.registry.updateLease(own.key, value, ttl, own.revision);
        if (r) {
          log.info("reusing lease {subnet} of public IP {ip}{kind}", {
            subnet: formatCidr(own.subnet),
            ip: attrs.publicIP,
            kind: ttl === null ? " (reservation)" : "",
          });
          const held = this.#held(r.key, own.subnet, attrs, r.expiresAt, r.revision, own.subnet6);
          if (await this.#tidy(held, signal)) return held;
        }
        continue; // changed under us, or yielded to an older holder: look again
      }
      let subnet: Ipv4Net = { ip: 0, prefix: 0 }; // IPv6-only: the empty network, as flanneld
      const hinted4 = cfg.enableIPv4 && !!hint && isAllocatable(this.config, hint) &&
        isFree(hint, inNetwork(this.config, leases));
      const subnet6 = cfg.enableIPv6 ? this.#pick6(leases, hint6) : null;
      const hinted = cfg.enableIPv4 ? hinted4 : !!hint6 && subnet6?.ip === hint6.ip;
      if (hinted4) subnet = hint!;
      else if (cfg.enableIPv4) {
        const free = freeSubnets(this.config, leases, 100);
        if (free.length === 0) {
          throw new OutOfSubnetsError(
            `out of subnets: network ${
              formatCidr(this.config.network)
            } (/${this.config.subnetLen} ` +
              `subnets, ${capacity(this.config)} possible) has ${leases.length} leases and no ` +
              `free subnet; enlarge Network or SubnetLen in the config, or delete stale leases`,
          );
        }
        subnet = free[Math.floor(Math.random() * free.length)];
      }
      const key = subnetKey(subnet, subnet6);
      const r = await this.registry.createLease(key, value, this.opts.ttlSeconds);
      if (r) {
        const held = this.#held(r.key, subnet, attrs, r.expiresAt, r.revision, subnet6);
        if (await this.#collided(held)) {
          hint = hint6 = null;
          await sleep(Math.random() * 20 * attempt, signal);
          continue;
        }
        log.info("acquired lease {subnet}", { subnet: describe(subnet, subnet6) });
        if (await this.#tidy(held, signal)) return held;
        attempt--; // yielded to a node that holds our public IP: not a lost race
        continue;
      }
      log.debug("lost the race for {subnet} (attempt {n}); retrying", {
        subnet: describe(subnet, subnet6),
        n: attempt,
      });
      // The subnet.env subnet may still be held by our own just-expired lease, which the list
      // already hides but the registry has not deleted yet: wait for it a little instead of
      // moving this node (and its pods) to a new subnet.
      if (hinted && ++hintTries <= 15) {
        attempt--; // waiting for our own expired lease is not a lost race
        await sleep(200, signal);
        continue;
      }
      hint = hint6 = null;
      await sleep(Math.random() * 20 * attempt, signal);
    }
    throw new Error(
      `could not acquire a lease after ${tries} attempts: other nodes kept taking the chosen ` +
        `subnets; check for a flood of agents starting at once and retry`,
    );
  }

  /**
   * After taking `held`, looks at the other leases naming our public IP: one written earlier by
   * another node is claimed, and if that node is alive ours is given up (returns false: it was
   * there first; two agents that started at once settle by revision order). Leases carrying our
   * identity (orphans of an earlier subnet, or claimed from a dead node) are released; any
   * other is reported and left to expire.
   */
  async #tidy(held: KnownLease, signal?: AbortSignal): Promise<boolean> {
    const { leases } = await this.list();
    const me = nodeAddress(this.config, held.attrs);
    const others = leases.filter((l) => l.key !== held.key && namesNode(this.config, l, me));
    for (const l of others) {
      if (this.#claims.isRival(l, held.attrs) && l.revision < held.revision) {
        const c = await this.#claims.claim(l, held.attrs, this.opts.ttlSeconds, signal);
        if (c.outcome === "dead" && await this.registry.deleteLease(l.key, c.revision)) {
          log.info("released {key}: claimed from a node that did not answer", { key: l.key });
        }
        if (c.outcome !== "alive") continue;
        await this.registry.deleteLease(held.key, held.revision);
        this.#lease = null;
        leaseHeld.set(0);
        await this.#claims.waitGone(l, signal);
        return false;
      }
    }
    for (const l of others) {
      if (this.#claims.isRival(l, held.attrs)) continue;
      const ours = !!held.attrs.nodeId && l.attrs.nodeId === held.attrs.nodeId;
      if (ours && l.expiresAt !== null && await this.registry.deleteLease(l.key, l.revision)) {
        log.info("released {key}, an earlier lease of this node", { key: l.key });
        continue;
      }
      log.warn(
        "lease {key} also names this node's public IP {ip}{kind}; this node uses {own}, and " +
          "leaves it to expire: delete it from the registry if no host uses it",
        {
          key: l.key,
          ip: l.attrs.publicIP,
          kind: l.expiresAt === null ? " (a reservation)" : "",
          own: held.key,
        },
      );
    }
    return true;
  }

  /** The IPv6 half for a new lease: the subnet.env one when free, else a random free one. */
  #pick6(leases: KnownLease[], hint6: Ipv6Net | null): Ipv6Net {
    const cfg = this.config;
    if (hint6 && isAllocatable6(cfg, hint6) && isFree6(hint6, inNetwork6(cfg, leases))) {
      return hint6;
    }
    const free = freeSubnets6(cfg, leases, 100);
    if (free.length === 0) {
      throw new OutOfSubnetsError(
        `out of IPv6 subnets: IPv6Network ${formatCidr6(cfg.ipv6!.network)} (/${
          cfg.ipv6!.subnetLen
        } subnets, ${capacity6(cfg)} possible) has no free subnet; enlarge IPv6Network or ` +
          `IPv6SubnetLen in the config, or delete stale leases`,
      );
    }
    return free[Math.floor(Math.random() * free.length)];
  }

  /**
   * After a create: whether a lease written before ours holds one of our halves (a dual-stack key
   * is unique only as a pair). Ours is then deleted and the caller picks again. IPv4-only keys
   * are the subnet itself, and the registry's create-if-absent settles their races.
   */
  async #collided(held: KnownLease, replacing?: string): Promise<boolean> {
    if (!this.config.enableIPv6) return false;
    const { leases } = await this.list();
    const other = halfTakenBefore(this.config, held, leases.filter((l) => l.key !== replacing));
    if (!other) return false;
    log.debug("{key} shares a subnet with {other}, written first; picking again", {
      key: held.key,
      other: other.key,
    });
    await this.registry.deleteLease(held.key, held.revision);
    this.#lease = null;
    leaseHeld.set(0);
    return true;
  }

  /**
   * Gives our lease `own` (IPv4 only, or an IPv6 half the config no longer allows) an IPv6 half,
   * keeping its IPv4 subnet: creates the dual-stack key (a reservation stays one), then deletes
   * the old key. Null when raced (the caller lists again).
   */
  async #addIpv6Half(
    own: KnownLease,
    attrs: LeaseAttrs,
    leases: KnownLease[],
    hint6: Ipv6Net | null,
    signal?: AbortSignal,
  ): Promise<KnownLease | null> {
    const subnet6 = this.#pick6(leases, hint6);
    const key = subnetKey(own.subnet, subnet6);
    const ttl = own.expiresAt === null ? null : this.opts.ttlSeconds;
    const r = await this.registry.createLease(key, encodeLeaseValue(attrs), ttl);
    if (!r) return null;
    const held = this.#held(r.key, own.subnet, attrs, r.expiresAt, r.revision, subnet6);
    if (await this.#collided(held, own.key)) return null;
    await this.registry.deleteLease(own.key, own.revision);
    log.info("lease {old} gains an IPv6 half, keeping its IPv4 subnet: now {key}{kind}", {
      old: own.key,
      key,
      kind: ttl === null ? " (reservation)" : "",
    });
    return await this.#tidy(held, signal) ? held : null;
  }

  #held(
    key: string,
    subnet: Ipv4Net,
    attrs: LeaseAttrs,
    exp: number | null,
    rev: number,
    subnet6?: Ipv6Net | null,
  ) {
    this.#lease = { key, subnet, attrs, expiresAt: exp, revision: rev };
    if (subnet6) this.#lease.subnet6 = subnet6;
    this.#lost = false;
    acquisitions.inc();
    leaseHeld.set(1);
    leaseExpiry.set(exp === null ? 0 : Math.round(exp / 1000));
    return this.#lease;
  }

  /** Our lease was deleted or taken over: re-acquire at once. */
  notifyLost(): void {
    if (!this.#lease) return;
    this.#lost = true;
    this.#wake?.();
  }

  /**
   * The watcher saw our key deleted at `revision`. A delete older than our own write is the
   * previous holder's, arriving late, and is ignored.
   */
  notifyDeleted(revision: number): void {
    if (this.#lease && revision > this.#lease.revision) this.notifyLost();
  }

  /**
   * Called by the watcher for each write to our own key (at `revision`). A write naming another
   * public IP means someone took the subnet over. A claim by another node with our public IP is
   * answered (the lease written back); a write by such a node that we did not answer in time
   * means it holds the lease now, and re-acquiring settles who keeps it. Our own writes
   * (possibly seen before their reply) are ignored.
   */
  observeOwnWrite(attrs: LeaseAttrs | null, revision?: number): void {
    const l = this.#lease;
    if (!l || !attrs || (revision !== undefined && revision <= l.revision)) return;
    const cfg = this.config;
    if (nodeAddress(cfg, attrs) !== nodeAddress(cfg, l.attrs)) return this.notifyLost();
    const me = l.attrs.nodeId;
    if (!me || !attrs.nodeId || attrs.nodeId === me) return;
    if (attrs.claim && revision !== undefined) {
      this.#claimed = { revision, by: attrs.nodeId };
      this.#wake?.();
      return;
    }
    this.notifyLost();
  }

  #nextRenewIn(): number {
    const l = this.#lease!;
    if (this.#claimed) return 0;
    if (this.#unapplied) return this.opts.retryMs ?? 3000;
    if (l.expiresAt === null) return 60_000; // reservation: only check it still exists
    const margin = Math.min(this.opts.renewMarginMs, this.opts.ttlSeconds * 500);
    // Up to a tenth of the margin earlier, at random: leases created at once (a cluster started
    // together) are not all renewed in the same second.
    return Math.max(0, l.expiresAt - margin * (1 + Math.random() / 10) - Date.now());
  }

  /**
   * Keeps the lease alive until `signal` aborts. Registry failures are retried every few seconds
   * (the datapath stays up meanwhile). When the lease was lost it is re-acquired, preferring the
   * same subnet, and `onChange` is told.
   */
  async runRenewal(signal: AbortSignal, onChange: (l: KnownLease) => Promise<void> | void) {
    const retryMs = this.opts.retryMs ?? 3000;
    while (!signal.aborted && this.#lease) {
      const wake = new AbortController();
      this.#wake = () => wake.abort();
      if (this.#lost) wake.abort();
      await sleep(this.#nextRenewIn(), AbortSignal.any([signal, wake.signal]));
      this.#wake = null;
      if (signal.aborted) return;
      const cur = this.#lease;
      try {
        if (this.#lost) {
          await this.#reacquire(onChange, signal);
          continue;
        }
        if (this.#claimed) {
          await this.#answerClaim(cur);
          continue;
        }
        if (this.#unapplied) {
          await onChange(this.#unapplied);
          this.#unapplied = null;
          log.info("now using lease {key}", { key: cur.key });
          continue;
        }
        if (cur.expiresAt === null) {
          const still = await this.registry.getLease(cur.key);
          if (!still) this.#lost = true;
          continue;
        }
        const r = await this.registry.updateLease(
          cur.key,
          encodeLeaseValue(cur.attrs),
          this.opts.ttlSeconds,
          cur.revision,
        );
        if (r) {
          this.#lease = { ...cur, expiresAt: r.expiresAt, revision: r.revision };
          renewals.inc();
          leaseExpiry.set(r.expiresAt === null ? 0 : Math.round(r.expiresAt / 1000));
          log.debug("renewed lease {key}", { key: cur.key });
        } else {
          log.warn("lease {key} changed or vanished in the registry; re-acquiring", {
            key: cur.key,
          });
          this.#lost = true;
        }
      } catch (e) {
        renewFailures.inc();
        if (this.#lost || this.#unapplied) {
          log.warn("cannot {what} this node's lease: {error}; retrying in {s} s", {
            what: this.#lost ? "re-acquire" : "apply",
            error: (e as Error).message,
            s: retryMs / 1000,
          });
          await sleep(retryMs, signal);
          continue;
        }
        const left = cur.expiresAt === null
          ? "no expiry"
          : `expires in ${Math.max(0, Math.round((cur.expiresAt - Date.now()) / 1000))} s`;
        log.warn("cannot renew lease {key} ({left}): {error}; retrying in {s} s, datapath kept", {
          key: cur.key,
          left,
          error: (e as Error).message,
          s: retryMs / 1000,
        });
        await sleep(retryMs, signal);
      }
    }
  }

  /** Writes our lease back over another node's claim (compare on the claim's revision). */
  async #answerClaim(cur: KnownLease) {
    const c = this.#claimed!;
    const ttl = cur.expiresAt === null ? null : this.opts.ttlSeconds;
    const r = await this.registry.updateLease(
      cur.key,
      encodeLeaseValue(cur.attrs),
      ttl,
      c.revision,
    );
    this.#claimed = null;
    if (!r) {
      this.#lost = true; // written again since the claim: re-acquiring looks at who holds it
      return;
    }
    this.#lease = { ...cur, expiresAt: r.expiresAt, revision: r.revision };
    conflicts.inc();
    log.error(
      "another node (weft node id {by}) publishing this node's public IP {ip} claimed lease " +
        "{key}; this node keeps it and the other waits. Two hosts share this public IP: give " +
        "each host its own address (--public-ip)",
      { by: c.by, ip: cur.attrs.publicIP, key: cur.key },
    );
  }

  async #reacquire(onChange: (l: KnownLease) => Promise<void> | void, signal: AbortSignal) {
    const old = this.#lease!;
    log.warn("lease {key} was deleted or taken over by someone else; re-acquiring", {
      key: old.key,
    });
    leaseHeld.set(0);
    const l = await this.acquire(this.#attrs!, old.subnet, signal, old.subnet6 ?? null);
    if (l.key !== old.key) {
      log.warn("now holding {key} instead of {old}", { key: l.key, old: old.key });
    }
    // Applied (datapath, rules, subnet.env) by the loop, and retried there until it succeeds.
    this.#unapplied = l;
    await onChange(l);
    this.#unapplied = null;
  }
}
