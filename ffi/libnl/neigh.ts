/**
 * Neighbour (ARP) entries and bridge forwarding-database (FDB) entries (rtnl_neigh). FDB entries on
 * a vxlan device map a remote VTEP MAC to the remote host's underlay IP (`bridge fdb ... self`).
 * Internal to ffi/libnl: callers use the `Netlink` methods of the same names (mod.ts).
 *
 * @example
 * ```ts
 * neighSet(sock, { dev: 7, ip: "198.19.5.0", mac: "c6:d2:32:6f:8f:44", permanent: true });
 * fdbSet(sock, { dev: 7, mac: "c6:d2:32:6f:8f:44", dst: "198.18.0.3" });
 * ```
 */
import { AF_INET } from "../libc/udp.ts";
import {
  addrText,
  AF_BRIDGE,
  AF_INET6,
  checkIp,
  ipAddr,
  macAddr,
  macText,
  withAddr,
} from "./nladdr.ts";
import { attrTable, type DumpMemo, dumpTable, forEachMessage, RTM_GETNEIGH } from "./dump.ts";
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

function checkDev(dev: number): void {
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

const RTM_NEWNEIGH = 28;
const NDA_DST = 1;
const NDA_LLADDR = 2;
const attrs = new Int32Array(2 * (NDA_LLADDR + 1));

/** A neighbour message's header fields and addresses (struct ndmsg, NDA_DST, NDA_LLADDR). */
function readNeigh(v: DataView, off: number, len: number) {
  const h = off + 16;
  const a = attrTable(v, off, len, attrs); // no closure per entry (dump.ts)
  const ip = a[2 * NDA_DST] >= 0 ? addrText(v, a[2 * NDA_DST], a[2 * NDA_DST + 1]) : null;
  const mac = a[2 * NDA_LLADDR] >= 0 ? macText(v, a[2 * NDA_LLADDR], a[2 * NDA_LLADDR + 1]) : null;
  return {
    family: v.getUint8(h),
    dev: v.getInt32(h + 4, true),
    state: v.getUint16(h + 8, true),
    flags: v.getUint8(h + 10),
    ip: ip as string | null,
    mac: mac as string | null,
  };
}

/** Runs `fn` on each neighbour message of a raw dump (dump.ts). */
function eachNeigh(b: Uint8Array, fn: (n: ReturnType<typeof readNeigh>) => void): void {
  forEachMessage(b, (v, off, len) => {
    if (v.getUint16(off + 4, true) === RTM_NEWNEIGH) fn(readNeigh(v, off, len));
  });
}

/**
 * IPv4 (or, with `family` 6, IPv6) neighbour entries, of one device when `dev` is given (the
 * kernel then dumps that device's alone). With a `memo`, the array of its last call when the
 * table did not change (dump.ts).
 */
export function neighList(
  sock: NlSocket,
  dev?: number,
  family: 4 | 6 = 4,
  memo?: DumpMemo<Neigh>,
): Neigh[] {
  if (dev !== undefined) checkDev(dev);
  const af = family === 6 ? AF_INET6 : AF_INET;
  const bytes = dumpTable(sock, "neighList", { dev }, dev ? `dev ${dev}` : "", {
    type: RTM_GETNEIGH,
    family: af,
    ifindex: dev,
  });
  const parse = (b: Uint8Array) => {
    const out: Neigh[] = [];
    eachNeigh(b, (n) => {
      if (n.family !== af || (dev !== undefined && n.dev !== dev) || n.ip === null) return;
      out.push({
        dev: n.dev,
        ip: n.ip,
        mac: n.mac,
        state: n.state,
        flags: n.flags,
        permanent: (n.state & NUD_PERMANENT) !== 0,
      });
    });
    return out;
  };
  return (memo ? memo.take(bytes, parse) : parse(bytes)) as Neigh[];
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

/**
 * FDB entries of `dev` (`bridge fdb show dev`): an AF_BRIDGE neighbour dump the kernel limits to
 * that device. With a `memo`, the array of its last call when the table did not change.
 */
export function fdbList(sock: NlSocket, dev: number, memo?: DumpMemo<Fdb>): Fdb[] {
  checkDev(dev);
  const bytes = dumpTable(sock, "fdbList", { dev }, `dev ${dev}`, {
    type: RTM_GETNEIGH,
    family: AF_BRIDGE,
    ifindex: dev,
  });
  const parse = (b: Uint8Array) => {
    const out: Fdb[] = [];
    eachNeigh(b, (n) => {
      if (n.family !== AF_BRIDGE || n.dev !== dev || n.mac === null) return;
      out.push({
        dev,
        mac: n.mac,
        dst: n.ip,
        state: n.state,
        flags: n.flags,
        permanent: (n.state & NUD_PERMANENT) !== 0,
        self: (n.flags & NTF_SELF) !== 0,
      });
    });
    return out;
  };
  return (memo ? memo.take(bytes, parse) : parse(bytes)) as Fdb[];
}
