/**
 * Pure lease policy: which leases fit the network, which existing lease is ours, and which subnets
 * are free. No I/O, so it is tested once and runs unchanged over any registry.
 *
 * Two rules, as flanneld has them: a *peer* lease is programmed when it is a SubnetLen subnet
 * inside Network ({@link isPeerSubnet}); SubnetMin/SubnetMax only bound what this node may take
 * for itself ({@link isAllocatable}, flannel's isSubnetConfigCompat), so nodes whose configs
 * drew different ranges still reach each other.
 *
 * @example
 * ```ts
 * const free = freeSubnets(cfg, leases, 100);
 * const pick = free[Math.floor(Math.random() * free.length)];
 * ```
 */
import type { NetworkConfig } from "../config/network.ts";
import { containsNet, type Ipv4Net, sameNet, sizeOf } from "../base/ipv4.ts";
import type { Lease } from "./codec.ts";

/** Whether a peer's leased subnet belongs to this network: a /SubnetLen subnet inside Network. */
export function isPeerSubnet(cfg: NetworkConfig, subnet: Ipv4Net): boolean {
  return subnet.prefix === cfg.subnetLen && containsNet(cfg.network, subnet);
}

/**
 * Whether this node may hold `subnet` (a new lease, its previous one, the subnet.env hint): a
 * peer subnet that also lies within SubnetMin..SubnetMax.
 */
export function isAllocatable(cfg: NetworkConfig, subnet: Ipv4Net): boolean {
  return isPeerSubnet(cfg, subnet) && subnet.ip >= cfg.subnetMin && subnet.ip <= cfg.subnetMax;
}

/** What {@link chooseOwnLease} decides. */
export interface OwnChoice<L extends Lease> {
  /** The lease to take over (refresh), or null: allocate (the subnet.env subnet when usable). */
  lease: L | null;
  /** The other leases naming this node's public IP (reported; released when provably ours). */
  others: L[];
}

/** What tells this node's own leases apart: the subnet.env subnet and the node's identity. */
export interface OwnHints {
  /** The subnet from the existing subnet.env: the pods already have addresses from it. */
  hint?: Ipv4Net | null;
  /** This node's identity (`WeftNodeID`). */
  nodeId?: string;
}

const bySubnet = (a: Lease, b: Lease) => a.subnet.ip - b.subnet.ip;

/**
 * Which of the leases naming `publicIP` (and allocatable under the config) this node takes, the
 * same way every time, whatever order the registry lists them in:
 * 1. a reservation (no expiry): an operator's explicit choice (the subnet.env one if reserved);
 * 2. the lease of the subnet.env subnet: the pods already have addresses from it;
 * 3. a lease carrying this node's identity (written by this node before a restart);
 * 4. none when the subnet.env subnet is free: a TTL lease this node did not write must not move
 *    it (its pods would lose their addresses); it is reported instead;
 * 5. else the lowest subnet (flannel's rule: reuse the lease of the same public IP).
 */
export function chooseOwnLease<L extends Lease>(
  cfg: NetworkConfig,
  leases: L[],
  publicIP: string,
  h: OwnHints = {},
): OwnChoice<L> {
  const mine = leases.filter((l) => l.attrs.publicIP === publicIP && isAllocatable(cfg, l.subnet))
    .sort(bySubnet);
  const hint = h.hint ?? null;
  const isHint = (l: Lease) => hint !== null && sameNet(l.subnet, hint);
  const reserved = mine.filter((l) => l.expiresAt === null);
  const lease = reserved.find(isHint) ?? reserved[0] ?? mine.find(isHint) ??
    mine.find((l) => !!h.nodeId && l.attrs.nodeId === h.nodeId) ??
    (hint && isAllocatable(cfg, hint) && isFree(hint, inNetwork(cfg, leases)) ? null : mine[0]) ??
    null;
  return { lease, others: mine.filter((l) => l !== lease) };
}

/** This node's lease by public IP as {@link chooseOwnLease} picks it, or null. */
export function findOwnLease<L extends Lease>(
  cfg: NetworkConfig,
  leases: L[],
  publicIP: string,
  h: OwnHints = {},
): L | null {
  return chooseOwnLease(cfg, leases, publicIP, h).lease;
}

function overlaps(a: Ipv4Net, b: Ipv4Net): boolean {
  const aEnd = a.ip + sizeOf(a.prefix);
  const bEnd = b.ip + sizeOf(b.prefix);
  return a.ip < bEnd && b.ip < aEnd;
}

/** Whether `subnet` is unleased and overlaps no lease (leases of another SubnetLen included). */
export function isFree(subnet: Ipv4Net, leases: Lease[]): boolean {
  return !leases.some((l) => overlaps(l.subnet, subnet));
}

/**
 * The leases that occupy address space of this network: those inside it. A stray lease for a
 * supernet (`0.0.0.0-0`) or another network must not make the whole network look full.
 */
export function inNetwork(cfg: NetworkConfig, leases: Lease[]): Lease[] {
  return leases.filter((l) => containsNet(cfg.network, l.subnet));
}

/** Up to `limit` free subnets walking upward from SubnetMin (flannel's order). */
export function freeSubnets(cfg: NetworkConfig, leases: Lease[], limit: number): Ipv4Net[] {
  const taken = new Set<number>();
  const odd: Lease[] = [];
  for (const l of inNetwork(cfg, leases)) {
    if (l.subnet.prefix === cfg.subnetLen) taken.add(l.subnet.ip);
    else odd.push(l);
  }
  const step = sizeOf(cfg.subnetLen);
  const out: Ipv4Net[] = [];
  for (let ip = cfg.subnetMin; ip <= cfg.subnetMax && out.length < limit; ip += step) {
    if (taken.has(ip)) continue;
    const s = { ip, prefix: cfg.subnetLen };
    if (odd.length && !isFree(s, odd)) continue;
    out.push(s);
  }
  return out;
}

/** How many subnets the config can hand out at most. */
export function capacity(cfg: NetworkConfig): number {
  return (cfg.subnetMax - cfg.subnetMin) / sizeOf(cfg.subnetLen) + 1;
}
