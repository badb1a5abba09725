/**
 * libnl bindings for weft: links, addresses, routes, neighbours and FDB entries, read and written
 * through one NETLINK_ROUTE socket. Calls are synchronous (a netlink round trip is microseconds).
 *
 * There is one way to call each verb: a method of a {@link Netlink} handle, named as in
 * vishvananda/netlink (`linkAdd`, `routeReplace`, `neighSet`, ...). `netlink()` is the
 * process-wide handle; make your own `new Netlink()` only to hold a second socket. A socket works
 * in the network namespace of the thread that opened it. Failures throw {@link NetlinkError};
 * `isNotFound(e)` / `isExists(e)` classify them; bad arguments throw a RangeError before anything
 * is sent.
 *
 * @example
 * ```ts
 * import { isNotFound, netlink } from "./ffi/libnl/mod.ts";
 * const nl = netlink();
 * const v = nl.linkByName("flannel.1");
 * if (v) nl.routeReplace({ dst: "198.19.5.0/24", gw: "198.19.5.0", dev: v.index, onlink: true });
 * try {
 *   nl.routeDel({ dst: "198.19.6.0/24" });
 * } catch (e) {
 *   if (!isNotFound(e)) throw e;
 * }
 * ```
 */
import { NlSocket } from "./socket.ts";
import * as L from "./link.ts";
import * as A from "./address.ts";
import * as R from "./route.ts";
import * as RL from "./route_list.ts";
import * as N from "./neigh.ts";
import * as NL from "./neigh_list.ts";
import * as B from "./batch.ts";

export { isExists, isNotFound, NetlinkError } from "./errors.ts";
export { LibnlUnavailableError } from "./symbols.ts";
export type { BridgeOptions, Link, LinkSpec, VxlanInfo, VxlanOptions } from "./link.ts";
export type { Addr } from "./address.ts";
export type { Route, RouteFilter, RouteLookup } from "./route.ts";
export type { Fdb, FdbEntry, FdbKey, Neigh, NeighEntry, NeighKey } from "./neigh.ts";
export type { DeleteRequest } from "./batch.ts";
export { DumpMemo, type TableChange, TableRead } from "./dump.ts";
import type { DumpMemo, TableRead } from "./dump.ts";
// The *BytesRead functions read a dump made elsewhere (a test's messages) as the Netlink reads do.
export { routeBytesRead, scanRoutes } from "./route_list.ts";
export type { PlainRoute } from "./route_list.ts";
export { fdbBytesRead, neighBytesRead, scanFdb, scanNeigh } from "./neigh_list.ts";
export type { PlainNeigh } from "./neigh_list.ts";
export {
  NTF_SELF,
  NUD_PERMANENT,
  RT_SCOPE_HOST,
  RT_SCOPE_LINK,
  RT_SCOPE_UNIVERSE,
  RT_TABLE_MAIN,
  RTN_BLACKHOLE,
  RTN_UNICAST,
  RTPROT_BOOT,
} from "./constants.ts";

/**
 * A netlink handle: one route socket, opened (and libnl loaded) on first use, closed by
 * {@link close}. Each method is one iproute2 verb; the comment names it.
 */
export class Netlink {
  #sock: NlSocket | null = null;

  get #s(): NlSocket {
    if (!this.#sock) this.#sock = new NlSocket();
    return this.#sock;
  }

