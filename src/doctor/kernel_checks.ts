/**
 * Kernel vs registry, exactly (pure over a snapshot read through netlink): for each peer lease
 * the entries its backend needs, each named when missing or wrong; routes inside the cluster
 * network that point elsewhere (a stale `cni0` route for a subnet now leased by a peer, flannel
 * issue 2554) or that no lease justifies; and the vxlan device itself.
 *
 * vxlan: `<subnet> via <subnet.0> dev flannel.<VNI> onlink`, neighbour `<subnet.0> lladdr
 * <VtepMAC>`, FDB `<VtepMAC> dst <PublicIP>`; host-gw: `<subnet> via <PublicIP> dev <ext>`.
 */
import { type CheckResult, fail, ok, warn } from "./check.ts";
import type { Facts } from "./facts.ts";
import type { Fdb, Link, Neigh, Route } from "../../ffi/libnl/mod.ts";
import { RT_TABLE_MAIN, RTN_UNICAST } from "../../ffi/libnl/mod.ts";
import {
  contains,
  containsNet,
  formatCidr,
  formatIp,
  type Ipv4Net,
  isIp,
  parseCidr,
  parseIp,
} from "../base/ipv4.ts";
import { describeRoute } from "../backend/owned.ts";
import { vtepName } from "../backend/vxlan/device.ts";
import { vtepMacOf } from "../backend/vxlan/backend.ts";
import { backendBool, backendNumber } from "../config/network.ts";

/** What netlink showed: links, main-table routes, and the overlay device's entries. */
export interface KernelSnapshot {
  links: Link[];
  routes: Route[];
  /** Neighbours and FDB entries of the vxlan device (empty for other backends). */
  neigh: Neigh[];
  fdb: Fdb[];
  /** Addresses (CIDR) on the vxlan device. */
  vtepAddrs: string[];
}

const ZERO_MAC = "00:00:00:00:00:00";

/** The overlay device of a vxlan node, by the config's VNI. */
export function vtepOf(f: Facts, links: Link[]): Link | null {
  if (f.backendType !== "vxlan" || !f.config) return null;
  const name = vtepName(backendNumber(f.config, "VNI", 1));
  return links.find((l) => l.name === name) ?? null;
}

export function kernelChecks(f: Facts, k: KernelSnapshot): CheckResult[] {
  if (!f.config || !f.backendType) return [];
  if (f.backendType === "vxlan") return vxlanChecks(f, k);
  if (f.backendType === "host-gw") return hostGwChecks(f, k);
  return [ok("kernel.datapath", `backend ${f.backendType}: no kernel routes to compare`)];
}

