/**
 * Acquiring this node's lease: which existing lease naming its public IP is its own
 * ({@link chooseOwnLease}), claims on leases carrying another node's identity ({@link Claims}),
 * and otherwise a new one (the old subnet.env subnet when free, else a random one of the first
 * 100 free subnets), created only if absent and retried on lost races. With IPv6 both halves are
 * allocated together. The LeaseManager runs this and keeps what it returns renewed.
 *
 * @example
 * ```ts
 * const lease = await acquireLease(host, { publicIP: "198.18.0.11" }, null); // host: the manager's
 * ```
 */
import { getLogger } from "@logtape/logtape";
import type { NetworkConfig } from "../config/network.ts";
import { formatCidr, type Ipv4Net } from "../base/ipv4.ts";
import { formatCidr6, type Ipv6Net } from "../base/ipv6.ts";
import type { Registry } from "../registry/contract/registry.ts";
import {
  encodeLeaseValue,
  type KnownLease,
  type Lease,
  type LeaseAttrs,
  subnetKey,
} from "./codec.ts";
import { listTaken } from "./taken.ts";
import {
  capacity,
  capacity6,
  chooseOwnLease,
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
  nodeAddress,
  type Occupant,
} from "./allocate.ts";
import { known, tidy } from "./tidy.ts";

export { known };
import type { Claims } from "./claim.ts";
import { sleep } from "../base/async.ts";
import { FatalError } from "../base/errors.ts";

const log = getLogger(["weft", "lease"]);

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

/** What acquisition needs from the manager that runs it. */
export interface AcquireHost {
  readonly registry: Registry;
  readonly config: NetworkConfig;
  readonly opts: LeaseManagerOptions;
  readonly claims: Claims;
  /**
   * All decodable leases now in the registry; those naming `address` (this node's, see
   * nodeAddress) with their exact expiry, others' TTL leases possibly with "unknown" (looking
   * every expiry up is one call per lease on etcd, and only this node's leases need it). With
   * `since`: only those written after that revision (see Registry.listPeerLeases).
   */
  list(address: string, since?: number): Promise<{ leases: Lease[]; revision: number }>;
  /** Records `l` as the lease this node holds (and counts the acquisition). */
  held(l: KnownLease): KnownLease;
  /** Forgets the lease just given up (deleted by us). */
  dropped(): void;
}

function leaseOf(
  key: string,
  subnet: Ipv4Net,
  attrs: LeaseAttrs,
  expiresAt: number | null,
  revision: number,
  subnet6?: Ipv6Net | null,
): KnownLease {
  const l: KnownLease = { key, subnet, attrs, expiresAt, revision };
  if (subnet6) l.subnet6 = subnet6;
  return l;
}

/**
 * How many of the lowest free subnets a new lease is picked from at random: flanneld's 100 at
 * first; each lost create race widens it fourfold, so that N nodes joining at once (a cluster
 * built or restarted in one go) spread over more subnets instead of racing for the same 100.
 */
export function pickWindow(lostRaces: number): number {
  return 100 * 4 ** Math.min(lostRaces, 8);
}

/**
 * After a lost create race, how many more picks reuse the list already read (the lost subnet
 * marked taken) before listing again: a list costs O(leases) on the registry and here.
 */
const SNAPSHOT_REUSE = 4;

