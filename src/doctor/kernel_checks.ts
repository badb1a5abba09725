/**
 * Kernel vs registry, exactly (pure over a snapshot read through netlink), per IP family: for
 * each peer lease the entries its backend needs, each named when missing or wrong; routes inside
 * the cluster network that point elsewhere (a stale `cni0` route for a subnet now leased by a
 * peer, flannel issue 2554) or that no lease justifies (stray_checks.ts); and the vxlan devices.
 *
 * vxlan, IPv4: `<subnet> via <subnet.0> dev flannel.<VNI> onlink`, neighbour `<subnet.0> lladdr
 * <VtepMAC>`, FDB `<VtepMAC> dst <PublicIP>`; IPv6 the same on `flannel-v6.<VNI>` with the IPv6
 * subnet, BackendV6Data's VtepMAC and PublicIPv6. host-gw: `<subnet> via <PublicIP> dev <ext>`
 * and `<IPv6 subnet> via <PublicIPv6> dev <ext>`. A family the config does not enable is not
 * checked at all (an IPv6-only network has no IPv4 half: never a `0.0.0.0/0` entry).
 */
import { type CheckResult, fail, ok, warn } from "./check.ts";
import type { Facts } from "./facts.ts";
import type { Fdb, Link, Neigh, Route } from "../../ffi/libnl/mod.ts";
import { formatCidr, formatIp } from "../base/ipv4.ts";
import { formatCidr6, formatIp6, isIp6, parseIp6 } from "../base/ipv6.ts";
import { describeRoute } from "../backend/owned.ts";
import { type Family, vtepName, vtepName6 } from "../backend/vxlan/device.ts";
import { vtepMacOf } from "../backend/vxlan/entries.ts";
import { backendBool, backendNumber } from "../config/network.ts";
import { isPeerSubnet6 } from "../lease/allocate.ts";
import type { KnownLease } from "../lease/codec.ts";
import { hasIpv4Half } from "../health/targets.ts";
import { strayChecks } from "./stray_checks.ts";

/** What netlink showed: links, main-table routes, and the overlay devices' entries. */
export interface KernelSnapshot {
  links: Link[];
  /** IPv4 main-table routes. */
  routes: Route[];
  /** Neighbours and FDB entries of the vxlan device (empty for other backends). */
  neigh: Neigh[];
  fdb: Fdb[];
  /** Addresses (CIDR) on the vxlan device. */
  vtepAddrs: string[];
  /** The IPv6 half (read when the config enables IPv6): main-table routes, `flannel-v6.<VNI>`. */
  routes6?: Route[];
  neigh6?: Neigh[];
  fdb6?: Fdb[];
  vtepAddrs6?: string[];
}

/** `ip` for IPv4 commands, `ip -6` for IPv6 ones. */
export const ipCmd = (family: Family) => family === 6 ? "ip -6" : "ip";

/** An address as text in one canonical form (IPv6 RFC 5952), for comparing kernel and lease. */
export function canon(ip: string | null | undefined): string | null {
  if (!ip) return null;
  // Called per kernel entry: no exception for IPv4 text (isIp6 would throw and catch).
  if (!ip.includes(":")) return ip;
  return isIp6(ip) ? formatIp6(parseIp6(ip)) : ip;
}

/** Whether the config enables `family`. */
export function servesFamily(f: Facts, family: Family): boolean {
  return family === 6 ? !!f.config?.enableIPv6 : f.config?.enableIPv4 ?? true;
}

/** The overlay device of a vxlan node for `family`, by the config's VNI. */
export function vtepOf(f: Facts, links: Link[], family: Family = 4): Link | null {
  if (f.backendType !== "vxlan" || !f.config || !servesFamily(f, family)) return null;
  const vni = backendNumber(f.config, "VNI", 1);
  const name = family === 6 ? vtepName6(vni) : vtepName(vni);
  return links.find((l) => l.name === name) ?? null;
}

/** One family's view of the snapshot, indexed once (1000 peers must not cost 1000² lookups). */
export interface FamilyView {
  family: Family;
  routes: Route[];
  neigh: Neigh[];
  fdb: Fdb[];
  vtepAddrs: string[];
  /** The first route per canonical destination CIDR. */
  routeByDst: Map<string, Route>;
  /** The first neighbour per canonical address. */
  neighByIp: Map<string, Neigh>;
  /** FDB entries per lower-case MAC. */
  fdbByMac: Map<string, Fdb[]>;
}

export function familyView(k: KernelSnapshot, family: Family): FamilyView {
  const routes = (family === 6 ? k.routes6 : k.routes) ?? [];
  const neigh = (family === 6 ? k.neigh6 : k.neigh) ?? [];
  const fdb = (family === 6 ? k.fdb6 : k.fdb) ?? [];
  const routeByDst = new Map<string, Route>();
  for (const r of routes) {
    if (!routeByDst.has(canonCidr(r.dst))) routeByDst.set(canonCidr(r.dst), r);
  }
  const neighByIp = new Map<string, Neigh>();
  for (const n of neigh) if (!neighByIp.has(canon(n.ip)!)) neighByIp.set(canon(n.ip)!, n);
  const fdbByMac = new Map<string, Fdb[]>();
  for (const e of fdb) {
    const mac = e.mac.toLowerCase();
    fdbByMac.set(mac, [...fdbByMac.get(mac) ?? [], e]);
  }
  return {
    family,
    routes,
    neigh,
    fdb,
    vtepAddrs: (family === 6 ? k.vtepAddrs6 : k.vtepAddrs) ?? [],
    routeByDst,
    neighByIp,
    fdbByMac,
  };
}

