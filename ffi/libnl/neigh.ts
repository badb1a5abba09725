/**
 * Neighbour (ARP) entries and bridge forwarding-database (FDB) entries (rtnl_neigh). FDB entries on
 * a vxlan device map a remote VTEP MAC to the remote host's underlay IP (`bridge fdb ... self`).
 * Setting and deleting them; listing is neigh_list.ts's. Internal to ffi/libnl: callers use the
 * `Netlink` methods of the same names (mod.ts).
 *
 * @example
 * ```ts
 * neighSet(sock, { dev: 7, ip: "198.19.5.0", mac: "c6:d2:32:6f:8f:44", permanent: true });
 * fdbSet(sock, { dev: 7, mac: "c6:d2:32:6f:8f:44", dst: "198.18.0.3" });
 * ```
 */
import { AF_BRIDGE, checkIp, ipAddr, macAddr, withAddr } from "./nladdr.ts";
import type { NlSocket } from "./socket.ts";
import {
  NLM_F_CREATE,
  NLM_F_REPLACE,
  NTF_SELF,
  NUD_PERMANENT,
  NUD_REACHABLE,
} from "./constants.ts";
import { libs } from "./symbols.ts";
import { checkIndex, checkMac } from "./validate.ts";

type Ptr = NonNullable<Deno.PointerValue>;

/** An ARP entry to set: `permanent` defaults to true (`nud permanent`). */
export interface NeighEntry {
  dev: number;
  ip: string;
  mac: string;
  permanent?: boolean;
}

/** Which ARP entry to delete. */
export interface NeighKey {
  dev: number;
  ip: string;
}

/** An FDB entry to set: `mac` on `dev` reaches the VTEP at `dst`. */
export interface FdbEntry {
  dev: number;
  mac: string;
  dst: string;
}

/** Which FDB entry to delete: `mac` on `dev`, only the one towards `dst` when given. */
export interface FdbKey {
  dev: number;
  mac: string;
  dst?: string;
}

/** An IPv4 neighbour (ARP) entry. */
export interface Neigh {
  dev: number;
  ip: string;
  /** Link-layer address; null for incomplete/failed entries. */
  mac: string | null;
  /** NUD_* state bits (0x80 permanent). */
  state: number;
  /** NTF_* flags. */
  flags: number;
  permanent: boolean;
}

/** A bridge FDB entry. */
export interface Fdb {
  dev: number;
  mac: string;
  /** Remote IP (vxlan VTEP) for entries that have one. */
  dst: string | null;
  state: number;
  flags: number;
  permanent: boolean;
  /** NTF_SELF: the entry lives in the device's own table (vxlan), not a bridge master's. */
  self: boolean;
}

/** Throws a RangeError naming a bad device index (also neigh_list.ts's). */
export function checkDev(dev: number): void {
  checkIndex(dev, "neighbour dev");
}

/** Runs `fn` on a fresh neighbour object, then frees it. */
function withNeigh<T>(op: string, fn: (n: Ptr) => T): T {
  const { rt } = libs();
  const n = rt.rtnl_neigh_alloc();
  if (!n) throw new Error(`netlink ${op}: rtnl_neigh_alloc returned NULL`);
  try {
    return fn(n);
  } finally {
    rt.rtnl_neigh_put(n);
  }
}

function setAddr(sock: NlSocket, op: string, args: unknown, what: string, rc: number): void {
  if (rc < 0) throw sock.localError(op, args, what, rc);
}

/** Adds or replaces an ARP entry (`ip neigh replace IP lladdr MAC dev DEV nud permanent`). */
export function neighSet(sock: NlSocket, e: NeighEntry): void {
  checkDev(e.dev);
  checkIp(e.ip);
  checkMac(e.mac);
  const permanent = e.permanent ?? true;
  const what = `${e.ip} lladdr ${e.mac} dev ${e.dev}${permanent ? " nud permanent" : ""}`;
  const { rt } = libs();
  withNeigh("neighSet", (n) => {
    rt.rtnl_neigh_set_ifindex(n, e.dev);
    const rc = withAddr(ipAddr(e.ip), (a) => rt.rtnl_neigh_set_dst(n, a));
    setAddr(sock, "neighSet", e, what, rc);
    withAddr(macAddr(e.mac), (a) => rt.rtnl_neigh_set_lladdr(n, a));
    rt.rtnl_neigh_set_state(n, permanent ? NUD_PERMANENT : NUD_REACHABLE);
    sock.begin();
    const r = rt.rtnl_neigh_add(sock.ptr, n, NLM_F_CREATE | NLM_F_REPLACE);
    if (r < 0) throw sock.error("neighSet", e, what, r);
  });
}

