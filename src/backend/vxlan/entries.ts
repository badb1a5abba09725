/**
 * What one peer lease needs on this host's VTEPs, per family: exactly flannel's triple —
 * neighbour (peer subnet address → peer VTEP MAC), FDB (MAC → peer public IP), onlink route — or,
 * with DirectRouting and the peer on-link, a plain route via its public IP. Pure: reads the lease,
 * never the kernel (the DirectRouting answer aside); programming the entries is program.ts's.
 *
 * @example
 * ```ts
 * const e = peerEntries(lease, vtep.index, direct);
 * // { dev, neigh: { ip: "198.18.4.0", mac }, fdb: { mac, dst: "198.19.0.4" }, route }
 * ```
 */
import type { NetworkConfig } from "../../config/network.ts";
import { formatCidr, formatIp } from "../../base/ipv4.ts";
import { formatCidr6, formatIp6 } from "../../base/ipv6.ts";
import { isPeerSubnet6 } from "../../lease/allocate.ts";
import type { Lease } from "../../lease/codec.ts";
import type { Route } from "../../../ffi/libnl/mod.ts";
import { marked } from "../routes.ts";
import type { Family } from "./device.ts";
import type { DirectRouting } from "./direct_routing.ts";
import { macProblem } from "../../config/unicast.ts";

/** The kernel entries one peer lease needs on one VTEP (`dev`). */
export interface PeerEntries {
  dev: number;
  neigh?: { ip: string; mac: string };
  fdb?: { mac: string; dst: string };
  route: Route;
}

/**
 * The lease's VTEP MAC (`family` 6: of its IPv6 VTEP, in BackendV6Data), or why it has no usable
 * one (multicast, zero, missing, not a MAC); also the doctor's.
 */
export function vtepMacOf(l: Lease, family: Family = 4): { mac: string } | { problem: string } {
  const mac = macField(family === 6 ? l.attrs.backendV6Data : l.attrs.backendData);
  const problem = macProblem(mac);
  const where = family === 6 ? "BackendV6Data" : "BackendData";
  return problem
    ? { problem: `VtepMAC ${problem} in its ${where}` }
    : { mac: (mac as string).toLowerCase() };
}

/** The lease's usable VTEP MAC (`family` 6: of its IPv6 VTEP), else null. */
export function vtepMac(l: Lease, family: Family = 4): string | null {
  const m = vtepMacOf(l, family);
  return "mac" in m ? m.mac : null;
}

/**
 * A peer's IPv4 entries on the VTEP `dev`, or null when its lease carries no usable VTEP MAC:
 * such a lease is programmed not at all (no route without its neighbour and FDB entry), also when
 * DirectRouting would not need the MAC, so a lease is applied whole or not at all.
 */
export function peerEntries(l: Lease, dev: number, direct: DirectRouting): PeerEntries | null {
  const mac = vtepMac(l);
  if (!mac) return null;
  const dst = formatCidr(l.subnet);
  if (direct.via(l.attrs.publicIP)) {
    return { dev, route: marked({ dst, gw: l.attrs.publicIP, dev: direct.ext }) };
  }
  const addr = formatIp(l.subnet.ip);
  return {
    dev,
    neigh: { ip: addr, mac },
    fdb: { mac, dst: l.attrs.publicIP },
    route: marked({ dst, gw: addr, dev, onlink: true }),
  };
}

/**
 * A peer's IPv6 entries on the IPv6 VTEP `dev` (DirectRouting: a route via its PublicIPv6 when
 * that is on-link), or null: the lease has no usable IPv6 half (no subnet of this IPv6Network,
 * no PublicIPv6, no IPv6 VTEP MAC: e.g. a peer not yet restarted with IPv6, which keeps its IPv4
 * entries).
 */
export function peerEntries6(
  cfg: NetworkConfig,
  l: Lease,
  dev: number,
  direct: DirectRouting,
): PeerEntries | null {
  const s6 = l.subnet6;
  const pub6 = l.attrs.publicIPv6;
  if (!s6 || !pub6 || !isPeerSubnet6(cfg, s6)) return null;
  const mac = vtepMac(l, 6);
  if (!mac) return null;
  const addr = formatIp6(s6.ip);
  if (direct.via(pub6)) {
    return { dev, route: marked({ dst: formatCidr6(s6), gw: pub6, dev: direct.ext }) };
  }
  return {
    dev,
    neigh: { ip: addr, mac },
    fdb: { mac, dst: pub6 },
    route: marked({ dst: formatCidr6(s6), gw: addr, dev, onlink: true }),
  };
}

/**
 * Whether `a` and `b` need the same entries: equal in every lease field {@link peerEntries} and
 * {@link peerEntries6} read (subnets, public IPs, VTEP MACs), so `b` may take `a`'s entries
 * (wants.ts). A field either of them starts to read must be compared here too.
 */
export function sameEntryInputs(a: Lease, b: Lease): boolean {
  const x = a.attrs;
  const y = b.attrs;
  return a.subnet.ip === b.subnet.ip && a.subnet.prefix === b.subnet.prefix &&
    x.publicIP === y.publicIP && x.publicIPv6 === y.publicIPv6 &&
    a.subnet6?.ip === b.subnet6?.ip && a.subnet6?.prefix === b.subnet6?.prefix &&
    macField(x.backendData) === macField(y.backendData) &&
    macField(x.backendV6Data) === macField(y.backendV6Data);
}

/** The raw VtepMAC field of a lease's backend data (as {@link vtepMacOf} reads it). */
function macField(d: unknown): unknown {
  return d && typeof d === "object" ? (d as { VtepMAC?: unknown }).VtepMAC : undefined;
}

/** `e` as one line of text: equal for equal entries (the steady test's, steady.ts). */
export function entriesText(e: PeerEntries): string {
  const r = e.route;
  return `${e.dev} ${e.neigh?.ip ?? ""} ${e.neigh?.mac ?? ""} ${e.fdb?.mac ?? ""} ` +
    `${e.fdb?.dst ?? ""} ${r.dst} ${r.gw ?? ""} ${r.dev ?? ""} ${r.onlink ? 1 : 0}`;
}
