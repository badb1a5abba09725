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
import { containsNet, type Ipv4Net, sizeOf } from "../base/ipv4.ts";
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

/**
 * This node's lease by public IP, if it is allocatable under the config. A reservation (no expiry) wins over an
 * ordinary lease, since an operator placed it on purpose.
 */
export function findOwnLease<L extends Lease>(
  cfg: NetworkConfig,
  leases: L[],
  publicIP: string,
): L | null {
  const mine = leases.filter((l) => l.attrs.publicIP === publicIP && isAllocatable(cfg, l.subnet));
  return mine.find((l) => l.expiresAt === null) ?? mine[0] ?? null;
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
