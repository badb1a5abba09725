/**
 * Kernel constants for routes, neighbours and netlink requests (linux/rtnetlink.h,
 * linux/neighbour.h, linux/netlink.h): the one home for the numbers weft otherwise would
 * hard-code (table 254, protocol 3, ...). Everything here is re-exported by `mod.ts`.
 *
 * @example
 * ```ts
 * import { RT_TABLE_MAIN, RTN_BLACKHOLE } from "./ffi/libnl/mod.ts";
 * netlink().routeList({ table: RT_TABLE_MAIN, type: RTN_BLACKHOLE });
 * ```
 */

/** The main routing table (`ip route` without `table`). */
export const RT_TABLE_MAIN = 254;

/** Route scopes (rtm_scope). */
export const RT_SCOPE_UNIVERSE = 0;
export const RT_SCOPE_LINK = 253;
export const RT_SCOPE_HOST = 254;
/** As a delete filter: any scope. */
export const RT_SCOPE_NOWHERE = 255;

/** Route protocol "boot" (rtm_protocol): what iproute2 and flannel set on the routes they add. */
export const RTPROT_BOOT = 3;

/** Route types (rtm_type). */
export const RTN_UNICAST = 1;
/** Drops what it matches (`ip route add blackhole ...`). */
export const RTN_BLACKHOLE = 6;

/** Nexthop flag: use the gateway even though no local subnet covers it (`onlink`). */
export const RTNH_F_ONLINK = 4;

/** Neighbour states (NUD_*) and flags (NTF_*). */
export const NUD_REACHABLE = 0x02;
export const NUD_PERMANENT = 0x80;
export const NTF_SELF = 0x02;
export const NTF_MASTER = 0x04;

/** netlink message flags used with libnl's add/replace calls. */
export const NLM_F_REPLACE = 0x100;
export const NLM_F_EXCL = 0x200;
export const NLM_F_CREATE = 0x400;
export const NLM_F_APPEND = 0x800;