/** A peer's half of one family: its subnet, subnet address and public address. */
export interface PeerHalf {
  subnet: string;
  addr: string;
  publicIP: string;
}

/**
 * The `family` half of a peer lease, or null when it has none this node programs (IPv4: the
 * empty network of an IPv6-only lease; IPv6: no IPv6 half of this IPv6Network or no PublicIPv6).
 */
export function peerHalf(f: Facts, l: KnownLease, family: Family): PeerHalf | null {
  if (family === 4) {
    if (!hasIpv4Half(l)) return null;
    return {
      subnet: formatCidr(l.subnet),
      addr: formatIp(l.subnet.ip),
      publicIP: l.attrs.publicIP,
    };
  }
  const s6 = l.subnet6;
  if (!s6 || !l.attrs.publicIPv6 || !f.config || !isPeerSubnet6(f.config, s6)) return null;
  return {
    subnet: formatCidr6(s6),
    addr: formatIp6(s6.ip),
    publicIP: canon(l.attrs.publicIPv6)!,
  };
}

export function kernelChecks(f: Facts, k: KernelSnapshot): CheckResult[] {
  if (!f.config || !f.backendType) return [];
  const families = ([4, 6] as const).filter((fam) => servesFamily(f, fam));
  const out: CheckResult[] = [];
  for (const fam of families) {
    const v = familyView(k, fam);
    if (f.backendType === "vxlan") out.push(...vxlanChecks(f, k, v));
    else if (f.backendType === "host-gw") out.push(...hostGwChecks(f, k, v));
  }
  if (f.backendType !== "vxlan" && f.backendType !== "host-gw") {
    return [ok("kernel.datapath", `backend ${f.backendType}: no kernel routes to compare`)];
  }
  return out;
}

/** The fix for a missing entry: the agent's repair, or the command. */
const readd = (what: string) =>
  `the agent re-adds it at its next reconcile (--reconcile-interval) or restart; by hand: ${what}`;

/** The device of `v`'s family, or the failure that says what is wrong with it. */
function deviceCheck(f: Facts, k: KernelSnapshot, v: FamilyView, name: string): Link | CheckResult {
  const dev = vtepOf(f, k.links, v.family);
  const check = v.family === 6 ? "kernel.device6" : "kernel.device";
  if (!dev || dev.kind !== "vxlan" || !dev.vxlan) {
    return fail(
      check,
      `${name} does not exist${dev ? ` (a ${dev.kind ?? "plain"} device has its name)` : ""}`,
      "start the agent (it creates the device); a device of another kind: ip link del " + name,
    );
  }
  const x = dev.vxlan;
  const problems: string[] = [];
  const local = v.family === 6 ? f.ext?.ifaceAddr6 : f.ext?.ifaceAddr;
  if (f.ext && canon(x.local) !== canon(local)) {
    problems.push(
      `local address ${x.local ?? "unset"}, not ${local ?? "(no IPv6 address)"} (${f.ext.name})`,
    );
  }
  const port = backendNumber(f.config!, "Port", 0) || 8472;
  if ((x.port || 8472) !== port) problems.push(`port ${x.port}, the config's is ${port}`);
  if (!dev.up) problems.push("down");
  const own = f.own ? peerHalf(f, f.own, v.family) : null;
  if (f.own) {
    const mac = vtepMacOf(f.own, v.family);
    if ("mac" in mac && mac.mac !== dev.mac.toLowerCase()) {
      problems.push(
        `MAC ${dev.mac}, but the lease publishes ${mac.mac} (peers send to the wrong MAC)`,
      );
    }
  }
  if (own) {
    const addr = `${own.addr}/${v.family === 6 ? 128 : 32}`;
    if (!v.vtepAddrs.some((a) => canonCidr(a) === addr)) problems.push(`lacks its address ${addr}`);
  }
  if (problems.length) {
    return fail(
      check,
      `${name}: ${problems.join("; ")}`,
      "restart the agent: it recreates the device",
    );
  }
  return dev;
}

/** A CIDR in canonical form. */
export function canonCidr(c: string): string {
  const [ip, len] = c.split("/");
  return `${canon(ip)}/${len}`;
}

