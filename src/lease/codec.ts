/**
 * flannel-compatible lease keys and values. Keys are `<a.b.c.d>-<len>` under `<prefix>/subnets/`;
 * values are flannel's LeaseAttrs JSON with its field order, so flanneld and weft read each other.
 *
 * @example
 * ```ts
 * subnetKey({ ip: parseIp("198.19.5.0"), prefix: 24 }); // "198.19.5.0-24"
 * encodeLeaseValue({ publicIP: "198.18.0.3", backendType: "host-gw" });
 * // '{"PublicIP":"198.18.0.3","PublicIPv6":null,"BackendType":"host-gw"}'
 * ```
 */
import { formatCidr, formatIp, type Ipv4Net, isIp, maskOf, parseIp } from "../base/ipv4.ts";
import { formatCidr6, formatIp6, type Ipv6Net, maskOf6, parseIp6 } from "../base/ipv6.ts";
import { field } from "../config/network.ts";
import { ipv4Problem, ipv6Problem } from "../config/unicast.ts";
import { preview } from "../base/preview.ts";
import type { Expiry, WatchedExpiry } from "../registry/contract/registry.ts";

/** What a node publishes about itself (flannel's LeaseAttrs). */
export interface LeaseAttrs {
  publicIP: string;
  publicIPv6?: string | null;
  /** Omitted for udp leases, as flanneld does. */
  backendType?: string;
  /** Backend-specific JSON object (vxlan: {VNI, VtepMAC}); omitted when undefined. */
  backendData?: unknown;
  backendV6Data?: unknown;
  /**
   * weft's per-host identity (`WeftNodeID`, a field flanneld ignores): tells this host, restarted,
   * from another host that publishes the same public IP. Absent in flanneld's leases.
   */
  nodeId?: string;
  /**
   * `WeftClaim`: this write claims a lease that carried another node's identity. A live holder
   * answers by writing the lease back (see LeaseManager); an unanswered claim is taken over.
   */
  claim?: boolean;
}

/** The form of a node identity: what {@link decodeLeaseValue} accepts and `weft run` writes. */
export const NODE_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/**
 * A lease as the agent sees it: decoded key and value plus registry metadata. Its expiry may be
 * `"unknown"` (a peer's lease from a watch, see WatchedExpiry); `KnownLease` is one read from a
 * list or get, or written by this node, whose expiry is always known.
 */
export interface Lease<E extends WatchedExpiry = WatchedExpiry> {
  /** Registry key relative to `<prefix>/subnets/`, e.g. "198.19.5.0-24". */
  key: string;
  /** The IPv4 half; the empty network `0.0.0.0/0` in an IPv6-only lease (see isIpv6OnlyKey). */
  subnet: Ipv4Net;
  /** The IPv6 half of a dual-stack or IPv6-only lease (`…&2001:db8:1:5::-64`); else absent. */
  subnet6?: Ipv6Net | null;
  attrs: LeaseAttrs;
  /** Epoch ms when it expires; null for a reservation (no TTL); or "unknown" (see above). */
  expiresAt: E;
  /** Registry revision of the last write to this key. */
  revision: number;
}

/** A lease whose expiry is known: from a list or get, or this node's own. */
export type KnownLease = Lease<Expiry>;

export class LeaseFormatError extends Error {
  override name = "LeaseFormatError";
}

/**
 * "198.19.5.0-24" for a subnet; with an IPv6 half "198.19.5.0-24&2001:db8:1:5::-64" (flanneld's
 * dual-stack key; IPv6-only: `n` is the empty network, "0.0.0.0-0&…").
 */
export function subnetKey(n: Ipv4Net, n6?: Ipv6Net | null): string {
  const v4 = `${formatIp(n.ip)}-${n.prefix}`;
  return n6 ? `${v4}&${formatIp6(n6.ip)}-${n6.prefix}` : v4;
}

/** Parses a lease key (the IPv4 part of a dual-stack key); throws LeaseFormatError. */
export function parseSubnetKey(key: string): Ipv4Net {
  const v4 = key.split("&")[0];
  // One spelling per subnet: no zero-padded octets (parseIp) or lengths.
  const m = /^(\d+\.\d+\.\d+\.\d+)-(0|[1-9]\d?)$/.exec(v4);
  if (!m || Number(m[2]) > 32 || !isIp(m[1])) {
    throw new LeaseFormatError(`lease key "${preview(key)}" is not of the form a.b.c.d-len`);
  }
  const ip = parseIp(m[1]);
  const prefix = Number(m[2]);
  if (((ip & maskOf(prefix)) >>> 0) !== ip) {
    throw new LeaseFormatError(`lease key "${preview(key)}" has host bits set`);
  }
  return { ip, prefix };
}

/**
 * The IPv6 half of a lease key, or null when it has none. One spelling per subnet: the address
 * in RFC 5952 form as flanneld writes it, no host bits; throws LeaseFormatError otherwise.
 */
export function parseSubnetKey6(key: string): Ipv6Net | null {
  const amp = key.indexOf("&");
  if (amp < 0) return null;
  const m = /^([0-9a-f:]+)-(0|[1-9]\d{0,2})$/.exec(key.slice(amp + 1));
  let ip = -1n;
  try {
    if (m) ip = parseIp6(m[1]);
  } catch { /* reported below */ }
  const prefix = m ? Number(m[2]) : -1;
  if (!m || ip < 0n || prefix > 128 || formatIp6(ip) !== m[1]) {
    throw new LeaseFormatError(
      `lease key "${preview(key)}" has an IPv6 part that is not of the form 2001:db8:1:5::-64`,
    );
  }
  if ((ip & maskOf6(prefix)) !== ip) {
    throw new LeaseFormatError(`lease key "${preview(key)}" has host bits set in its IPv6 part`);
  }
  return { ip, prefix };
}

