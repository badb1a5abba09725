/**
 * This node's lease: acquire it (`acquire.ts`), keep it renewed, answer claims on it by other
 * nodes with the same public IP (`claim.ts`), and take it back when someone deletes it. Written
 * once over the Registry interface.
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
import type { Ipv4Net } from "../base/ipv4.ts";
import type { Ipv6Net } from "../base/ipv6.ts";
import type { Registry, RegistryLease, WatchedExpiry } from "../registry/contract/registry.ts";
import { metrics } from "../base/metrics.ts";
import { encodeLeaseValue, type KnownLease, type Lease, type LeaseAttrs } from "./codec.ts";
import { findOwnLease, namesNode, nodeAddress } from "./allocate.ts";
import { type AcquireHost, acquireLease, known, type LeaseManagerOptions } from "./acquire.ts";

export { type LeaseManagerOptions, OutOfSubnetsError } from "./acquire.ts";
import { LeaseDecoder } from "./decode.ts";
import { VerifiedSet } from "./verified.ts";
import { Claims, conflicts } from "./claim.ts";
import { sleep } from "../base/async.ts";

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

/**
 * How old a list findPrevious read may be for the acquisition that follows to start from it: a
 * list costs O(leases), and three per joining node (previous lease, acquire, check after the
 * create) add up when thousands join. A stale list costs at most a lost race or a failed
 * compare (both list again); the leases naming this node are listed again after the create.
 */
const RECENT_LIST_MS = 2000;