  /** `ip link show`: all interfaces, by ifindex. */
  linkList(): L.Link[] {
    return L.linkList(this.#s);
  }
  /** `ip link show NAME`; null when there is none. */
  linkByName(name: string): L.Link | null {
    return L.linkByName(this.#s, name);
  }
  /** The link with this ifindex; null when there is none. */
  linkByIndex(index: number): L.Link | null {
    return L.linkByIndex(this.#s, index);
  }
  /** `ip link add NAME type vxlan|bridge ...`; returns the link as read back. */
  linkAdd(spec: L.LinkSpec): L.Link {
    return L.linkAdd(this.#s, spec);
  }
  /** `ip link set DEV up` (other flags untouched). */
  linkSetUp(index: number): void {
    L.linkSetUp(this.#s, index);
  }
  /** `ip link set DEV down`. */
  linkSetDown(index: number): void {
    L.linkSetDown(this.#s, index);
  }
  /** `ip link set DEV mtu N`. */
  linkSetMtu(index: number, mtu: number): void {
    L.linkSetMtu(this.#s, index, mtu);
  }
  /** `ip link set DEV address MAC`. */
  linkSetMac(index: number, mac: string): void {
    L.linkSetMac(this.#s, index, mac);
  }
  /** `ip link set DEV txqueuelen N`. */
  linkSetTxQueueLen(index: number, qlen: number): void {
    L.linkSetTxQueueLen(this.#s, index, qlen);
  }
  /** `ip link del DEV`; `notFound` when it is gone. */
  linkDel(index: number): void {
    L.linkDel(this.#s, index);
  }

  /** `ip addr add CIDR dev DEV`; `exists` when it is there. */
  addrAdd(index: number, cidr: string): void {
    A.addrAdd(this.#s, index, cidr);
  }
  /** `ip addr replace CIDR dev DEV`. */
  addrReplace(index: number, cidr: string): void {
    A.addrReplace(this.#s, index, cidr);
  }
  /** `ip addr del CIDR dev DEV`; `notFound` when it is not there. */
  addrDel(index: number, cidr: string): void {
    A.addrDel(this.#s, index, cidr);
  }
  /** `ip -4 addr show [dev DEV]`. */
  addrList(index?: number, family: 4 | 6 = 4): A.Addr[] {
    return A.addrList(this.#s, index, family);
  }

  /** `ip route replace ...`. */
  routeReplace(r: R.Route): void {
    R.routeReplace(this.#s, r);
  }
  /** `ip route add ...`; `exists` when it is there. */
  routeAdd(r: R.Route): void {
    R.routeAdd(this.#s, r);
  }
  /** `ip route del ...`; `notFound` when none matches. */
  routeDel(r: R.Route): void {
    R.routeDel(this.#s, r);
  }
  /**
   * Many route / neighbour / FDB deletes, a few system calls for all (batch.ts): per request,
   * null or the error `routeDel` / `neighDel` / `fdbDel` would have thrown. For removing many
   * peers at once; the single verbs stay the way to delete one.
   */
  deleteMany(reqs: B.DeleteRequest[]): (Error | null)[] {
    return B.deleteMany(this.#s, reqs);
  }
  /** `ip route show [table T] [type T] [dev D]`: default main table, unicast. */
  routeList(filter?: R.RouteFilter): R.Route[] {
    return RL.routeList(this.#s, filter);
  }
  /**
   * {@link routeList} through a `memo` (one per call site and filter): the very read of its last
   * call when the table did not change (dump_memo.ts); `scanRoutes` or `entries()` reads it.
   */
  routeRead(filter: R.RouteFilter, memo: DumpMemo<R.Route>): TableRead<R.Route> {
    return RL.routeRead(this.#s, filter, memo);
  }
  /** `ip route get DST`. */
  routeGet(dst: string): R.RouteLookup {
    return R.routeGet(this.#s, dst);
  }

  /** `ip neigh replace IP lladdr MAC dev DEV [nud permanent]`. */
  neighSet(e: N.NeighEntry): void {
    N.neighSet(this.#s, e);
  }
  /** `ip neigh del IP dev DEV`; `notFound` when there is none. */
  neighDel(e: N.NeighKey): void {
    N.neighDel(this.#s, e);
  }
  /** `ip -4 neigh show [dev DEV]` (`family` 6: `ip -6 neigh show`). */
  neighList(dev?: number, family: 4 | 6 = 4): N.Neigh[] {
    return NL.neighList(this.#s, dev, family);
  }
  /** {@link neighList} of `dev` through a `memo`, as {@link routeRead}; `scanNeigh` reads it. */
  neighRead(dev: number, family: 4 | 6, memo: DumpMemo<N.Neigh>): TableRead<N.Neigh> {
    return NL.neighRead(this.#s, dev, family, memo);
  }
  /** `bridge fdb replace MAC dev DEV dst IP self permanent`. */
  fdbSet(e: N.FdbEntry): void {
    N.fdbSet(this.#s, e);
  }
  /** `bridge fdb del MAC dev DEV [dst IP] self`; `notFound` when absent. */
  fdbDel(e: N.FdbKey): void {
    N.fdbDel(this.#s, e);
  }
  /** `bridge fdb show dev DEV`. */
  fdbList(dev: number): N.Fdb[] {
    return NL.fdbList(this.#s, dev);
  }
  /** {@link fdbList} through a `memo`, as {@link routeRead}; `scanFdb` reads it. */
  fdbRead(dev: number, memo: DumpMemo<N.Fdb>): TableRead<N.Fdb> {
    return NL.fdbRead(this.#s, dev, memo);
  }

  /** Closes the socket; the handle reopens one if used again. */
  close(): void {
    this.#sock?.close();
    this.#sock = null;
  }
}

let shared: Netlink | null = null;

/** The process-wide handle (one socket, opened on first use). */
export function netlink(): Netlink {
  if (!shared) shared = new Netlink();
  return shared;
}
