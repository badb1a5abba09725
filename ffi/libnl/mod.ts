/**
 * libnl bindings for weft: links, addresses, routes, neighbours and FDB entries, read and written
 * through one NETLINK_ROUTE socket. Calls are synchronous (a netlink round trip is microseconds).
 *
 * Use the process-wide functions (`routeReplace(...)`, one socket opened on first use), or a
 * {@link Netlink} handle of your own. A socket works in the network namespace of the thread that
 * opened it. Failures throw {@link NetlinkError}; `isNotFound(e)` / `isExists(e)` classify them.
 *
 * @example
 * ```ts
 * import { isNotFound, linkByName, routeDel, routeReplace } from "./ffi/libnl/mod.ts";
 * const v = linkByName("flannel.1");
 * if (v) routeReplace({ dst: "198.19.5.0/24", gw: "198.19.5.0", dev: v.index, onlink: true });
 * try {
 *   routeDel({ dst: "198.19.6.0/24" });
 * } catch (e) {
 *   if (!isNotFound(e)) throw e;
 * }
 * ```
 */
import { NlSocket } from "./socket.ts";
import * as L from "./link.ts";
import * as A from "./address.ts";
import * as R from "./route.ts";
import * as N from "./neigh.ts";

export { isExists, isNotFound, NetlinkError } from "./errors.ts";
export { LibnlUnavailableError } from "./symbols.ts";
export type { Link, VxlanInfo, VxlanOptions } from "./link.ts";
export type { Addr } from "./address.ts";
export type { Route, RouteLookup } from "./route.ts";
export {
  RT_SCOPE_HOST,
  RT_SCOPE_LINK,
  RT_SCOPE_UNIVERSE,
  RT_TABLE_MAIN,
  RTN_BLACKHOLE,
  RTN_UNICAST,
  RTPROT_BOOT,
} from "./route.ts";
export type { Fdb, Neigh } from "./neigh.ts";
export { NTF_SELF, NUD_PERMANENT } from "./neigh.ts";

/** A netlink handle: one route socket, opened on first use, closed by {@link close}. */
export class Netlink {
  #sock: NlSocket | null = null;