/** A list acquisition reads; a full one carries the registry's exact key set too. */
type AcquireList = { leases: Lease[]; revision: number; verified?: VerifiedSet };

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
  #host: AcquireHost;
  #renewAt: number | null = null;
  /** findPrevious's list, for the acquisition that follows it (see RECENT_LIST_MS). */
  #recent: { address: string; list: AcquireList; at: number } | null = null;
  /** The last full list acquisition read, for the peer watcher to start from (takeListed). */
  #listed: VerifiedSet | null = null;

  constructor(
    readonly registry: Registry,
    readonly config: NetworkConfig,
    readonly opts: LeaseManagerOptions,
  ) {
    this.#claims = new Claims(registry, config, { claimWaitMs: opts.claimWaitMs });
    this.#decoder = new LeaseDecoder({ ipv6: config.enableIPv6 });
    this.#host = {
      registry,
      config,
      opts,
      claims: this.#claims,
      list: (address, since) => this.#listForAcquire(address, since),
      held: (l) => this.#held(l),
      dropped: () => {
        this.#lease = null;
        leaseHeld.set(0);
      },
    };
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

  /** Epoch ms the renewal loop next wakes up to renew (or check) the lease; null before it runs. */
  get nextRenewalAt(): number | null {
    return this.#renewAt;
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
   * The leases acquisition needs: every lease (peers' TTL leases may carry an "unknown" expiry:
   * looking each up is one etcd call per lease, N² calls when N nodes join at once), and the
   * leases naming `address` (this node's) with their exact expiry, read one by one; one that
   * has expired is left out, as listLeases does. A peer's lease that has just expired still
   * holds its subnet here until the registry deletes it (etcd: within about a second). With
   * `since`: only the leases written after that revision.
   */
  async #listForAcquire(address: string, since?: number): Promise<AcquireList> {
    const recent = this.#recent;
    this.#recent = null;
    if (
      since === undefined && recent && recent.address === address &&
      Date.now() - recent.at < RECENT_LIST_MS
    ) {
      this.#listed = recent.list.verified ?? null;
      return recent.list;
    }
    const { leases, revision } = await this.registry.listPeerLeases(since);
    const now = Date.now();
    const live = (r: RegistryLease<WatchedExpiry>) => {
      const l = this.#decoder.decode(r);
      return l && (typeof l.expiresAt !== "number" || l.expiresAt > now) ? l : null;
    };
    // A full list is also the peer watcher's start: kept as the registry's exact key set, so
    // the watcher's first periodic re-list reads only what was written since (VerifiedSet). An
    // expired lease stays in it as a key the registry still counts, not as a lease.
    const verified = since === undefined ? VerifiedSet.of(leases, revision, live) : null;
    const decoded = verified
      ? [...verified.set.values()].filter((x): x is Lease => typeof x === "object")
      : leases.map(live).filter((l): l is Lease => l !== null);
    const out: Lease[] = [];
    for (const l of decoded) {
      if (l.expiresAt !== "unknown" || !namesNode(this.config, l, address)) {
        out.push(l);
        continue;
      }
      const r = await this.registry.getLease(l.key);
      const known = r && this.#decoder.decode(r);
      if (known) out.push(known);
    }
    if (verified) this.#listed = verified;
    return { leases: out, revision, ...(verified ? { verified } : {}) };
  }

  /**
   * The last full lease list the acquisition read, once (then null): the registry's exact key
   * set at its revision, every decodable lease decoded with this manager's config (as a watcher
   * for the same config decodes), an expired one kept as a key only. The peer watcher starts
   * from it (`PeerWatcher.run`'s `start`) and watches from the revision after it, so a joining
   * node reads every lease once, not twice (O(N²) entries less for a cluster of N joining at
   * once), and its first periodic re-list reads only what was written since.
   */
  takeListed(): VerifiedSet | null {
    const l = this.#listed;
    this.#listed = null;
    return l;
  }

  /**
   * This node's lease from a previous run, found by public IP as {@link acquire} would choose it
   * (no changes made).
   */
  async findPrevious(
    publicIP: string,
    hints: { hint?: Ipv4Net | null; hint6?: Ipv6Net | null; nodeId?: string } = {},
  ): Promise<KnownLease | null> {
    const list = await this.#listForAcquire(publicIP);
    // The agent acquires right after this: that starts from this list instead of another one.
    this.#recent = { address: publicIP, list, at: Date.now() };
    const own = findOwnLease(this.config, list.leases, publicIP, hints);
    return own && known(own);
  }

  /**
   * Acquires a lease for `attrs` (see {@link acquireLease}: which lease naming our public IP is
   * ours, claims on other nodes' leases, both halves with IPv6). `hint`/`hint6`: the subnets from
   * an existing subnet.env. Throws OutOfSubnetsError when nothing is free.
   */
  acquire(
    attrs: LeaseAttrs,
    hint: Ipv4Net | null,
    signal?: AbortSignal,
    hint6: Ipv6Net | null = null,
  ): Promise<KnownLease> {
    this.#attrs = attrs;
    return acquireLease(this.#host, attrs, hint, signal, hint6);
  }

  #held(l: KnownLease): KnownLease {
    this.#lease = l;
    this.#lost = false;
    acquisitions.inc();
    leaseHeld.set(1);
    leaseExpiry.set(l.expiresAt === null ? 0 : Math.round(l.expiresAt / 1000));
    return l;
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
    if (!l || !attrs) return;
    const cfg = this.config;
    // Another address is never our write, whatever its revision (a store replaced under us
    // numbers its revisions anew).
    if (nodeAddress(cfg, attrs) !== nodeAddress(cfg, l.attrs)) return this.notifyLost();
    if (revision !== undefined && revision <= l.revision) return;
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
      const wait = this.#nextRenewIn();
      this.#renewAt = Date.now() + wait;
      await sleep(wait, AbortSignal.any([signal, wake.signal]));
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
        } else if (!(await this.#claimedUnderUs(cur))) {
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

  /**
   * A renewal lost its compare: if the write in between is another node's claim on our lease
   * (the renewal raced the watch that would have reported it), it is answered like one the
   * watch saw, instead of re-acquiring (which would claim back, and two claimants could chase
   * each other).
   */
  async #claimedUnderUs(cur: KnownLease): Promise<boolean> {
    const now = await this.registry.getLease(cur.key);
    const d = now ? this.#decoder.decode(now) : null;
    const me = cur.attrs.nodeId;
    if (!d?.attrs.claim || !d.attrs.nodeId || !me || d.attrs.nodeId === me) return false;
    if (nodeAddress(this.config, d.attrs) !== nodeAddress(this.config, cur.attrs)) return false;
    this.#claimed = { revision: d.revision, by: d.attrs.nodeId };
    return true;
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
    this.#listed = null; // the watcher runs already: not kept (5000 leases) for nobody
    if (l.key !== old.key) {
      log.warn("now holding {key} instead of {old}", { key: l.key, old: old.key });
    }
    // Applied (datapath, rules, subnet.env) by the loop, and retried there until it succeeds.
    this.#unapplied = l;
    await onChange(l);
    this.#unapplied = null;
  }
}