function vxlanChecks(f: Facts, k: KernelSnapshot): CheckResult[] {
  const out: CheckResult[] = [];
  const name = vtepName(backendNumber(f.config!, "VNI", 1));
  const dev = vtepOf(f, k.links);
  if (!dev || dev.kind !== "vxlan" || !dev.vxlan) {
    out.push(fail(
      "kernel.device",
      `${name} does not exist${dev ? ` (a ${dev.kind ?? "plain"} device has its name)` : ""}`,
      "start the agent (it creates the device); a device of another kind: ip link del " + name,
    ));
    return out;
  }
  const v = dev.vxlan;
  const problems: string[] = [];
  if (f.ext && v.local !== f.ext.ifaceAddr) {
    problems.push(`local address ${v.local ?? "unset"}, not ${f.ext.ifaceAddr} (${f.ext.name})`);
  }
  const port = backendNumber(f.config!, "Port", 0) || 8472;
  if ((v.port || 8472) !== port) problems.push(`port ${v.port}, the config's is ${port}`);
  if (!dev.up) problems.push("down");
  if (f.own) {
    const mac = vtepMacOf(f.own);
    if ("mac" in mac && mac.mac !== dev.mac.toLowerCase()) {
      problems.push(
        `MAC ${dev.mac}, but the lease publishes ${mac.mac} (peers send to the wrong MAC)`,
      );
    }
    const addr = `${formatIp(f.own.subnet.ip)}/32`;
    if (!k.vtepAddrs.includes(addr)) problems.push(`lacks its address ${addr}`);
  }
  out.push(
    problems.length
      ? fail(
        "kernel.device",
        `${name}: ${problems.join("; ")}`,
        "restart the agent: it recreates the device",
      )
      : ok(
        "kernel.device",
        `${name}: VNI ${v.id}, local ${v.local}, port ${v.port || 8472}, MTU ${dev.mtu}, up`,
      ),
  );
  const fix = (what: string) =>
    `the agent re-adds it at its next reconcile (--reconcile-interval) or restart; by hand: ${what}`;
  const direct = backendBool(f.config!, "DirectRouting");
  for (const p of f.peers) {
    const subnet = formatCidr(p.subnet);
    const who = `peer ${subnet} (${p.attrs.publicIP})`;
    const m = vtepMacOf(p);
    if (!("mac" in m)) {
      out.push(
        warn(
          "kernel.peer",
          `${who}: lease has no usable VtepMAC (${m.problem}); not programmed`,
          "fix or delete that lease",
          subnet,
        ),
      );
      continue;
    }
    const gw = formatIp(p.subnet.ip);
    const bad: CheckResult[] = [];
    const route = k.routes.find((r) => r.dst === subnet);
    // DirectRouting: a peer on our L2 segment gets host-gw's route and no neighbour or FDB entry.
    if (
      direct && route && route.gw === p.attrs.publicIP && route.dev === f.ext?.index &&
      !route.onlink
    ) {
      out.push(
        ok("kernel.peer", `${who}: direct route via ${p.attrs.publicIP} (DirectRouting)`, subnet),
      );
      continue;
    }
    const wantRoute = `${subnet} via ${gw} dev ${name} onlink`;
    if (!route) {
      bad.push(
        fail(
          "kernel.route",
          `${who}: route missing (want ${wantRoute})`,
          fix(`ip route replace ${wantRoute} proto 87`),
          subnet,
        ),
      );
    } else if (route.gw !== gw || route.dev !== dev.index || !route.onlink) {
      const have = describeRoute(route, k.links);
      bad.push(fail(
        "kernel.route",
        `${who}: route is ${have}, not ${wantRoute} (a stale route points elsewhere)`,
        `ip route replace ${wantRoute} proto 87 (replaces ${have})`,
        subnet,
      ));
    }
    const n = k.neigh.find((x) => x.ip === gw);
    if (!n || !n.mac) {
      bad.push(
        fail(
          "kernel.neigh",
          `${who}: neighbour ${gw} missing on ${name} (want lladdr ${m.mac})`,
          fix(`ip neigh replace ${gw} lladdr ${m.mac} dev ${name} nud permanent`),
          subnet,
        ),
      );
    } else if (n.mac.toLowerCase() !== m.mac) {
      bad.push(
        fail(
          "kernel.neigh",
          `${who}: neighbour ${gw} on ${name} is ${n.mac}, the lease says ${m.mac}`,
          `ip neigh replace ${gw} lladdr ${m.mac} dev ${name} nud permanent`,
          subnet,
        ),
      );
    }
    const fdbs = k.fdb.filter((x) => x.mac.toLowerCase() === m.mac);
    if (!fdbs.some((x) => x.dst === p.attrs.publicIP)) {
      const want = `${m.mac} dev ${name} dst ${p.attrs.publicIP}`;
      bad.push(fail(
        "kernel.fdb",
        `${who}: FDB entry ${want} ${
          fdbs.length ? `wrong (dst ${fdbs.map((x) => x.dst).join(", ")})` : "missing"
        }`,
        fix(`bridge fdb replace ${want} self permanent`),
        subnet,
      ));
    }
    out.push(
      ...(bad.length
        ? bad
        : [ok("kernel.peer", `${who}: route, neighbour and FDB entry in place`, subnet)]),
    );
  }
  if (!f.opts.peer) out.push(...strayChecks(f, k, dev, name));
  return out;
}