  /** The socket, opened (and libnl loaded) on first use. */
  get socket(): NlSocket {
    if (!this.#sock) this.#sock = new NlSocket();
    return this.#sock;
  }

  linkList(): L.Link[] {
    return L.linkList(this.socket);
  }
  linkByName(name: string): L.Link | null {
    return L.linkByName(this.socket, name);
  }
  linkByIndex(index: number): L.Link | null {
    return L.linkByIndex(this.socket, index);
  }
  linkAddVxlan(o: L.VxlanOptions): L.Link {
    return L.linkAddVxlan(this.socket, o);
  }
  linkAddBridge(name: string, o?: { mtu?: number; mac?: string }): L.Link {
    return L.linkAddBridge(this.socket, name, o);
  }
  linkSetUp(index: number): void {
    L.linkSetUp(this.socket, index);
  }
  linkSetDown(index: number): void {
    L.linkSetDown(this.socket, index);
  }
  linkSetMtu(index: number, mtu: number): void {
    L.linkSetMtu(this.socket, index, mtu);
  }
  linkSetMac(index: number, mac: string): void {
    L.linkSetMac(this.socket, index, mac);
  }
  linkSetTxQueueLen(index: number, qlen: number): void {
    L.linkSetTxQueueLen(this.socket, index, qlen);
  }
  linkDel(index: number): void {
    L.linkDel(this.socket, index);
  }

  addrAdd(index: number, cidr: string): void {
    A.addrAdd(this.socket, index, cidr);
  }
  addrReplace(index: number, cidr: string): void {
    A.addrReplace(this.socket, index, cidr);
  }
  addrDel(index: number, cidr: string): void {
    A.addrDel(this.socket, index, cidr);
  }
  addrList(index?: number): A.Addr[] {
    return A.addrList(this.socket, index);
  }

  routeReplace(r: R.Route): void {
    R.routeReplace(this.socket, r);
  }
  routeAdd(r: R.Route): void {
    R.routeAdd(this.socket, r);
  }
  routeDel(r: R.Route): void {
    R.routeDel(this.socket, r);
  }
  routeList(f?: { table?: number; dev?: number; type?: number }): R.Route[] {
    return R.routeList(this.socket, f);
  }
  routeGet(dst: string): R.RouteLookup {
    return R.routeGet(this.socket, dst);
  }

  neighReplace(e: { dev: number; ip: string; mac: string; permanent?: boolean }): void {
    N.neighReplace(this.socket, e);
  }
  neighDel(e: { dev: number; ip: string }): void {
    N.neighDel(this.socket, e);
  }
  neighList(dev?: number): N.Neigh[] {
    return N.neighList(this.socket, dev);
  }
  fdbReplace(e: { dev: number; mac: string; dst: string }): void {
    N.fdbReplace(this.socket, e);
  }
  fdbDel(e: { dev: number; mac: string; dst?: string }): void {
    N.fdbDel(this.socket, e);
  }
  fdbList(dev: number): N.Fdb[] {
    return N.fdbList(this.socket, dev);
  }

  /** Closes the socket; the handle reopens one if used again. */
  close(): void {
    this.#sock?.close();
    this.#sock = null;
  }
}

let shared: Netlink | null = null;

/** The process-wide handle behind the free functions below. */
export function netlink(): Netlink {
  if (!shared) shared = new Netlink();
  return shared;
}

export const linkList = (): L.Link[] => netlink().linkList();
export const linkByName = (name: string): L.Link | null => netlink().linkByName(name);
export const linkByIndex = (index: number): L.Link | null => netlink().linkByIndex(index);
export const linkAddVxlan = (o: L.VxlanOptions): L.Link => netlink().linkAddVxlan(o);
export const linkAddBridge = (name: string, o?: { mtu?: number; mac?: string }): L.Link =>
  netlink().linkAddBridge(name, o);
export const linkSetUp = (index: number): void => netlink().linkSetUp(index);
export const linkSetDown = (index: number): void => netlink().linkSetDown(index);
export const linkSetMtu = (index: number, mtu: number): void => netlink().linkSetMtu(index, mtu);
export const linkSetMac = (index: number, mac: string): void => netlink().linkSetMac(index, mac);
export const linkSetTxQueueLen = (index: number, qlen: number): void =>
  netlink().linkSetTxQueueLen(index, qlen);
export const linkDel = (index: number): void => netlink().linkDel(index);
export const addrAdd = (index: number, cidr: string): void => netlink().addrAdd(index, cidr);
export const addrReplace = (index: number, cidr: string): void =>
  netlink().addrReplace(index, cidr);
export const addrDel = (index: number, cidr: string): void => netlink().addrDel(index, cidr);
export const addrList = (index?: number): A.Addr[] => netlink().addrList(index);
export const routeReplace = (r: R.Route): void => netlink().routeReplace(r);
export const routeAdd = (r: R.Route): void => netlink().routeAdd(r);
export const routeDel = (r: R.Route): void => netlink().routeDel(r);
export const routeList = (f?: { table?: number; dev?: number }): R.Route[] =>
  netlink().routeList(f);
export const routeGet = (dst: string): R.RouteLookup => netlink().routeGet(dst);
export const neighReplace = (
  e: { dev: number; ip: string; mac: string; permanent?: boolean },
): void => netlink().neighReplace(e);
export const neighDel = (e: { dev: number; ip: string }): void => netlink().neighDel(e);
export const neighList = (dev?: number): N.Neigh[] => netlink().neighList(dev);
export const fdbReplace = (e: { dev: number; mac: string; dst: string }): void =>
  netlink().fdbReplace(e);
export const fdbDel = (e: { dev: number; mac: string; dst?: string }): void => netlink().fdbDel(e);
export const fdbList = (dev: number): N.Fdb[] => netlink().fdbList(dev);
