/**
 * Which overlay addresses a peer answers on, per family: its device's subnet address (vxlan's
 * VTEPs `<subnet>.0` / `<IPv6 subnet>::`, udp's flannel0) or, for host-gw (no device of its own),
 * its pods' bridge `<subnet>.1` / `<IPv6 subnet>::1`. A family the lease does not carry (the
 * empty `0.0.0.0/0` IPv4 half of an IPv6-only lease, a lease without an IPv6 half) has no target.
 * Shared by `weft doctor` and the agent's peer health.
 *
 * @example
 * ```ts
 * overlayTargets("vxlan", lease); // [{ family: 4, subnet: "198.19.5.0/24", address: "198.19.5.0" }, …]
 * ```
 */
import { formatCidr, formatIp } from "../base/ipv4.ts";
import { formatCidr6, formatIp6 } from "../base/ipv6.ts";
import { gatewayOf, gatewayOf6 } from "../config/subnet_env.ts";
import type { Lease } from "../lease/codec.ts";

export interface ProbeTarget {
  family: 4 | 6;
  /** The lease's subnet of that family, e.g. "198.19.5.0/24" or "2001:db8:1:5::/64". */
  subnet: string;
  /** The address probed over the overlay. */
  address: string;
  /** The peer's underlay address of that family (PublicIP / PublicIPv6). */
  publicIP: string;
}

/** Whether `l` has an IPv4 half (IPv6-only leases carry the empty network 0.0.0.0/0). */
export function hasIpv4Half(l: Lease): boolean {
  return l.subnet.prefix > 0;
}

/** The overlay address of the IPv4 half (see the module doc). */
export function overlayAddress(backend: string, l: Lease): string {
  return backend === "host-gw" ? gatewayOf(l.subnet) : formatIp(l.subnet.ip);
}

/** Each family's target of `l` (IPv4 first); `ipv6` false leaves the IPv6 half out. */
export function overlayTargets(backend: string, l: Lease, ipv6 = true): ProbeTarget[] {
  const out: ProbeTarget[] = [];
  if (hasIpv4Half(l)) {
    out.push({
      family: 4,
      subnet: formatCidr(l.subnet),
      address: overlayAddress(backend, l),
      publicIP: l.attrs.publicIP,
    });
  }
  const s6 = l.subnet6;
  if (ipv6 && s6 && l.attrs.publicIPv6) {
    out.push({
      family: 6,
      subnet: formatCidr6(s6),
      address: backend === "host-gw" ? gatewayOf6(s6) : formatIp6(s6.ip),
      publicIP: l.attrs.publicIPv6,
    });
  }
  return out;
}