function hostGwChecks(f: Facts, k: KernelSnapshot): CheckResult[] {
  const out: CheckResult[] = [];
  const ext = f.ext;
  if (!ext) return out;
  for (const p of f.peers) {
    const subnet = formatCidr(p.subnet);
    const who = `peer ${subnet} (${p.attrs.publicIP})`;
    const want = `${subnet} via ${p.attrs.publicIP} dev ${ext.name}`;
    const route = k.routes.find((r) => r.dst === subnet);
    if (!route) {
      out.push(
        fail(
          "kernel.route",
          `${who}: route missing (want ${want})`,
          `restart the agent, or: ip route replace ${want} proto 87`,
          subnet,
        ),
      );
    } else if (route.gw !== p.attrs.publicIP || route.dev !== ext.index) {
      out.push(
        fail(
          "kernel.route",
          `${who}: route is ${describeRoute(route, k.links)}, not ${want}`,
          `ip route replace ${want} proto 87`,
          subnet,
        ),
      );
    } else out.push(ok("kernel.peer", `${who}: route in place`, subnet));
  }
  if (!f.opts.peer) out.push(...strayChecks(f, k, null, ext.name));
  return out;
}

/**
 * Routes inside the network that no lease justifies, or that cover a peer's subnet without being
 * its route; neighbours and FDB entries on the device for no lease.
 */
function strayChecks(
  f: Facts,
  k: KernelSnapshot,
  dev: Link | null,
  devName: string,
): CheckResult[] {
  const out: CheckResult[] = [];
  const net = f.config!.network;
  const leased = f.leases.map((l) => l.subnet);
  for (const r of k.routes) {
    if ((r.table ?? RT_TABLE_MAIN) !== RT_TABLE_MAIN || (r.type ?? RTN_UNICAST) !== RTN_UNICAST) {
      continue;
    }
    let dst: Ipv4Net;
    try {
      dst = parseCidr(r.dst);
    } catch {
      continue;
    }
    if (dst.prefix <= net.prefix || !containsNet(net, dst)) continue;
    if (f.own && (containsNet(f.own.subnet, dst) || containsNet(dst, f.own.subnet))) continue;
    if (f.peers.some((p) => formatCidr(p.subnet) === r.dst)) continue; // judged per peer
    const peer = f.peers.find((p) => containsNet(p.subnet, dst) || containsNet(dst, p.subnet));
    const have = describeRoute(r, k.links);
    if (peer) {
      out.push(fail(
        "kernel.stale-route",
        `route ${have} covers peer ${
          formatCidr(peer.subnet)
        } (${peer.attrs.publicIP}) but is not its route`,
        `ip route del ${have}`,
        formatCidr(peer.subnet),
      ));
    } else if (!leased.some((s) => containsNet(s, dst) || containsNet(dst, s))) {
      out.push(warn(
        "kernel.stale-route",
        `route ${have}: no lease holds ${r.dst} (left over from an expired lease?)`,
        `ip route del ${have}`,
      ));
    }
  }
  if (dev) {
    const gws = new Set(f.leases.map((l) => formatIp(l.subnet.ip)));
    for (const n of k.neigh) {
      if (n.permanent && isIp(n.ip) && contains(net, parseIp(n.ip)) && !gws.has(n.ip)) {
        out.push(
          warn(
            "kernel.stale-neigh",
            `neighbour ${n.ip} lladdr ${n.mac} on ${devName}: no lease for it`,
            `ip neigh del ${n.ip} dev ${devName}`,
          ),
        );
      }
    }
    const ips = new Set(f.leases.map((l) => l.attrs.publicIP));
    for (const e of k.fdb) {
      if (e.self && e.dst && e.mac !== ZERO_MAC && !ips.has(e.dst)) {
        out.push(
          warn(
            "kernel.stale-fdb",
            `FDB ${e.mac} dst ${e.dst} on ${devName}: no lease has that public IP`,
            `bridge fdb del ${e.mac} dev ${devName} dst ${e.dst} self`,
          ),
        );
      }
    }
  }
  if (!out.length) {
    out.push(
      ok("kernel.stale", `no stray routes, neighbours or FDB entries in ${formatCidr(net)}`),
    );
  }
  return out;
}
