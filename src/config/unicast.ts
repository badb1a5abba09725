/**
 * Which IPv4 addresses and MAC addresses can belong to a host: the one rule for a cluster
 * Network (its subnets become routes and addresses on every host) and for a peer lease's public
 * IP and VTEP MAC (they become routes, FDB and neighbour entries on every host). Everything in
 * this-network (0/8), loopback, multicast and reserved/broadcast space is refused.
 *
 * @example
 * ```ts
 * ipv4Problem("255.255.255.255"); // "255.255.255.255 is in 240.0.0.0/4 (reserved and broadcast …)"
 * ipv4Problem("198.18.0.3"); // null
 * macProblem("01:00:5e:00:00:01"); // "… is a multicast MAC …"
 * ```
 */
import { containsNet, formatCidr, type Ipv4Net, isIp, parseCidr, parseIp } from "../base/ipv4.ts";
import { formatCidr6, type Ipv6Net, overlaps6, parseCidr6, parseIp6 } from "../base/ipv6.ts";

/** The IPv4 ranges that are never a host's unicast address. */
export const NON_UNICAST: readonly { net: Ipv4Net; what: string }[] = [
  { net: parseCidr("0.0.0.0/8"), what: "this-network addresses" },
  { net: parseCidr("127.0.0.0/8"), what: "loopback" },
  { net: parseCidr("224.0.0.0/4"), what: "multicast" },
  { net: parseCidr("240.0.0.0/4"), what: "reserved and broadcast addresses" },
];

/** The first non-unicast range `net` overlaps, as "a.b.c.d/n (what)", or null. */
export function nonUnicastOverlap(net: Ipv4Net): string | null {
  for (const r of NON_UNICAST) {
    if (containsNet(r.net, net) || containsNet(net, r.net)) {
      return `${formatCidr(r.net)} (${r.what})`;
    }
  }
  return null;
}

/** Why `ip` is not a usable unicast IPv4 address of a host, or null when it is. */
export function ipv4Problem(ip: string): string | null {
  if (!isIp(ip)) return `${JSON.stringify(ip)} is not an IPv4 address`;
  const range = nonUnicastOverlap({ ip: parseIp(ip), prefix: 32 });
  return range ? `${ip} is in ${range}, not a host's unicast address` : null;
}

/** The IPv6 ranges that are never a host's (or a pod network's) unicast address. */
export const NON_UNICAST6: readonly { net: Ipv6Net; what: string }[] = [
  { net: parseCidr6("::/128"), what: "the unspecified address" },
  { net: parseCidr6("::1/128"), what: "loopback" },
  { net: parseCidr6("::ffff:0:0/96"), what: "IPv4-mapped addresses" },
  { net: parseCidr6("fe80::/10"), what: "link-local addresses" },
  { net: parseCidr6("ff00::/8"), what: "multicast" },
];

/** The first non-unicast IPv6 range `net` overlaps, as "addr/n (what)", or null. */
export function nonUnicastOverlap6(net: Ipv6Net): string | null {
  for (const r of NON_UNICAST6) {
    if (overlaps6(r.net, net)) return `${formatCidr6(r.net)} (${r.what})`;
  }
  return null;
}

/** Why `ip` is not a usable unicast IPv6 address of a host, or null when it is. */
export function ipv6Problem(ip: string): string | null {
  let n: bigint;
  try {
    n = parseIp6(ip);
  } catch {
    return `${JSON.stringify(ip)} is not an IPv6 address`;
  }
  const range = nonUnicastOverlap6({ ip: n, prefix: 128 });
  return range ? `${ip} is in ${range}, not a host's unicast address` : null;
}

const MAC = /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i;

/** Why `mac` is not a usable unicast MAC (aa:bb:cc:dd:ee:ff), or null when it is. */
export function macProblem(mac: unknown): string | null {
  if (typeof mac !== "string" || !MAC.test(mac)) {
    return `${JSON.stringify(mac) ?? "nothing"} is not a MAC address like 0a:1b:2c:3d:4e:5f`;
  }
  if (/^(00:){5}00$/.test(mac)) return `${mac} is the zero MAC, not a device's address`;
  if (parseInt(mac.slice(0, 2), 16) & 1) {
    return `${mac} is a multicast MAC (low bit of the first octet set), not a device's address`;
  }
  return null;
}
