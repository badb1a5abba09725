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

export const CLUSTER_NETWORK = "198.19.0.0/16";

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
}

/** A locally administered unicast MAC that encodes `i`. */
export function macFor(i: number): string {
  const b = [0x0e, 0xbe, (i >> 24) & 0xff, (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff];
  return b.map((x) => x.toString(16).padStart(2, "0")).join(":");
}

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
    const key = `${formatIp(ip)}-${o.subnetLen}`;
    out.push({
      key,
      cidr: formatCidr(subnet),
      subnetAddr: formatIp(ip),
      publicIP,
      mac,
      value: encodeLeaseValue(attrs),
      lease: { key, subnet, attrs, expiresAt: null, revision: i + 1 },
    });
  }
  return out;
}
