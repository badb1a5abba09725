/**
 * Conversions between text addresses (IPv4, CIDR, MAC) and libnl `struct nl_addr` objects.
 * Every `nl_addr` made here is owned by the caller, who must `nl_addr_put` it (use {@link withAddr}).
 *
 * @example
 * ```ts
 * withAddr(ipv4Addr("198.19.5.0", 24), (a) => rt.rtnl_route_set_dst(route, a));
 * readCidr(rt.rtnl_route_get_dst(route)); // "198.19.5.0/24"
 * ```
 */
import { parseIp } from "../../src/base/ipv4.ts";
import { formatIp6, parseIp6 } from "../../src/base/ipv6.ts";
import { libs } from "./symbols.ts";
import { checkMac } from "./validate.ts";
import { AF_INET } from "../libc/udp.ts";

export const AF_BRIDGE = 7;
export const AF_INET6 = 10;
export const AF_LLC = 26;

type Ptr = Deno.PointerValue;

// nl_addr_build copies the bytes, so one scratch buffer serves every call.
const scratch = new Uint8Array(16);

function build(family: number, len: number): NonNullable<Ptr> {
  const a = libs().nl.nl_addr_build(family, scratch, BigInt(len));
  if (!a) throw new Error(`nl_addr_build failed (out of memory?) for family ${family}`);
  return a;
}

/** A new IPv4 nl_addr; `prefix` defaults to 32. */
export function ipv4Addr(ip: string, prefix = 32): NonNullable<Ptr> {
  const n = parseIp(ip);
  scratch[0] = (n >>> 24) & 255;
  scratch[1] = (n >>> 16) & 255;
  scratch[2] = (n >>> 8) & 255;
  scratch[3] = n & 255;
  const a = build(AF_INET, 4);
  if (prefix !== 32) libs().nl.nl_addr_set_prefixlen(a, prefix);
  return a;
}

/** A new IPv6 nl_addr; `prefix` defaults to 128. */
export function ipv6Addr(ip: string, prefix = 128): NonNullable<Ptr> {
  let n = parseIp6(ip);
  for (let i = 15; i >= 0; i--) {
    scratch[i] = Number(n & 0xffn);
    n >>= 8n;
  }
  const a = build(AF_INET6, 16);
  if (prefix !== 128) libs().nl.nl_addr_set_prefixlen(a, prefix);
  return a;
}

/** Validates an IPv4 or IPv6 address (by the text's form); throws a RangeError naming it. */
export function checkIp(ip: string): void {
  if (ip.includes(":")) parseIp6(ip);
  else parseIp(ip);
}

/** A new IPv4 or IPv6 nl_addr, by the text's form (an IPv6 address has a colon). */
export function ipAddr(ip: string, prefix?: number): NonNullable<Ptr> {
  return ip.includes(":") ? ipv6Addr(ip, prefix) : ipv4Addr(ip, prefix);
}

/** A new link-layer (MAC) nl_addr; throws a RangeError naming a malformed MAC. */
export function macAddr(mac: string): NonNullable<Ptr> {
  checkMac(mac);
  const parts = mac.split(":");
  for (let i = 0; i < 6; i++) scratch[i] = parseInt(parts[i], 16);
  return build(AF_LLC, 6);
}

/** Runs `fn` with `addr`, then drops the caller's reference (setters take their own). */
export function withAddr<T>(addr: NonNullable<Ptr>, fn: (a: NonNullable<Ptr>) => T): T {
  try {
    return fn(addr);
  } finally {
    libs().nl.nl_addr_put(addr);
  }
}

// Reads go through this scratch buffer: no per-address ArrayBuffer (those are malloc-backed and
// only freed by GC, which would blur heap measurements and cost time in large listings).
const readBuf = new Uint8Array(16);
/** `readBuf`'s first n bytes, per n: copies need no new view (a dump reads thousands). */
const readViews = Array.from({ length: 17 }, (_, n) => readBuf.subarray(0, n));

/** Copies the address bytes into `readBuf`; returns how many (0 for a null/empty address). */
function bytesOf(a: NonNullable<Ptr>): number {
  const { nl } = libs();
  const len = nl.nl_addr_get_len(a);
  const p = nl.nl_addr_get_binary_addr(a);
  if (!p || len === 0 || len > 16) return 0;
  Deno.UnsafePointerView.copyInto(p, readViews[len]);
  return len;
}

const readView = new DataView(readBuf.buffer);

/**
 * The address of `len` bytes at `off` of `v` as text: 4 bytes IPv4, 16 IPv6 (RFC 5952, as
 * iproute2 prints it, through base/ipv6's one formatter), 6 a MAC; null for another length.
 * Also the raw dumps' (route.ts, neigh.ts).
 */
export function addrText(v: DataView, off: number, len: number): string | null {
  if (len === 4) {
    return `${v.getUint8(off)}.${v.getUint8(off + 1)}.${v.getUint8(off + 2)}.${
      v.getUint8(off + 3)
    }`;
  }
  if (len === 16) {
    const n = (v.getBigUint64(off) << 64n) | v.getBigUint64(off + 8);
    return formatIp6(n);
  }
  if (len === 6) return macText(v, off, 6);
  return null;
}

/** The address part of an nl_addr as text (IPv4, IPv6 or MAC); null for a null/empty address. */
export function readIp(a: Ptr): string | null {
  if (!a) return null;
  return addrText(readView, 0, bytesOf(a));
}

/** "00" … "ff": a MAC is formatted by lookups (a neighbour or FDB dump has thousands). */
const HEX = Array.from({ length: 256 }, (_, x) => x.toString(16).padStart(2, "0"));

/** `n` (≥ 1) bytes at `off` of `v` as "aa:bb:…"; null for none. */
export function macText(v: DataView, off: number, n: number): string | null {
  if (n <= 0) return null;
  let s = HEX[v.getUint8(off)];
  for (let i = 1; i < n; i++) s += ":" + HEX[v.getUint8(off + i)];
  return s;
}

/** A MAC nl_addr as "aa:bb:cc:dd:ee:ff"; null for a null/empty address. */
export function readMac(a: Ptr): string | null {
  if (!a) return null;
  return macText(readView, 0, bytesOf(a));
}

/**
 * An nl_addr as CIDR text. A route to the default has an empty address; it is "0.0.0.0/0" for
 * IPv4 (the family says which).
 */
export function readCidr(a: Ptr): string | null {
  if (!a) return null;
  const { nl } = libs();
  const prefix = nl.nl_addr_get_prefixlen(a);
  const ip = readIp(a);
  if (ip === null) {
    return nl.nl_addr_get_family(a) === AF_INET6 ? `::/${prefix}` : `0.0.0.0/${prefix}`;
  }
  return `${ip}/${prefix}`;
}
