/**
 * Strays, per family (pure over the snapshot): routes inside the cluster network (Network, or
 * IPv6Network) that no lease justifies, or that cover a peer's subnet without being its route;
 * permanent neighbours and FDB entries on the vxlan device for no lease.
 *
 * A route outside the cluster network (the underlay's, the default route) is never looked at, and
 * deleting a stray route is suggested only when it is weft's or flanneld's by the agent's own
 * rule ({@link isOwnedRoute}); anyone else's is named with its protocol, never to be deleted. A
 * family the network does not serve (the empty IPv4 network of an IPv6-only one) has no strays.
 */
import { type CheckResult, fail, ok, warn } from "./check.ts";
import type { Facts } from "./facts.ts";
import type { Link } from "../../ffi/libnl/mod.ts";
import { RT_TABLE_MAIN, RTN_UNICAST } from "../../ffi/libnl/mod.ts";
import { formatCidr, parseCidr } from "../base/ipv4.ts";
import { formatCidr6, parseCidr6 } from "../base/ipv6.ts";
import { describeRoute } from "../backend/owned.ts";
import { isOwnedRoute, routeScope, type VtepDevices } from "../backend/routes.ts";
import { backendBool } from "../config/network.ts";
import { canon, type FamilyView, type KernelSnapshot, peerHalf } from "./kernel_checks.ts";

const ZERO_MAC = "00:00:00:00:00:00";

/** A network as a bigint address and prefix of one family, for containment either family. */
interface Net {
  ip: bigint;
  prefix: number;
  bits: number;
}

function netOf(cidr: string): Net | null {
  try {
    if (cidr.includes(":")) {
      const n = parseCidr6(cidr, true);
      return { ip: n.ip, prefix: n.prefix, bits: 128 };
    }
    const n = parseCidr(cidr, true);
    return { ip: BigInt(n.ip >>> 0), prefix: n.prefix, bits: 32 };
  } catch {
    return null;
  }
}

/** Whether `inner` lies within `outer` (same family). */
export function within(outer: Net, inner: Net): boolean {
  if (outer.bits !== inner.bits || inner.prefix < outer.prefix) return false;
  const shift = BigInt(outer.bits - outer.prefix);
  return (outer.ip >> shift) === (inner.ip >> shift);
}

const overlaps = (a: Net, b: Net) => within(a, b) || within(b, a);

export function strayChecks(
  f: Facts,
  k: KernelSnapshot,
  v: FamilyView,
  dev: Link | null,
  devName: string,
): CheckResult[] {
  const out: CheckResult[] = [];
  const cfg = f.config!;
  const netText = v.family === 6 ? formatCidr6(cfg.ipv6!.network) : formatCidr(cfg.network);
  const net = netOf(netText)!;
  // 0.0.0.0/0 is no cluster network (IPv6-only): everything would lie "within" it.
  if (net.prefix === 0) return [];
  const sfx = v.family === 6 ? "6" : "";
  const halves = f.leases.map((l) => ({ l, h: peerHalf(f, l, v.family) }));
  const leased = halves.flatMap(({ h }) => h ? [netOf(h.subnet)!] : []);
  const own = f.own ? peerHalf(f, f.own, v.family) : null;
  const ownNet = own ? netOf(own.subnet) : null;
  const peers = f.peers.flatMap((p) => {
    const h = peerHalf(f, p, v.family);
    return h ? [{ ...h, net: netOf(h.subnet)! }] : [];
  });
  const peerSubnets = new Set(peers.map((p) => p.subnet));
  const ip = v.family === 6 ? "ip -6" : "ip";
  // The agent's rule for which routes are weft's or flanneld's, with this node's lease and devices.
  const scope = {
    ...routeScope(cfg, f.own && v.family === 4 ? f.own.subnet : null, 0, f.own?.subnet6 ?? null),
    ext: f.ext?.index ?? null,
  };
  const devices: VtepDevices = {
    ...(dev ? { [v.family === 6 ? "vxlan6" : "vxlan"]: dev.index } : {}),
    gateway: f.backendType === "host-gw" || backendBool(cfg, "DirectRouting"),
  };
  for (const r of v.routes) {
    if ((r.table ?? RT_TABLE_MAIN) !== RT_TABLE_MAIN || (r.type ?? RTN_UNICAST) !== RTN_UNICAST) {
      continue;
    }
    const dst = netOf(r.dst);
    if (!dst || dst.prefix <= net.prefix || !within(net, dst)) continue;
    if (ownNet && overlaps(ownNet, dst)) continue;
    const dstText = `${canon(r.dst.split("/")[0])}/${dst.prefix}`;
    if (peerSubnets.has(dstText)) continue; // judged per peer
    const peer = peers.find((p) => overlaps(p.net, dst));
    const have = describeRoute(r, k.links);
    const owned = isOwnedRoute(r, scope, devices);
    if (peer) {
      out.push(fail(
        "kernel.stale-route",
        `route ${have}${owned ? "" : ` (proto ${r.protocol ?? "?"}, not weft's)`} covers peer ` +
          `${peer.subnet} (${peer.publicIP}) but is not its route`,
        owned
          ? `${ip} route del ${have}`
          : "remove it where it was made (weft deletes no route it did not make): it takes " +
            `that peer's traffic; then check again with weft doctor --peer ${peer.subnet}`,
        peer.subnet,
      ));
    } else if (!leased.some((s) => overlaps(s, dst))) {
      out.push(
        owned
          ? warn(
            "kernel.stale-route",
            `route ${have}: no lease holds ${r.dst} (left over from an expired lease?)`,
            `${ip} route del ${have}`,
          )
          : warn(
            "kernel.foreign-route",
            `route ${have} (proto ${r.protocol ?? "?"}) lies in the cluster network ${netText} ` +
              "but is neither weft's nor flanneld's, and no lease holds it",
            "find out what made it (weft leaves it alone); a route in the cluster network " +
              "takes that range from pods",
          ),
      );
    }
  }
  if (dev) {
    const gws = new Set(halves.flatMap(({ h }) => h ? [h.addr] : []));
    for (const n of v.neigh) {
      const a = netOf(n.ip);
      const c = canon(n.ip)!;
      if (n.permanent && a && within(net, a) && !gws.has(c)) {
        out.push(warn(
          `kernel.stale-neigh`,
          `neighbour ${c} lladdr ${n.mac} on ${devName}: no lease for it`,
          `${ip} neigh del ${c} dev ${devName}`,
        ));
      }
    }
    const ips = new Set(halves.flatMap(({ h }) => h ? [h.publicIP] : []));
    for (const e of v.fdb) {
      if (e.self && e.dst && e.mac !== ZERO_MAC && !ips.has(canon(e.dst)!)) {
        out.push(warn(
          "kernel.stale-fdb",
          `FDB ${e.mac} dst ${e.dst} on ${devName}: no lease has that public IP`,
          `bridge fdb del ${e.mac} dev ${devName} dst ${e.dst} self`,
        ));
      }
    }
  }
  if (!out.length) {
    out.push(ok(`kernel.stale${sfx}`, `no stray routes, neighbours or FDB entries in ${netText}`));
  }
  return out;
}
