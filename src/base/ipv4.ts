/**
 * IPv4 addresses and CIDR networks as plain numbers, so subnet arithmetic is exact and cheap.
 *
 * @example
 * ```ts
 * const n = parseCidr("198.19.0.0/16");
 * formatCidr({ ip: n.ip + 256, prefix: 24 }); // "198.19.1.0/24"
 * ```
 */

/** An IPv4 network: `ip` is the 32-bit address as an unsigned number, `prefix` 0..32. */
export interface Ipv4Net {
  ip: number;
  prefix: number;
}

/** Parses dotted-quad text; throws a RangeError naming the bad value. */
export function parseIp(text: string): number {
  const parts = text.trim().split(".");
  if (parts.length !== 4) {
    throw new RangeError(`"${text}" is not an IPv4 address (expected a.b.c.d)`);
  }
  let n = 0;
  for (const p of parts) {
    // No leading zeros (as Go's net.ParseIP): "010" must not be a second spelling of 10.
    if (!/^(0|[1-9]\d{0,2})$/.test(p) || Number(p) > 255) {
      throw new RangeError(`"${text}" is not an IPv4 address (expected a.b.c.d)`);
    }
    n = n * 256 + Number(p);
  }
  return n;
}

/** True when `text` is a dotted-quad IPv4 address. */
export function isIp(text: string): boolean {
  try {
    parseIp(text);
    return true;
  } catch {
    return false;
  }
}

export function formatIp(n: number): string {
  return `${(n >>> 24) & 255}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

/** Netmask of a prefix length as an unsigned number. */
export function maskOf(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

/** Number of addresses in a prefix. */
export function sizeOf(prefix: number): number {
  return 2 ** (32 - prefix);
}

/** Parses `a.b.c.d/len`; the address must be the network address unless `allowHost`. */
export function parseCidr(text: string, allowHost = false): Ipv4Net {
  const m = /^\s*([0-9.]+)\/(\d{1,2})\s*$/.exec(text);
  if (!m || Number(m[2]) > 32) {
    throw new RangeError(`"${text}" is not an IPv4 CIDR (expected a.b.c.d/len)`);
  }
  const ip = parseIp(m[1]);
  const prefix = Number(m[2]);
  const net = (ip & maskOf(prefix)) >>> 0;
  if (!allowHost && net !== ip) {
    throw new RangeError(
      `"${text}" has host bits set (did you mean ${formatIp(net)}/${prefix}?)`,
    );
  }
  return { ip: allowHost ? ip : net, prefix };
}

export function formatCidr(n: Ipv4Net): string {
  return `${formatIp(n.ip)}/${n.prefix}`;
}

/** The network address of `n` (host bits cleared). */
export function networkOf(n: Ipv4Net): Ipv4Net {
  return { ip: (n.ip & maskOf(n.prefix)) >>> 0, prefix: n.prefix };
}

/** True when address `ip` lies in `net`. */
export function contains(net: Ipv4Net, ip: number): boolean {
  return ((ip & maskOf(net.prefix)) >>> 0) === net.ip;
}

/** True when `inner` lies wholly in `outer`. */
export function containsNet(outer: Ipv4Net, inner: Ipv4Net): boolean {
  return inner.prefix >= outer.prefix && contains(outer, inner.ip);
}

export function sameNet(a: Ipv4Net, b: Ipv4Net): boolean {
  return a.ip === b.ip && a.prefix === b.prefix;
}
