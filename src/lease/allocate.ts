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
import { containsNet6, type Ipv6Net, overlaps6, sameNet6, sizeOf6 } from "../base/ipv6.ts";
import type { Lease, LeaseAttrs } from "./codec.ts";

/**
 * What occupies a subnet: a lease, or just its key parsed (a keys-only list, `taken.ts`), which is
 * all that choosing a free subnet needs.
 */
export type Occupant = Pick<Lease, "key" | "subnet" | "subnet6" | "revision">;

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

/** Whether a peer's IPv6 half belongs to this network: an IPv6SubnetLen subnet in IPv6Network. */
export function isPeerSubnet6(cfg: NetworkConfig, subnet: Ipv6Net): boolean {
  const v6 = cfg.ipv6;
  return !!v6 && subnet.prefix === v6.subnetLen && containsNet6(v6.network, subnet);
}

/** Whether this node may hold `subnet` as its IPv6 half (within IPv6SubnetMin..Max). */
export function isAllocatable6(cfg: NetworkConfig, subnet: Ipv6Net): boolean {
  const v6 = cfg.ipv6;
  return !!v6 && isPeerSubnet6(cfg, subnet) && subnet.ip >= v6.subnetMin &&
    subnet.ip <= v6.subnetMax;
}

/**
 * The address that tells this node's leases apart: PublicIP, or PublicIPv6 in an IPv6-only
 * network (flanneld's IPv6-only leases all say `"PublicIP":"0.0.0.0"`).
 */
export function nodeAddress(cfg: NetworkConfig, a: LeaseAttrs): string {
  return cfg.enableIPv4 ? a.publicIP : a.publicIPv6 ?? "";
}

/** Whether `l` names this node's address (see {@link nodeAddress}). */
export function namesNode(cfg: NetworkConfig, l: Lease, address: string): boolean {
  return cfg.enableIPv4
    ? l.attrs.publicIP === address
    : !!l.subnet6 && l.attrs.publicIPv6 === address;
}

/**
 * Whether this node's lease `l` serves every family the config enables: else it keeps its IPv4
 * half and gains (or changes) its IPv6 half, e.g. after IPv6 was enabled on a running cluster.
 */
export function hasUsableIpv6Half(cfg: NetworkConfig, l: Lease): boolean {
  return !cfg.enableIPv6 || (!!l.subnet6 && isAllocatable6(cfg, l.subnet6));
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
  /** Its IPv6 subnet (FLANNEL_IPV6_SUBNET), the one that counts in an IPv6-only network. */
  hint6?: Ipv6Net | null;
  /** This node's identity (`WeftNodeID`). */
  nodeId?: string;
}

/** Orders leases by IPv4 subnet, then IPv6 subnet (IPv6-only leases all have 0.0.0.0/0). */
export const bySubnet = (a: Lease, b: Lease): number =>
  a.subnet.ip - b.subnet.ip ||
  (a.subnet6 && b.subnet6
    ? Number(a.subnet6.ip > b.subnet6.ip) - Number(a.subnet6.ip < b.subnet6.ip)
    : 0);

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
  const v6only = !cfg.enableIPv4;
  const usable = (l: Lease) =>
    v6only ? !!l.subnet6 && isAllocatable6(cfg, l.subnet6) : isAllocatable(cfg, l.subnet);
  const mine = leases.filter((l) => namesNode(cfg, l, publicIP) && usable(l)).sort(bySubnet);
  const hint = h.hint ?? null;
  const hint6 = h.hint6 ?? null;
  const isHint = v6only
    ? (l: Lease) => hint6 !== null && !!l.subnet6 && sameNet6(l.subnet6, hint6)
    : (l: Lease) => hint !== null && sameNet(l.subnet, hint);
  const hintFree = v6only
    ? hint6 !== null && isAllocatable6(cfg, hint6) && isFree6(hint6, inNetwork6(cfg, leases))
    : hint !== null && isAllocatable(cfg, hint) && isFree(hint, inNetwork(cfg, leases));
  const reserved = mine.filter((l) => l.expiresAt === null);
  const lease = reserved.find(isHint) ?? reserved[0] ?? mine.find(isHint) ??
    mine.find((l) => !!h.nodeId && l.attrs.nodeId === h.nodeId) ??
    (hintFree ? null : mine[0]) ??
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
export function isFree(subnet: Ipv4Net, leases: readonly Occupant[]): boolean {
  return !leases.some((l) => overlaps(l.subnet, subnet));
}