/**
 * Whether a lease key has no IPv4 half: flanneld writes an IPv6-only lease under
 * `0.0.0.0-0&<v6 subnet>` (with `"PublicIP":"0.0.0.0"`): not a stray supernet lease, and its
 * node is identified by PublicIPv6.
 */
export function isIpv6OnlyKey(key: string): boolean {
  const amp = key.indexOf("&");
  return amp > 0 && key.slice(0, amp) === "0.0.0.0-0";
}

/**
 * Why a lease cannot be a peer whatever the backend, or null: the public IP of each half the
 * lease has, and this node serves (`ipv6`: the IPv6 half too), must be a host's unicast address
 * (it becomes a route's gateway, an FDB destination or a UDP peer on every host). Backend data
 * (a VTEP MAC) is the backend's to check.
 */
export function peerProblem(l: Lease, ipv6 = false): string | null {
  if (!isIpv6OnlyKey(l.key)) {
    const p = ipv4Problem(l.attrs.publicIP);
    if (p) return `PublicIP ${p}`;
  }
  if (ipv6 && l.subnet6) {
    const v6 = l.attrs.publicIPv6;
    const p = v6 ? ipv6Problem(v6) : "missing for the lease's IPv6 half";
    if (p) return `PublicIPv6 ${p}`;
  }
  return null;
}

/** Serialises attrs exactly as flanneld does (field order, null PublicIPv6, omitted empties). */
export function encodeLeaseValue(a: LeaseAttrs): string {
  let s = `{"PublicIP":${JSON.stringify(a.publicIP)},"PublicIPv6":${
    a.publicIPv6 ? JSON.stringify(a.publicIPv6) : "null"
  }`;
  if (a.backendType) s += `,"BackendType":${JSON.stringify(a.backendType)}`;
  if (a.backendData !== undefined && a.backendData !== null) {
    s += `,"BackendData":${JSON.stringify(a.backendData)}`;
  }
  if (a.backendV6Data !== undefined && a.backendV6Data !== null) {
    s += `,"BackendV6Data":${JSON.stringify(a.backendV6Data)}`;
  }
  // weft's own fields last, only when set: a lease without them is byte-identical to flanneld's.
  if (a.nodeId) s += `,"WeftNodeID":${JSON.stringify(a.nodeId)}`;
  if (a.claim) s += `,"WeftClaim":true`;
  return s + "}";
}

/** Parses a lease value written by weft or flanneld; throws LeaseFormatError naming the problem. */
export function decodeLeaseValue(value: string): LeaseAttrs {
  let o: unknown;
  try {
    o = JSON.parse(value);
  } catch {
    throw new LeaseFormatError(`lease value is not JSON: ${preview(value)}`);
  }
  if (!o || typeof o !== "object" || Array.isArray(o)) {
    throw new LeaseFormatError(`lease value is not a JSON object: ${preview(value)}`);
  }
  const r = o as Record<string, unknown>;
  const ip = field(r, "PublicIP");
  if (typeof ip !== "string" || !isIp(ip)) {
    throw new LeaseFormatError(
      `lease PublicIP ${preview(JSON.stringify(ip))} is not an IPv4 address`,
    );
  }
  const v6 = field(r, "PublicIPv6");
  const bt = field(r, "BackendType");
  if (bt !== undefined && bt !== null && typeof bt !== "string") {
    throw new LeaseFormatError(`lease BackendType ${preview(JSON.stringify(bt))} is not a string`);
  }
  const out: LeaseAttrs = {
    publicIP: ip,
    publicIPv6: typeof v6 === "string" ? v6 : null,
    backendType: typeof bt === "string" && bt !== "" ? bt : undefined,
    backendData: field(r, "BackendData") ?? undefined,
    backendV6Data: field(r, "BackendV6Data") ?? undefined,
  };
  // A malformed identity is no identity (the lease is still a peer): it only ever matters to a
  // node with the same public IP, which then treats the lease as one of unknown origin.
  const id = field(r, "WeftNodeID");
  if (typeof id === "string" && NODE_ID_RE.test(id)) out.nodeId = id;
  if (out.nodeId && field(r, "WeftClaim") === true) out.claim = true;
  return out;
}

/**
 * Whether two leases' attrs program the same datapath: equal but for weft's identity fields, so
 * a claim or an identity change is no peer change (no route removed and added back).
 */
export function sameDatapath(a: LeaseAttrs, b: LeaseAttrs): boolean {
  const { nodeId: _a, claim: _b, ...x } = a;
  const { nodeId: _c, claim: _d, ...y } = b;
  return JSON.stringify(x) === JSON.stringify(y);
}

/** The backend type a lease belongs to: flanneld's udp leases carry none. */
export function leaseBackendType(a: LeaseAttrs): string {
  return (a.backendType ?? "udp").toLowerCase();
}

/** Whether `lease` is a peer for the backend named `backendName` (the one rule for it). */
export function leaseMatches(backendName: string, lease: Lease): boolean {
  return leaseBackendType(lease.attrs) === backendName;
}

/**
 * The subnet a lease is shown and logged by: its IPv4 half, or its IPv6 half when it has no IPv4
 * half (an IPv6-only lease's IPv4 part is the empty network, never worth showing).
 */
export function leaseSubnetText(l: Lease): string {
  return isIpv6OnlyKey(l.key) && l.subnet6 ? formatCidr6(l.subnet6) : formatCidr(l.subnet);
}

/** The address a lease is shown by: PublicIP, or PublicIPv6 for an IPv6-only lease. */
export function leaseAddressText(l: Lease): string {
  return isIpv6OnlyKey(l.key) ? l.attrs.publicIPv6 ?? "" : l.attrs.publicIP;
}
