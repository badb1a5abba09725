/**
 * VXLAN link attributes (rtnl_link_vxlan_*): checking and setting them on a link to create, and
 * reading them back. Every rtnl_link_vxlan_* call aborts the process (libnl's APPBUG + assert) on a
 * link that is not vxlan, so callers check `rtnl_link_is_vxlan` (reading) or allocate with
 * `rtnl_link_vxlan_alloc` (creating) first. Internal to ffi/libnl; link.ts uses it.
 *
 * @example
 * ```ts
 * checkVxlan(o);                       // before anything is allocated
 * const link = rt.rtnl_link_vxlan_alloc();
 * applyVxlan(link, o, describeVxlan(o));
 * if (rt.rtnl_link_is_vxlan(other)) readVxlan(other); // { id, local, port, ... }
 * ```
 */
import { checkIp, ipAddr, readIp, withAddr } from "./nladdr.ts";
import { PTR_OUT, takePtr, takeU32, U32_OUT } from "./mem.ts";
import { libs } from "./symbols.ts";
import { checkIndex } from "./validate.ts";

type Ptr = NonNullable<Deno.PointerValue>;

const RTNL_LINK_VXLAN_F_GBP = 1;
const VXLAN_ID_MAX = 16777215;

/** VXLAN attributes of a link, as the kernel reports them. */
export interface VxlanInfo {
  /** VNI. */
  id: number;
  /** Tunnel source address, null when unset. */
  local: string | null;
  /** UDP destination port (kernel default 8472). */
  port: number;
  learning: boolean;
  gbp: boolean;
  /** Underlay device (IFLA_VXLAN_LINK), null when unset. */
  devIndex: number | null;
}

/** A vxlan device to create (`ip link add NAME type vxlan id VNI ...`). */
export interface VxlanOptions {
  name: string;
  /** VXLAN network identifier, 0..16777215. */
  vni: number;
  /** Tunnel source IPv4 address. */
  local?: string;
  /** Underlay device ifindex. */
  devIndex?: number;
  /** UDP port; omitted → kernel default (8472). */
  port?: number;
  /** Source-address learning; default false (as flannel creates it). */
  learning?: boolean;
  /** Group Based Policy extension; default false. */
  gbp?: boolean;
  mtu?: number;
  mac?: string;
}

/** Checks a vxlan spec's own fields; throws a RangeError naming the bad value. */
export function checkVxlan(o: VxlanOptions): void {
  if (!Number.isInteger(o.vni) || o.vni < 0 || o.vni > VXLAN_ID_MAX) {
    throw new RangeError(`VNI ${o.vni} is out of range (0..${VXLAN_ID_MAX})`);
  }
  if (o.port !== undefined && (!Number.isInteger(o.port) || o.port < 1 || o.port > 65535)) {
    throw new RangeError(`vxlan port ${o.port} is out of range (1..65535)`);
  }
  if (o.local !== undefined) checkIp(o.local); // IPv4 or IPv6 (flannel-v6.<VNI>)
  if (o.devIndex !== undefined) checkIndex(o.devIndex, "vxlan devIndex");
}

/** The spec as iproute2 would write it, for error messages. */
export function describeVxlan(o: VxlanOptions): string {
  return [
    o.name,
    `type vxlan id ${o.vni}`,
    o.local !== undefined ? `local ${o.local}` : "",
    o.devIndex !== undefined ? `dev ${o.devIndex}` : "",
    o.port !== undefined ? `dstport ${o.port}` : "",
    o.learning ? "learning" : "nolearning",
    o.gbp ? "gbp" : "",
  ].filter(Boolean).join(" ");
}

/** Sets the vxlan attributes on a link object made by rtnl_link_vxlan_alloc. */
export function applyVxlan(link: Ptr, o: VxlanOptions, what: string): void {
  const { rt } = libs();
  rt.rtnl_link_vxlan_set_id(link, o.vni);
  if (o.local !== undefined) {
    withAddr(ipAddr(o.local), (a) => rt.rtnl_link_vxlan_set_local(link, a));
  }
  if (o.devIndex !== undefined) rt.rtnl_link_vxlan_set_link(link, o.devIndex);
  if (o.port !== undefined) rt.rtnl_link_vxlan_set_port(link, o.port);
  // Always explicit: the kernel's default is learning on, flannel's is off.
  rt.rtnl_link_vxlan_set_learning(link, o.learning ? 1 : 0);
  if (o.gbp) {
    if (!rt.rtnl_link_vxlan_set_flags) {
      throw new Error(
        `netlink linkAdd ${what}: this libnl lacks rtnl_link_vxlan_set_flags, so gbp ` +
          `cannot be set; upgrade libnl-route-3-200 (3.7 has it)`,
      );
    }
    rt.rtnl_link_vxlan_set_flags(link, RTNL_LINK_VXLAN_F_GBP, 1);
  }
}

/** The vxlan attributes of a vxlan link (check rtnl_link_is_vxlan first). */
export function readVxlan(link: Ptr): VxlanInfo {
  const { rt, nl } = libs();
  const id = rt.rtnl_link_vxlan_get_id(link, U32_OUT) === 0 ? takeU32() : 0;
  let local: string | null = null;
  if (rt.rtnl_link_vxlan_get_local(link, PTR_OUT) === 0) {
    // get_local builds a fresh nl_addr: ours to free.
    const a = takePtr();
    if (a) {
      local = readIp(a);
      nl.nl_addr_put(a);
    }
  }
  const devIndex = rt.rtnl_link_vxlan_get_link(link, U32_OUT) === 0 ? takeU32() || null : null;
  const port = rt.rtnl_link_vxlan_get_port(link, U32_OUT) === 0 ? takeU32() : 0;
  const learning = rt.rtnl_link_vxlan_get_learning(link) > 0;
  const getFlags = rt.rtnl_link_vxlan_get_flags;
  const flags = getFlags && getFlags(link, U32_OUT) === 0 ? takeU32() : 0;
  return { id, local, port, learning, gbp: (flags & RTNL_LINK_VXLAN_F_GBP) !== 0, devIndex };
}