/** Throws a RangeError naming a malformed neighbour key (also batch.ts's). */
export function checkNeighKey(e: NeighKey): void {
  checkDev(e.dev);
  checkIp(e.ip);
}

/** Deletes an ARP entry; fails with `notFound` when there is none. */
export function neighDel(sock: NlSocket, e: NeighKey): void {
  checkNeighKey(e);
  const what = `${e.ip} dev ${e.dev}`;
  const { rt } = libs();
  withNeigh("neighDel", (n) => {
    rt.rtnl_neigh_set_ifindex(n, e.dev);
    const rc = withAddr(ipAddr(e.ip), (a) => rt.rtnl_neigh_set_dst(n, a));
    setAddr(sock, "neighDel", e, what, rc);
    sock.begin();
    const r = rt.rtnl_neigh_delete(sock.ptr, n, 0);
    if (r < 0) throw sock.error("neighDel", e, what, r);
  });
}

/**
 * Sets up an FDB request. The destination must be set before the family: setting an IPv4
 * destination on an AF_BRIDGE object fails with an address-family mismatch.
 */
function fdbObject(sock: NlSocket, op: string, n: Ptr, e: FdbKey, what: string): void {
  const { rt } = libs();
  rt.rtnl_neigh_set_ifindex(n, e.dev);
  withAddr(macAddr(e.mac), (a) => rt.rtnl_neigh_set_lladdr(n, a));
  if (e.dst !== undefined) {
    const rc = withAddr(ipAddr(e.dst), (a) => rt.rtnl_neigh_set_dst(n, a));
    setAddr(sock, op, e, what, rc);
  }
  rt.rtnl_neigh_set_family(n, AF_BRIDGE);
  rt.rtnl_neigh_set_flags(n, NTF_SELF);
}

/** Throws a RangeError naming a malformed FDB key (also batch.ts's). */
export function checkFdb(e: FdbKey): void {
  checkDev(e.dev);
  checkMac(e.mac);
  if (e.dst !== undefined) checkIp(e.dst);
}

/**
 * Adds or replaces a permanent FDB entry in the device's own table
 * (`bridge fdb replace MAC dev DEV dst IP self permanent`).
 */
export function fdbSet(sock: NlSocket, e: FdbEntry): void {
  checkFdb(e);
  const what = `${e.mac} dev ${e.dev} dst ${e.dst} self permanent`;
  const { rt } = libs();
  withNeigh("fdbSet", (n) => {
    fdbObject(sock, "fdbSet", n, e, what);
    rt.rtnl_neigh_set_state(n, NUD_PERMANENT);
    sock.begin();
    const r = rt.rtnl_neigh_add(sock.ptr, n, NLM_F_CREATE | NLM_F_REPLACE);
    if (r < 0) throw sock.error("fdbSet", e, what, r);
  });
}

/** Deletes an FDB entry (only the one towards `dst` when given); `notFound` when absent. */
export function fdbDel(sock: NlSocket, e: FdbKey): void {
  checkFdb(e);
  const what = `${e.mac} dev ${e.dev}${e.dst !== undefined ? ` dst ${e.dst}` : ""} self`;
  const { rt } = libs();
  withNeigh("fdbDel", (n) => {
    fdbObject(sock, "fdbDel", n, e, what);
    sock.begin();
    const r = rt.rtnl_neigh_delete(sock.ptr, n, 0);
    if (r < 0) throw sock.error("fdbDel", e, what, r);
  });
}