/**
 * The leases that occupy address space of this network: those inside it. A stray lease for a
 * supernet (`0.0.0.0-0`) or another network must not make the whole network look full.
 */
export function inNetwork<L extends Occupant>(cfg: NetworkConfig, leases: readonly L[]): L[] {
  return leases.filter((l) => containsNet(cfg.network, l.subnet));
}

/** Up to `limit` free subnets walking upward from SubnetMin (flannel's order). */
export function freeSubnets(
  cfg: NetworkConfig,
  leases: readonly Occupant[],
  limit: number,
): Ipv4Net[] {
  const taken = new Set<number>();
  const odd: Occupant[] = [];
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

/** The leases whose IPv6 half lies in IPv6Network. */
export function inNetwork6<L extends Occupant>(cfg: NetworkConfig, leases: readonly L[]): L[] {
  const v6 = cfg.ipv6;
  return v6 ? leases.filter((l) => l.subnet6 && containsNet6(v6.network, l.subnet6)) : [];
}

/** Whether `subnet` overlaps no lease's IPv6 half. */
export function isFree6(subnet: Ipv6Net, leases: readonly Occupant[]): boolean {
  return !leases.some((l) => l.subnet6 && overlaps6(l.subnet6, subnet));
}

/** Up to `limit` free IPv6 subnets walking upward from IPv6SubnetMin (flannel's order). */
export function freeSubnets6(
  cfg: NetworkConfig,
  leases: readonly Occupant[],
  limit: number,
): Ipv6Net[] {
  const v6 = cfg.ipv6;
  if (!v6) return [];
  const taken = new Set<bigint>();
  const odd: Occupant[] = [];
  for (const l of inNetwork6(cfg, leases)) {
    if (l.subnet6!.prefix === v6.subnetLen) taken.add(l.subnet6!.ip);
    else odd.push(l);
  }
  const step = sizeOf6(v6.subnetLen);
  const out: Ipv6Net[] = [];
  // Bounded: at most limit + leases.length steps, however large the range.
  for (let ip = v6.subnetMin; ip <= v6.subnetMax && out.length < limit; ip += step) {
    if (taken.has(ip)) continue;
    const s = { ip, prefix: v6.subnetLen };
    if (odd.length && !isFree6(s, odd)) continue;
    out.push(s);
  }
  return out;
}

/** How many IPv6 subnets the config can hand out at most. */
export function capacity6(cfg: NetworkConfig): bigint {
  const v6 = cfg.ipv6;
  return v6 ? (v6.subnetMax - v6.subnetMin) / sizeOf6(v6.subnetLen) + 1n : 0n;
}

/**
 * A lease other than `own` that holds one of its halves (after a create: two nodes may pick the
 * same IPv4 subnet with different IPv6 subnets, or the reverse, and both keys get created, since
 * a dual-stack key is unique only as a pair). The one written first keeps the subnet.
 */
export function halfTakenBefore<L extends Occupant>(
  cfg: NetworkConfig,
  own: Occupant,
  leases: readonly L[],
): L | null {
  return leases.find((l) =>
    l.key !== own.key && l.revision < own.revision &&
    ((cfg.enableIPv4 && containsNet(cfg.network, l.subnet) && overlaps(l.subnet, own.subnet)) ||
      (!!own.subnet6 && !!l.subnet6 && overlaps6(l.subnet6, own.subnet6)))
  ) ?? null;
}
