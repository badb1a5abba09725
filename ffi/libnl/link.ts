/**
 * Network interfaces (rtnl_link): list, look up, create vxlan and bridge devices, set up/down,
 * MTU and MAC, delete. Each function takes the {@link NlSocket} to use. Internal to ffi/libnl:
 * callers use the `Netlink` methods of the same names (mod.ts).
 *
 * @example
 * ```ts
 * const v = linkAdd(sock, { kind: "vxlan", name: "flannel.1", vni: 1, local: "198.18.0.2" });
 * linkSetUp(sock, v.index);
 * ```
 */
import { checkIfName } from "../libc/tun.ts";
import { macAddr, readMac, withAddr } from "./nladdr.ts";
import { cstr, drainCache, PTR_OUT, readCString, takePtr } from "./mem.ts";
import type { NlSocket } from "./socket.ts";
import { NLM_F_CREATE, NLM_F_EXCL } from "./constants.ts";
import { NLE_EXIST, NLE_NODEV, NLE_OBJ_NOTFOUND } from "./errors.ts";
import { libs } from "./symbols.ts";
import { checkIndex, checkMac } from "./validate.ts";
import {
  applyVxlan,
  checkVxlan,
  describeVxlan,
  readVxlan,
  type VxlanInfo,
  type VxlanOptions,
} from "./vxlan.ts";

export type { VxlanInfo, VxlanOptions } from "./vxlan.ts";

type Ptr = NonNullable<Deno.PointerValue>;

const IFF_UP = 0x1;

/** A network interface. */
export interface Link {
  index: number;
  name: string;
  /** IFLA_INFO_KIND ("vxlan", "bridge", "veth", ...), null for plain devices such as lo. */
  kind: string | null;
  mtu: number;
  /** Administratively up (IFF_UP). */
  up: boolean;
  /** "aa:bb:cc:dd:ee:ff"; "" for devices without a link-layer address. */
  mac: string;
  /** ifindex of the master (bridge) device, null when none. */
  master: number | null;
  /** Present only for vxlan links. */
  vxlan?: VxlanInfo;
}

/** A bridge device to create (`ip link add NAME type bridge`). */
export interface BridgeOptions {
  name: string;
  mtu?: number;
  mac?: string;
}

/** What {@link linkAdd} creates: the kind, and that kind's options. */
export type LinkSpec = ({ kind: "vxlan" } & VxlanOptions) | ({ kind: "bridge" } & BridgeOptions);

/** Copies a libnl link object into a plain {@link Link}. */
export function readLink(link: Ptr): Link {
  const { rt } = libs();
  const master = rt.rtnl_link_get_master(link);
  const out: Link = {
    index: rt.rtnl_link_get_ifindex(link),
    name: readCString(rt.rtnl_link_get_name(link)) ?? "",
    kind: readCString(rt.rtnl_link_get_type(link)),
    mtu: rt.rtnl_link_get_mtu(link),
    up: (rt.rtnl_link_get_flags(link) & IFF_UP) !== 0,
    mac: readMac(rt.rtnl_link_get_addr(link)) ?? "",
    master: master > 0 ? master : null,
  };
  // Every rtnl_link_vxlan_* call aborts the process on a non-vxlan link: check first.
  if (rt.rtnl_link_is_vxlan(link)) out.vxlan = readVxlan(link);
  return out;
}

/** All interfaces, by ifindex. */
export function linkList(sock: NlSocket): Link[] {
  const { rt } = libs();
  const cache = sock.dump(
    "linkList",
    null,
    "",
    () => rt.rtnl_link_alloc_cache(sock.ptr, 0, PTR_OUT),
  );
  const links: Link[] = [];
  drainCache(cache, (o) => links.push(readLink(o)));
  return links.sort((a, b) => a.index - b.index);
}

/** Fetches one link from the kernel; null when it does not exist. */
function getKernel(sock: NlSocket, op: string, index: number, name: string | null): Link | null {
  const { rt } = libs();
  sock.begin();
  const rc = rt.rtnl_link_get_kernel(sock.ptr, index, name === null ? null : cstr(name), PTR_OUT);
  const link = takePtr();
  if (rc < 0) {
    if (-rc === NLE_NODEV || -rc === NLE_OBJ_NOTFOUND) return null;
    throw sock.error(op, name ?? index, name ?? `ifindex ${index}`, rc);
  }
  if (!link) return null;
  try {
    return readLink(link);
  } finally {
    rt.rtnl_link_put(link);
  }
}

/** The link called `name`, or null. */
export function linkByName(sock: NlSocket, name: string): Link | null {
  // The kernel cannot hold such a name, so no such link can exist (and it would reject the query).
  if (name.length === 0 || new TextEncoder().encode(name).length > 15) return null;
  return getKernel(sock, "linkByName", 0, name);
}

/** The link with ifindex `index`, or null. */
export function linkByIndex(sock: NlSocket, index: number): Link | null {
  checkIndex(index);
  return getKernel(sock, "linkByIndex", index, null);
}

/** Sets name/mtu/mac on a new link object; parse errors surface before anything is sent. */
function applyCommon(link: Ptr, name: string, o: { mtu?: number; mac?: string }): void {
  const { rt } = libs();
  rt.rtnl_link_set_name(link, cstr(name));
  if (o.mtu !== undefined) rt.rtnl_link_set_mtu(link, o.mtu);
  if (o.mac !== undefined) withAddr(macAddr(o.mac), (a) => rt.rtnl_link_set_addr(link, a));
}