function vxlanChecks(f: Facts, k: KernelSnapshot, v: FamilyView): CheckResult[] {
  const out: CheckResult[] = [];
  const vni = backendNumber(f.config!, "VNI", 1);
  const name = v.family === 6 ? vtepName6(vni) : vtepName(vni);
  const dev = deviceCheck(f, k, v, name);
  if ("status" in dev) return [dev];
  const x = dev.vxlan!;
  out.push(ok(
    v.family === 6 ? "kernel.device6" : "kernel.device",
    `${name}: VNI ${x.id}, local ${x.local}, port ${x.port || 8472}, MTU ${dev.mtu}, up`,
  ));
  const ip = ipCmd(v.family);
  const direct = backendBool(f.config!, "DirectRouting");
  for (const p of f.peers) {
    const half = peerHalf(f, p, v.family);
    if (!half) {
      if (v.family === 6) {
        out.push(warn(
          "kernel.peer6",
          `peer ${formatCidr(p.subnet)} (${p.attrs.publicIP}): its lease has no IPv6 half of ` +
            "this network or no PublicIPv6; no IPv6 entries for it",
          "restart that host's agent with the network's EnableIPv6 config",
          formatCidr(p.subnet),
        ));
      }
      continue;
    }
    const { subnet, addr: gw, publicIP } = half;
    const who = `peer ${subnet} (${publicIP})`;
    const m = vtepMacOf(p, v.family);
    if (!("mac" in m)) {
      out.push(warn(
        "kernel.peer",
        `${who}: lease has no usable VtepMAC (${m.problem}); not programmed`,
        "fix or delete that lease",
        subnet,
      ));
      continue;
    }
    const bad: CheckResult[] = [];
    const route = v.routeByDst.get(subnet);
    // DirectRouting: a peer on our L2 segment gets host-gw's route and no neighbour or FDB entry.
    if (
      direct && route && canon(route.gw) === publicIP && route.dev === f.ext?.index &&
      !route.onlink
    ) {
      out.push(ok("kernel.peer", `${who}: direct route via ${publicIP} (DirectRouting)`, subnet));
      continue;
    }
    const wantRoute = `${subnet} via ${gw} dev ${name} onlink`;
    if (!route) {
      bad.push(fail(
        "kernel.route",
        `${who}: route missing (want ${wantRoute})`,
        readd(`${ip} route replace ${wantRoute} proto 87`),
        subnet,
      ));
    } else if (canon(route.gw) !== gw || route.dev !== dev.index || !route.onlink) {
      const have = describeRoute(route, k.links);
      bad.push(fail(
        "kernel.route",
        `${who}: route is ${have}, not ${wantRoute} (a stale route points elsewhere)`,
        `${ip} route replace ${wantRoute} proto 87 (replaces ${have})`,
        subnet,
      ));
    }
    const n = v.neighByIp.get(gw);
    const setNeigh = `${ip} neigh replace ${gw} lladdr ${m.mac} dev ${name} nud permanent`;
    if (!n || !n.mac) {
      bad.push(fail(
        "kernel.neigh",
        `${who}: neighbour ${gw} missing on ${name} (want lladdr ${m.mac})`,
        readd(setNeigh),
        subnet,
      ));
    } else if (n.mac.toLowerCase() !== m.mac) {
      bad.push(fail(
        "kernel.neigh",
        `${who}: neighbour ${gw} on ${name} is ${n.mac}, the lease says ${m.mac}`,
        setNeigh,
        subnet,
      ));
    }
    const fdbs = v.fdbByMac.get(m.mac) ?? [];
    if (!fdbs.some((x) => canon(x.dst) === publicIP)) {
      const want = `${m.mac} dev ${name} dst ${publicIP}`;
      bad.push(fail(
        "kernel.fdb",
        `${who}: FDB entry ${want} ${
          fdbs.length ? `wrong (dst ${fdbs.map((x) => x.dst).join(", ")})` : "missing"
        }`,
        readd(`bridge fdb replace ${want} self permanent`),
        subnet,
      ));
    }
    out.push(
      ...(bad.length
        ? bad
        : [ok("kernel.peer", `${who}: route, neighbour and FDB entry in place`, subnet)]),
    );
  }
  if (!f.opts.peer) out.push(...strayChecks(f, k, v, dev, name));
  return out;
}

function hostGwChecks(f: Facts, k: KernelSnapshot, v: FamilyView): CheckResult[] {
  const out: CheckResult[] = [];
  const ext = f.ext;
  if (!ext) return out;
  const ip = ipCmd(v.family);
  for (const p of f.peers) {
    const half = peerHalf(f, p, v.family);
    if (!half) continue;
    const { subnet, publicIP } = half;
    const who = `peer ${subnet} (${publicIP})`;
    const want = `${subnet} via ${publicIP} dev ${ext.name}`;
    const route = v.routeByDst.get(subnet);
    if (!route) {
      out.push(fail(
        "kernel.route",
        `${who}: route missing (want ${want})`,
        `restart the agent, or: ${ip} route replace ${want} proto 87`,
        subnet,
      ));
    } else if (canon(route.gw) !== publicIP || route.dev !== ext.index) {
      out.push(fail(
        "kernel.route",
        `${who}: route is ${describeRoute(route, k.links)}, not ${want}`,
        `${ip} route replace ${want} proto 87`,
        subnet,
      ));
    } else out.push(ok("kernel.peer", `${who}: route in place`, subnet));
  }
  if (!f.opts.peer) out.push(...strayChecks(f, k, v, null, ext.name));
  return out;
}
