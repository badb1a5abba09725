/**
 * IPv4 addresses on interfaces (rtnl_addr): add, replace, delete, list. Internal to ffi/libnl:
 * callers use the `Netlink` methods of the same names (mod.ts).
 *
 * @example
 * ```ts
 * addrAdd(sock, vxlanIndex, "198.19.5.0/32");
 * addrList(sock, vxlanIndex); // [{ index: 7, cidr: "198.19.5.0/32" }]
 * ```
 */
import { parseCidr } from "../../src/base/ipv4.ts";
import { AF_INET } from "../libc/udp.ts";
import { AF_INET6, ipAddr, readIp, withAddr } from "./nladdr.ts";
import { parseCidr6 } from "../../src/base/ipv6.ts";
import { drainCache, PTR_OUT } from "./mem.ts";
import type { NlSocket } from "./socket.ts";
import { NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE } from "./constants.ts";
import { libs } from "./symbols.ts";
import { checkIndex } from "./validate.ts";

/** An address on an interface: `cidr` is the address with its prefix, e.g. "198.19.5.1/24". */
export interface Addr {
  index: number;
  cidr: string;
}

function request(sock: NlSocket, op: string, index: number, cidr: string, flags: number | null) {
  checkIndex(index);
  // Host bits are allowed: an interface address is a host inside its subnet.
  const net = cidr.includes(":") ? parseCidr6(cidr, true) : parseCidr(cidr, true);
  const ip = cidr.split("/")[0].trim();
  const { rt } = libs();
  const a = rt.rtnl_addr_alloc();
  if (!a) throw new Error(`netlink ${op}: rtnl_addr_alloc returned NULL`);
  try {
    rt.rtnl_addr_set_ifindex(a, index);
    const set = withAddr(ipAddr(ip, net.prefix), (l) => rt.rtnl_addr_set_local(a, l));
    if (set < 0) throw sock.localError(op, { index, cidr }, `${cidr} dev ${index}`, set);
    sock.begin();
    const rc = flags === null
      ? rt.rtnl_addr_delete(sock.ptr, a, 0)
      : rt.rtnl_addr_add(sock.ptr, a, NLM_F_CREATE | flags);
    if (rc < 0) throw sock.error(op, { index, cidr }, `${cidr} dev ${index}`, rc);
  } finally {
    rt.rtnl_addr_put(a);
  }
}

/** Adds an address; fails with `exists` when the interface already has it. */
export function addrAdd(sock: NlSocket, index: number, cidr: string): void {
  request(sock, "addrAdd", index, cidr, NLM_F_EXCL);
}

/** Adds an address or updates it in place when present. */
export function addrReplace(sock: NlSocket, index: number, cidr: string): void {
  request(sock, "addrReplace", index, cidr, NLM_F_REPLACE);
}

/** Removes an address; fails with `notFound` when it is not there. */
export function addrDel(sock: NlSocket, index: number, cidr: string): void {
  request(sock, "addrDel", index, cidr, null);
}

/** IPv4 (or, with `family` 6, IPv6) addresses, of one interface when `index` is given. */
export function addrList(sock: NlSocket, index?: number, family: 4 | 6 = 4): Addr[] {
  if (index !== undefined) checkIndex(index);
  const { rt } = libs();
  const what = index ? `dev ${index}` : "";
  const cache = sock.dump(
    "addrList",
    { index },
    what,
    () => rt.rtnl_addr_alloc_cache(sock.ptr, PTR_OUT),
  );
  const out: Addr[] = [];
  drainCache(cache, (o) => {
    if (rt.rtnl_addr_get_family(o) !== (family === 6 ? AF_INET6 : AF_INET)) return;
    const i = rt.rtnl_addr_get_ifindex(o);
    if (index !== undefined && i !== index) return;
    const ip = readIp(rt.rtnl_addr_get_local(o));
    if (ip !== null) out.push({ index: i, cidr: `${ip}/${rt.rtnl_addr_get_prefixlen(o)}` });
  });
  return out;
}