/** "198.19.5.0/24", "198.19.5.0/24 and 2001:db8:1:5::/64", or the IPv6 subnet alone. */
function describe(subnet: Ipv4Net, subnet6: Ipv6Net | null): string {
  if (!subnet6) return formatCidr(subnet);
  return subnet.prefix === 0
    ? formatCidr6(subnet6)
    : `${formatCidr(subnet)} and ${formatCidr6(subnet6)}`;
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
export async function acquireLease(
  h: AcquireHost,
  attrs: LeaseAttrs,
  hint: Ipv4Net | null,
  signal?: AbortSignal,
  hint6: Ipv6Net | null = null,
): Promise<KnownLease> {
  const value = encodeLeaseValue(attrs);
  const tries = h.opts.maxRaceRetries ?? 20;
  let hintTries = 0;
  const cfg = h.config;
  const address = nodeAddress(cfg, attrs);
  /**
   * The last full list (values): what the own-lease choice read, and what the check after a
   * create reads changes since.
   */
  let base: { leases: Lease[]; revision: number } | null = null;
  /** The subnets taken as the last attempt saw them, reused after a lost race (SNAPSHOT_REUSE). */
  let snapshot: { leases: Lease[]; taken: readonly Occupant[] } | null = null;
  /**
   * Pick from a keys-only list next: after lost races, when the last full list named nothing of
   * this node's (no own lease to choose, and no subnet.env subnet to wait for), the values add
   * nothing to the choice; a lease naming this node written since is found after the create.
   */
  let keysOnly = false;
  /** IPv4 subnets lost in create races since `snapshot` was listed. */
  const lost = new Set<number>();
  let lostRaces = 0;
  for (let attempt = 1; attempt <= tries; attempt++) {
    signal?.throwIfAborted();
    if (!snapshot) lost.clear();
    let leases: Lease[];
    let taken: readonly Occupant[];
    if (snapshot) ({ leases, taken } = snapshot);
    else if (keysOnly) [leases, taken] = [[], await listTaken(h.registry, cfg)];
    else {
      base = await h.list(address);
      leases = taken = base.leases;
    }
    snapshot = null;
    keysOnly = false;
    const choice = chooseOwnLease(cfg, leases, address, { hint, hint6, nodeId: attrs.nodeId });
    const own = choice.lease && known(choice.lease);
    const others = choice.others.map(known);
    const rival = [own, ...others].find((l) => l && h.claims.isRival(l, attrs));
    if (rival) {
      attempt--; // a claim is not a lost race
      const c = await h.claims.claim(rival, attrs, h.opts.ttlSeconds, signal);
      if (c.outcome === "alive") {
        await h.claims.waitGone(rival, signal);
      }
      continue;
    }
    if (own && !hasUsableIpv6Half(cfg, own)) {
      const held = await addIpv6Half(h, own, attrs, base!, hint6, signal);
      if (held) return held;
      continue;
    }
    if (own) {
      const ttl = own.expiresAt === null ? null : h.opts.ttlSeconds;
      const r = await h.registry.updateLease(own.key, value, ttl, own.revision);
      if (r) {
        log.info("reusing lease {subnet} of public IP {ip}{kind}", {
          subnet: formatCidr(own.subnet),
          ip: attrs.publicIP,
          kind: ttl === null ? " (reservation)" : "",
        });
        const held = h.held(
          leaseOf(r.key, own.subnet, attrs, r.expiresAt, r.revision, own.subnet6),
        );
        if (await tidy(h, held, base!, signal)) return held;
      }
      continue; // changed under us, or yielded to an older holder: look again
    }
    let subnet: Ipv4Net = { ip: 0, prefix: 0 }; // IPv6-only: the empty network, as flanneld
    const hinted4 = cfg.enableIPv4 && !!hint && isAllocatable(h.config, hint) &&
      isFree(hint, inNetwork(h.config, taken));
    const subnet6 = cfg.enableIPv6 ? pick6(h.config, taken, hint6) : null;
    const hinted = cfg.enableIPv4 ? hinted4 : !!hint6 && subnet6?.ip === hint6.ip;
    if (hinted4) subnet = hint!;
    else if (cfg.enableIPv4) {
      const window = pickWindow(lostRaces);
      const free = freeSubnets(h.config, taken, window + lost.size)
        .filter((s) => !lost.has(s.ip)).slice(0, window);
      if (free.length === 0 && lost.size) continue; // the lost subnets were the last: list again
      if (free.length === 0) {
        throw new OutOfSubnetsError(
          `out of subnets: network ${formatCidr(h.config.network)} (/${h.config.subnetLen} ` +
            `subnets, ${capacity(h.config)} possible) has ${taken.length} leases and no ` +
            `free subnet; enlarge Network or SubnetLen in the config, or delete stale leases`,
        );
      }
      subnet = free[Math.floor(Math.random() * free.length)];
    }
    const key = subnetKey(subnet, subnet6);
    const r = await h.registry.createLease(key, value, h.opts.ttlSeconds);
    if (r) {
      const held = h.held(leaseOf(r.key, subnet, attrs, r.expiresAt, r.revision, subnet6));
      if (await collided(h, held)) {
        hint = hint6 = null;
        await sleep(Math.random() * 20 * attempt, signal);
        continue;
      }
      log.info("acquired lease {subnet}", { subnet: describe(subnet, subnet6) });
      if (await tidy(h, held, base!, signal)) return held;
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
    lostRaces++;
    keysOnly = choice.lease === null && choice.others.length === 0;
    // The lost subnet is now someone's; the rest of the list still holds (the leases naming
    // this node are checked again after the create, in tidy): pick again from it, a few times.
    if (cfg.enableIPv4 && lost.size < SNAPSHOT_REUSE) {
      lost.add(subnet.ip);
      snapshot = { leases, taken };
      continue;
    }
    await sleep(Math.random() * 20 * attempt, signal);
  }
  throw new Error(
    `could not acquire a lease after ${tries} attempts: other nodes kept taking the chosen ` +
      `subnets; check for a flood of agents starting at once and retry`,
  );
}

/** The IPv6 half for a new lease: the subnet.env one when free, else a random free one. */
function pick6(
  cfg: NetworkConfig,
  leases: readonly Occupant[],
  hint6: Ipv6Net | null,
): Ipv6Net {
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
 * are the subnet itself, and the registry's create-if-absent settles their races. The keys
 * and their revisions say it all, so only they are listed.
 */
async function collided(h: AcquireHost, held: KnownLease, replacing?: string): Promise<boolean> {
  if (!h.config.enableIPv6) return false;
  const taken = await listTaken(h.registry, h.config);
  const other = halfTakenBefore(h.config, held, taken.filter((l) => l.key !== replacing));
  if (!other) return false;
  log.debug("{key} shares a subnet with {other}, written first; picking again", {
    key: held.key,
    other: other.key,
  });
  await h.registry.deleteLease(held.key, held.revision);
  h.dropped();
  return true;
}

/**
 * Gives our lease `own` (IPv4 only, or an IPv6 half the config no longer allows) an IPv6 half,
 * keeping its IPv4 subnet: creates the dual-stack key (a reservation stays one), then deletes
 * the old key. Null when raced (the caller lists again).
 */
async function addIpv6Half(
  h: AcquireHost,
  own: KnownLease,
  attrs: LeaseAttrs,
  base: { leases: Lease[]; revision: number },
  hint6: Ipv6Net | null,
  signal?: AbortSignal,
): Promise<KnownLease | null> {
  const subnet6 = pick6(h.config, base.leases, hint6);
  const key = subnetKey(own.subnet, subnet6);
  const ttl = own.expiresAt === null ? null : h.opts.ttlSeconds;
  const r = await h.registry.createLease(key, encodeLeaseValue(attrs), ttl);
  if (!r) return null;
  const held = h.held(leaseOf(r.key, own.subnet, attrs, r.expiresAt, r.revision, subnet6));
  if (await collided(h, held, own.key)) return null;
  await h.registry.deleteLease(own.key, own.revision);
  log.info("lease {old} gains an IPv6 half, keeping its IPv4 subnet: now {key}{kind}", {
    old: own.key,
    key,
    kind: ttl === null ? " (reservation)" : "",
  });
  return await tidy(h, held, base, signal) ? held : null;
}
