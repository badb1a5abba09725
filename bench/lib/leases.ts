/**
 * Synthetic peer leases for the benchmarks: a deterministic plan of N subnets, public IPs and
 * VTEP MACs, as registry key/value pairs (to write) and as decoded Leases (to hand to a backend).
 * Everything lies in 198.18.0.0/15: subnets in the cluster network 198.19.0.0/16, public IPs where
 * the caller says (on-link for host-gw).
 *
 * @example
 * ```ts
 * const plan = leasePlan({ count: 3, firstSubnet: 128, subnetLen: 24, publicBase: "198.18.0.100",
 *   backend: "vxlan" });
 * plan[0].key;    // "198.19.128.0-24"
 * plan[0].value;  // '{"PublicIP":"198.18.0.100","PublicIPv6":null,"BackendType":"vxlan",...}'
 * plan[0].lease;  // a Lease for VxlanBackend.reconcile()
 * ```
 */
import { encodeLeaseValue, type Lease, type LeaseAttrs } from "../../src/lease/codec.ts";
import { formatCidr, formatIp, parseIp } from "../../src/base/ipv4.ts";
import { formatCidr6, formatIp6, parseCidr6, parseIp6 } from "../../src/base/ipv6.ts";

export const CLUSTER_NETWORK = "198.19.0.0/16";

/** IPv6Network of the programming benchmark's dual-stack peers (room for 65536 /64 subnets). */
export const NETWORK6 = "2001:db8:100::/48";
/** Their first PublicIPv6 (on-link: the scratch namespace's interface holds `…::1/64`). */
export const PUBLIC6_BASE = "2001:db8:64::2";

/** The IPv6 half of dual-stack plans: subnet i = network + (first+i) · size, as for IPv4. */
export interface PlanV6 {
  /** IPv6Network, e.g. "2001:db8:100::/48". */
  network: string;
  subnetLen: number;
  /** PublicIPv6 of peer 0; peer i gets this + i. */
  publicBase: string;
}

export interface PlanOptions {
  count: number;
  /** Index of the first subnet inside 198.19.0.0/16 (subnet i = network + (first+i) · size). */
  firstSubnet: number;
  subnetLen: number;
  /** Public IP of peer 0; peer i gets this + i. */
  publicBase: string;
  /** BackendType written in the lease ("vxlan", "host-gw", "alloc"). */
  backend: string;
  vni?: number;
  /** Dual-stack leases (key `…&<v6>-<len>`, PublicIPv6, vxlan: BackendV6Data); default none. */
  ipv6?: PlanV6;
}

export interface PlannedLease {
  key: string;
  /** "198.19.128.0/24" (how agents log and `ip route` prints it). */
  cidr: string;
  /** First address of the subnet: the vxlan neighbour / onlink gateway. */
  subnetAddr: string;
  publicIP: string;
  mac: string | null;
  value: string;
  lease: Lease;
  /** The IPv6 half of a dual-stack plan ({@link PlanOptions.ipv6}); null otherwise. */
  v6: { cidr: string; subnetAddr: string; publicIP: string; mac: string | null } | null;
}

/** A locally administered unicast MAC that encodes `i`. */
export function macFor(i: number, prefix = 0xbe): string {
  const b = [0x0e, prefix, (i >> 24) & 0xff, (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff];
  return b.map((x) => x.toString(16).padStart(2, "0")).join(":");
}

/** The programming benchmark's IPv6 halves (`leasePlan({ ..., ipv6: peerPlan6 })`). */
export const peerPlan6: PlanV6 = { network: NETWORK6, subnetLen: 64, publicBase: PUBLIC6_BASE };

export function leasePlan(o: PlanOptions): PlannedLease[] {
  const base = parseIp(CLUSTER_NETWORK.split("/")[0]);
  const size = 2 ** (32 - o.subnetLen);
  const maxSubnets = 2 ** (o.subnetLen - 16);
  if (o.firstSubnet + o.count > maxSubnets) {
    throw new RangeError(
      `${o.count} subnets from index ${o.firstSubnet} do not fit 198.19.0.0/16 with /${o.subnetLen}`,
    );
  }
  const pub0 = parseIp(o.publicBase);
  const net6 = o.ipv6 ? parseCidr6(o.ipv6.network) : null;
  if (o.ipv6 && net6 && o.firstSubnet + o.count > 2 ** (o.ipv6.subnetLen - net6.prefix)) {
    throw new RangeError(
      `${o.count} subnets from index ${o.firstSubnet} do not fit ${o.ipv6.network} with /${o.ipv6.subnetLen}`,
    );
  }
  const out: PlannedLease[] = [];
  for (let i = 0; i < o.count; i++) {
    const ip = (base + (o.firstSubnet + i) * size) >>> 0;
    const subnet = { ip, prefix: o.subnetLen };
    const publicIP = formatIp((pub0 + i) >>> 0);
    const mac = o.backend === "vxlan" ? macFor(i + 1) : null;
    const attrs: LeaseAttrs = {
      publicIP,
      publicIPv6: null,
      backendType: o.backend,
      backendData: mac ? { VNI: o.vni ?? 1, VtepMAC: mac } : undefined,
    };
    let key = `${formatIp(ip)}-${o.subnetLen}`;
    let subnet6 = null;
    let v6: PlannedLease["v6"] = null;
    if (o.ipv6 && net6) {
      const ip6 = net6.ip + BigInt(o.firstSubnet + i) * (1n << BigInt(128 - o.ipv6.subnetLen));
      subnet6 = { ip: ip6, prefix: o.ipv6.subnetLen };
      const mac6 = mac ? macFor(i + 1, 0xbf) : null;
      v6 = {
        cidr: formatCidr6(subnet6),
        subnetAddr: formatIp6(ip6),
        publicIP: formatIp6(parseIp6(o.ipv6.publicBase) + BigInt(i)),
        mac: mac6,
      };
      attrs.publicIPv6 = v6.publicIP;
      if (mac6) attrs.backendV6Data = { VNI: o.vni ?? 1, VtepMAC: mac6 };
      key += `&${formatIp6(ip6)}-${o.ipv6.subnetLen}`;
    }
    out.push({
      key,
      cidr: formatCidr(subnet),
      subnetAddr: formatIp(ip),
      publicIP,
      mac,
      value: encodeLeaseValue(attrs),
      lease: { key, subnet, subnet6, attrs, expiresAt: null, revision: i + 1 },
      v6,
    });
  }
  return out;
}
