/**
 * IPv6 addresses and CIDR networks as bigints (the IPv6 sibling of ipv4.ts): exact subnet
 * arithmetic, and text in RFC 5952's compressed form, which is what Go's net.IP.String() and so
 * flanneld write into lease keys (`2001:db8:1:5::-64`).
 *
 * @example
 * ```ts
 * const n = parseCidr6("2001:db8:1::/56");
 * formatCidr6({ ip: n.ip + (5n << 64n), prefix: 64 }); // "2001:db8:1:5::/64"
 * ```
 */
import { parseIp } from "./ipv4.ts";

/** An IPv6 network: `ip` the 128-bit address, `prefix` 0..128. */
export interface Ipv6Net {
  ip: bigint;
  prefix: number;
}

const ALL = (1n << 128n) - 1n;

function bad(text: string): RangeError {
  return new RangeError(`"${text}" is not an IPv6 address (expected e.g. 2001:db8::1)`);
}

/** Parses IPv6 text (`::` shorthand and a trailing dotted quad allowed; no zone); throws. */
export function parseIp6(text: string): bigint {
  const t = text.trim();
  if (!/^[0-9a-fA-F:.]+$/.test(t) || t.length > 45) throw bad(text);
  let groups: number[] = [];
  const halves = t.split("::");
  if (halves.length > 2) throw bad(text);
  const part = (s: string, last: boolean): number[] => {
    if (s === "") return [];
    const out: number[] = [];
    const items = s.split(":");
    items.forEach((g, i) => {
      if (last && i === items.length - 1 && g.includes(".")) {
        let v: number;
        try {
          v = parseIp(g);
        } catch {
          throw bad(text);
        }
        out.push(v >>> 16, v & 0xffff);
        return;
      }
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) throw bad(text);
      out.push(parseInt(g, 16));
    });
    return out;
  };
  if (halves.length === 2) {
    const head = part(halves[0], false);
    const tail = part(halves[1], true);
    if (head.length + tail.length > 7) throw bad(text);
    groups = [...head, ...new Array(8 - head.length - tail.length).fill(0), ...tail];
  } else {
    groups = part(t, true);
    if (groups.length !== 8) throw bad(text);
  }
  let n = 0n;
  for (const g of groups) n = (n << 16n) | BigInt(g);
  return n;
}

/** True when `text` is an IPv6 address. */
export function isIp6(text: string): boolean {
  try {
    parseIp6(text);
    return true;
  } catch {
    return false;
  }
}

/** RFC 5952 text: lower case, no leading zeros, the longest run (≥ 2) of zero groups as `::`. */
export function formatIp6(n: bigint): string {
  const g: number[] = [];
  for (let i = 7; i >= 0; i--) g.push(Number((n >> BigInt(i * 16)) & 0xffffn));
  let best = -1, bestLen = 0;
  for (let i = 0; i < 8;) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j;
  }
  const hex = (a: number[]) => a.map((x) => x.toString(16)).join(":");
  if (bestLen < 2) return hex(g);
  return `${hex(g.slice(0, best))}::${hex(g.slice(best + bestLen))}`;
}

/** Netmask of a prefix length. */
export function maskOf6(prefix: number): bigint {
  return prefix === 0 ? 0n : (ALL << BigInt(128 - prefix)) & ALL;
}

/** Number of addresses in a prefix. */
export function sizeOf6(prefix: number): bigint {
  return 1n << BigInt(128 - prefix);
}

/** Parses `addr/len`; the address must be the network address unless `allowHost`. */
export function parseCidr6(text: string, allowHost = false): Ipv6Net {
  const m = /^\s*([0-9a-fA-F:.]+)\/(0|[1-9]\d{0,2})\s*$/.exec(text);
  if (!m || Number(m[2]) > 128 || !isIp6(m[1])) {
    throw new RangeError(`"${text}" is not an IPv6 CIDR (expected e.g. 2001:db8:1::/56)`);
  }
  const ip = parseIp6(m[1]);
  const prefix = Number(m[2]);
  const net = ip & maskOf6(prefix);
  if (!allowHost && net !== ip) {
    throw new RangeError(
      `"${text}" has host bits set (did you mean ${formatIp6(net)}/${prefix}?)`,
    );
  }
  return { ip, prefix };
}

export function formatCidr6(n: Ipv6Net): string {
  return `${formatIp6(n.ip)}/${n.prefix}`;
}

/** The network address of `n` (host bits cleared). */
export function networkOf6(n: Ipv6Net): Ipv6Net {
  return { ip: n.ip & maskOf6(n.prefix), prefix: n.prefix };
}

/** True when address `ip` lies in `net`. */
export function contains6(net: Ipv6Net, ip: bigint): boolean {
  return (ip & maskOf6(net.prefix)) === net.ip;
}

/** True when `inner` lies wholly in `outer`. */
export function containsNet6(outer: Ipv6Net, inner: Ipv6Net): boolean {
  return inner.prefix >= outer.prefix && contains6(outer, inner.ip);
}

/** True when the two networks share an address. */
export function overlaps6(a: Ipv6Net, b: Ipv6Net): boolean {
  return containsNet6(a, b) || containsNet6(b, a);
}

export function sameNet6(a: Ipv6Net, b: Ipv6Net): boolean {
  return a.ip === b.ip && a.prefix === b.prefix;
}
