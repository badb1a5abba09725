/**
 * IPv4 route text read fast: a full diff judges every route of the main table (5000 peers:
 * 5000 routes) by its destination and gateway, which the kernel always spells plainly. Anything
 * not spelled so is left to src/base/ipv4.ts's parsers, which judge (and refuse) it as before.
 *
 * @example
 * ```ts
 * quickCidr("198.19.4.0/24"); // { ip: 0xc6130400, prefix: 24 }
 * quickCidr("198.19.04.0/24"); // null: parseCidr decides
 * ipOf("198.18.0.1");         // 0xc6120001
 * ```
 */
import { type Ipv4Net, maskOf, parseIp } from "../base/ipv4.ts";

/**
 * `text` ("a.b.c.d/len") read fast when it is spelled as the kernel spells it (no leading zeros,
 * no spaces, no host bits): a full diff judges every route of the table. Null for anything else,
 * which parseCidr then judges (and refuses as before).
 */
export function quickCidr(text: string): Ipv4Net | null {
  const slash = text.indexOf("/");
  if (slash < 0 || text.length - slash > 3) return null;
  const ip = quickIp(text, slash);
  let prefix = 0;
  for (let i = slash + 1; i < text.length; i++) {
    const c = text.charCodeAt(i) - 48;
    if (c < 0 || c > 9) return null;
    prefix = prefix * 10 + c;
  }
  if (ip < 0 || slash + 1 === text.length || prefix > 32) return null;
  return ((ip & maskOf(prefix)) >>> 0) === ip ? { ip, prefix } : null;
}

/** The first `end` characters of `text` as an IPv4 address, when spelled a.b.c.d plainly; else -1. */
export function quickIp(text: string, end: number): number {
  let ip = 0;
  let part = 0;
  let digits = 0;
  let dots = 0;
  for (let i = 0; i < end; i++) {
    const c = text.charCodeAt(i);
    if (c === 46) {
      if (digits === 0 || ++dots > 3) return -1;
      ip = ip * 256 + part;
      part = digits = 0;
    } else if (c >= 48 && c <= 57) {
      if (digits === 1 && part === 0) return -1; // a leading zero
      part = part * 10 + c - 48;
      if (++digits > 3 || part > 255) return -1;
    } else return -1;
  }
  return dots === 3 && digits > 0 ? ip * 256 + part : -1;
}

/** {@link parseIp}, read fast when plainly spelled (the kernel's gateways). */
export function ipOf(text: string): number {
  const ip = quickIp(text, text.length);
  return ip >= 0 ? ip : parseIp(text);
}