function addLink(sock: NlSocket, op: string, args: unknown, what: string, link: Ptr, name: string) {
  const { rt } = libs();
  sock.begin();
  const rc = rt.rtnl_link_add(sock.ptr, link, NLM_F_CREATE | NLM_F_EXCL);
  if (rc < 0) {
    const hint = -rc === NLE_EXIST
      ? `a link named ${name} already exists; delete it or reuse it`
      : undefined;
    throw sock.error(op, args, what, rc, hint);
  }
  const made = getKernel(sock, op, 0, name);
  if (!made) throw new Error(`netlink ${op} ${what}: created, but the link is gone on read-back`);
  return made;
}

function checkOptional(o: { mtu?: number; mac?: string }): void {
  if (o.mtu !== undefined && (!Number.isInteger(o.mtu) || o.mtu < 68 || o.mtu > 65535)) {
    throw new RangeError(`MTU ${o.mtu} is out of range (68..65535)`);
  }
  if (o.mac !== undefined) checkMac(o.mac);
}

/**
 * Creates a vxlan or bridge device (`ip link add`) and returns it as read back; fails with
 * `exists` when the name is taken. Every field is checked before anything is allocated.
 */
export function linkAdd(sock: NlSocket, spec: LinkSpec): Link {
  checkIfName(spec.name);
  if (spec.kind === "vxlan") checkVxlan(spec);
  else if (spec.kind !== "bridge") {
    throw new RangeError(`link kind "${(spec as { kind: string }).kind}" is not supported`);
  }
  checkOptional(spec);
  const what = spec.kind === "vxlan" ? describeVxlan(spec) : `${spec.name} type bridge`;
  const { rt } = libs();
  const link = spec.kind === "vxlan" ? rt.rtnl_link_vxlan_alloc() : rt.rtnl_link_alloc();
  if (!link) throw new Error(`netlink linkAdd ${what}: allocating the link returned NULL`);
  try {
    if (spec.kind === "bridge") {
      const rc = rt.rtnl_link_set_type(link, cstr("bridge"));
      if (rc < 0) throw sock.localError("linkAdd", spec, what, rc);
    }
    applyCommon(link, spec.name, spec);
    if (spec.kind === "vxlan") applyVxlan(link, spec, what);
    return addLink(sock, "linkAdd", spec, what, link, spec.name);
  } finally {
    rt.rtnl_link_put(link);
  }
}

/**
 * Sends a change for `index`. The original is described by its ifindex alone: libnl 3.7 sends
 * ifi_change = the changed flag bits, so other flags are left as they are.
 */
function change(sock: NlSocket, op: string, index: number, what: string, edit: (c: Ptr) => void) {
  checkIndex(index);
  const { rt } = libs();
  const orig = rt.rtnl_link_alloc();
  const changes = rt.rtnl_link_alloc();
  try {
    if (!orig || !changes) throw new Error(`netlink ${op}: rtnl_link_alloc returned NULL`);
    rt.rtnl_link_set_ifindex(orig, index);
    edit(changes);
    sock.begin();
    const rc = rt.rtnl_link_change(sock.ptr, orig, changes, 0);
    if (rc < 0) throw sock.error(op, { index }, `dev ${index} ${what}`, rc);
  } finally {
    if (orig) rt.rtnl_link_put(orig);
    if (changes) rt.rtnl_link_put(changes);
  }
}

export function linkSetUp(sock: NlSocket, index: number): void {
  change(sock, "linkSetUp", index, "up", (c) => libs().rt.rtnl_link_set_flags(c, IFF_UP));
}

export function linkSetDown(sock: NlSocket, index: number): void {
  change(sock, "linkSetDown", index, "down", (c) => libs().rt.rtnl_link_unset_flags(c, IFF_UP));
}

export function linkSetMtu(sock: NlSocket, index: number, mtu: number): void {
  checkOptional({ mtu });
  change(sock, "linkSetMtu", index, `mtu ${mtu}`, (c) => libs().rt.rtnl_link_set_mtu(c, mtu));
}

/** Sets the transmit queue length (`ip link set DEV txqueuelen N`). */
export function linkSetTxQueueLen(sock: NlSocket, index: number, qlen: number): void {
  if (!Number.isInteger(qlen) || qlen < 0 || qlen > 0xffffffff) {
    throw new RangeError(`txqueuelen ${qlen} must be an integer in 0..4294967295`);
  }
  change(
    sock,
    "linkSetTxQueueLen",
    index,
    `txqueuelen ${qlen}`,
    (c) => libs().rt.rtnl_link_set_txqlen(c, qlen),
  );
}

export function linkSetMac(sock: NlSocket, index: number, mac: string): void {
  const addr = macAddr(mac);
  withAddr(
    addr,
    (a) =>
      change(
        sock,
        "linkSetMac",
        index,
        `address ${mac}`,
        (c) => libs().rt.rtnl_link_set_addr(c, a),
      ),
  );
}

/** Deletes a link; a missing link fails with `notFound` (NLE_NODEV). */
export function linkDel(sock: NlSocket, index: number): void {
  checkIndex(index);
  const { rt } = libs();
  const link = rt.rtnl_link_alloc();
  if (!link) throw new Error("netlink linkDel: rtnl_link_alloc returned NULL");
  try {
    rt.rtnl_link_set_ifindex(link, index);
    sock.begin();
    const rc = rt.rtnl_link_delete(sock.ptr, link);
    if (rc < 0) throw sock.error("linkDel", { index }, `dev ${index}`, rc);
  } finally {
    rt.rtnl_link_put(link);
  }
}
