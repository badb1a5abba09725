/**
 * Which routes are weft's (issue #10, defect 1): the rule of src/backend/routes.ts as the vxlan
 * and host-gw backends' reconciliation and `weft cleanup` apply it, over a host's route list
 * that mixes weft's routes, flanneld's (protocol boot, exactly flannel's shapes) and everything
 * else a host has: the default route, static routes inside and outside the cluster network,
 * routes of routing daemons (bird, zebra, bgp), other tables, other metrics. Only weft's and
 * flanneld's exact routes may ever be deleted. The backends run against an in-memory netlink.
 */
import assert from "node:assert/strict";
import { parseNetworkConfig } from "../../src/config/network.ts";
import { parseCidr } from "../../src/base/ipv4.ts";
import type { Lease } from "../../src/lease/codec.ts";
import type { Fdb, Link, Neigh, Netlink, Route } from "../../ffi/libnl/mod.ts";
import { HostGwBackend } from "../../src/backend/hostgw/backend.ts";
import { VxlanBackend } from "../../src/backend/vxlan/backend.ts";
import { planKernel } from "../../src/backend/owned.ts";
import { owners } from "../../src/cli/cleanup.ts";
import {
  checkUnderlayOverlap,
  checkUnderlayOverlap6,
  isOwnedRoute,
  RTPROT_WEFT,
} from "../../src/backend/routes.ts";
import { parseCidr6 } from "../../src/base/ipv6.ts";
import { ConfigError } from "../../src/base/errors.ts";
import { NetlinkError } from "../../ffi/libnl/mod.ts";
import { withReads } from "../kit/fake_reads.ts";
import { NLE_OBJ_NOTFOUND } from "../../ffi/libnl/errors.ts";
import { EXT_INDEX, extIface, VTEP_INDEX, vtepLink } from "../kit/vtep_fixture.ts";

const EXT = EXT_INDEX;
const VTEP = VTEP_INDEX;
const OWN = "198.19.1.0/24";
const PROTO = { boot: 3, static: 4, zebra: 11, bird: 12, bgp: 186 };

const ext = extIface("198.18.0.11");
const vtep = vtepLink(ext, "02:00:00:00:00:11");
const links: Link[] = [
  { index: EXT, name: "eth0", kind: "veth", mtu: 1500, up: true, mac: "", master: null },
  vtep,
];

const r = (dst: string, more: Partial<Route> = {}): Route => ({
  dst,
  table: 254,
  protocol: PROTO.boot,
  scope: 0,
  onlink: false,
  ...more,
});

/** Routes that are never weft's, whatever the backend: each must survive everything. */
const FOREIGN: Route[] = [
  r("0.0.0.0/0", { gw: "198.18.0.1", dev: EXT }),
  r("198.18.0.0/24", { dev: EXT, protocol: 2, scope: 253, src: "198.18.0.11" }),
  r(OWN, { dev: 9, protocol: 2, scope: 253 }), // cni0's own route
  r(OWN, { gw: "198.18.0.1", dev: EXT }), // the own subnet via a gateway: still never weft's
  r("198.18.99.0/24", { gw: "198.18.0.1", dev: EXT }), // static, outside the network
  r("198.19.0.0/17", { gw: "198.18.0.1", dev: EXT }), // static /17 inside: not SubnetLen
  r("198.19.7.0/28", { gw: "198.18.0.1", dev: EXT }), // static /28 inside: not SubnetLen
  r("198.19.8.0/24", { gw: "198.18.0.1", dev: EXT, metric: 100 }), // another metric
  r("198.19.9.0/24", { dev: EXT }), // no gateway
  r("198.19.11.0/24", { gw: "198.18.0.1", dev: EXT, src: "198.18.0.11" }), // with a src
  r("198.19.12.0/24", { gw: "198.18.0.1", dev: EXT, protocol: PROTO.static }),
  r("198.19.13.0/24", { gw: "198.18.0.13", dev: EXT, protocol: PROTO.bird }),
  r("198.19.14.0/24", { gw: "198.18.0.13", dev: EXT, protocol: PROTO.zebra }),
  r("198.19.15.0/24", { gw: "198.18.0.13", dev: EXT, protocol: PROTO.bgp }),
  r("198.19.16.0/24", { gw: "198.18.0.13", dev: EXT, table: 100 }), // another table
  r("198.19.0.0/16", { dev: VTEP }), // on the VTEP, but not a shape weft or flannel makes
  r("198.19.17.0/24", { gw: "198.18.0.1", dev: VTEP, onlink: true }), // gw not subnet.0
  r("198.19.18.0/24", { gw: "198.19.18.0", dev: VTEP, onlink: true, protocol: PROTO.bird }),
  r("198.19.19.0/24", { gw: "198.19.19.0", dev: VTEP, onlink: true, metric: 5 }),
];

/** flanneld's exact routes for stale leases (protocol boot): adopted, so removed as stale. */
const FLANNELD_VXLAN = r("198.19.3.0/24", { gw: "198.19.3.0", dev: VTEP, onlink: true });
const FLANNELD_HOSTGW = r("198.19.4.0/24", { gw: "198.18.0.14", dev: EXT });

/** The kernel's "no such object", as the bindings report it. */
const notFound = (op: string, what: string) =>
  new NetlinkError({ op, args: what, what, code: NLE_OBJ_NOTFOUND, libnlMessage: "not found" });

/** A minimal kernel: the route table, one VTEP without neighbours or FDB entries. */
class FakeNl {
  routes: Route[];
  ops: string[] = [];
  constructor(routes: Route[]) {
    this.routes = routes.map((x) => ({ ...x }));
    withReads(this);
  }
  #matches(x: Route, q: Route, del: boolean): boolean {
    if (x.dst !== q.dst || (x.table ?? 254) !== (q.table ?? 254)) return false;
    if (!del) return (x.metric ?? 0) === (q.metric ?? 0);
    // The kernel's delete: unset fields (metric 0, protocol 0) match anything.
    return (!q.metric || (x.metric ?? 0) === q.metric) &&
      (!q.protocol || x.protocol === q.protocol) &&
      (q.gw === undefined || x.gw === q.gw) && (q.dev === undefined || x.dev === q.dev);
  }
  routeList(f: { table?: number; type?: number } = {}): Route[] {
    if (f.type !== undefined && f.type !== 1) return [];
    const t = f.table ?? 254;
    return this.routes.filter((x) => t === 0 || x.table === t).map((x) => ({ ...x }));
  }
  routeDel(q: Route): void {
    const i = this.routes.findIndex((x) => this.#matches(x, q, true));
    if (i < 0) throw notFound("routeDel", q.dst);
    this.ops.push(`del ${q.dst}`);
    this.routes.splice(i, 1);
  }
  /** Netlink.deleteMany: routes as routeDel; this kernel has no neighbour or FDB entries. */
  deleteMany(reqs: ({ route: Route } | { neigh: unknown } | { fdb: unknown })[]): (Error | null)[] {
    return reqs.map((q) => {
      if (!("route" in q)) return notFound("neighDel", JSON.stringify(q));
      try {
        this.routeDel(q.route);
        return null;
      } catch (e) {
        return e as Error;
      }
    });
  }
  routeReplace(q: Route): void {
    this.ops.push(`replace ${q.dst}`);
    this.routes = this.routes.filter((x) => !this.#matches(x, q, false));
    this.routes.push({ table: 254, scope: 0, onlink: false, metric: undefined, ...q });
  }
  linkByName(name: string): Link | null {
    return links.find((l) => l.name === name) ?? null;
  }
  linkByIndex(i: number): Link | null {
    return links.find((l) => l.index === i) ?? null;
  }
  linkList(): Link[] {
    return links;
  }
  addrList(): { cidr: string }[] {
    return [{ cidr: "198.19.1.0/32" }];
  }
  addrReplace(): void {}
  addrDel(): void {}
  fdbList(): Fdb[] {
    return [];
  }
  neighList(): Neigh[] {
    return [];
  }
  neighSet(): void {}
  fdbSet(): void {}
  routeGet(): { dev: number; src: string; gw: string | null } {
    return { dev: EXT, src: ext.ifaceAddr, gw: null };
  }
}

const key = (x: Route) =>
  `${x.dst} gw=${x.gw ?? "-"} dev=${x.dev ?? "-"} table=${x.table} proto=${x.protocol} ` +
  `metric=${x.metric ?? 0}${x.onlink ? " onlink" : ""}${x.src ? ` src=${x.src}` : ""}`;

function lease(subnet: string, publicIP: string, mac?: string): Lease {
  return {
    key: subnet.replace("/", "-"),
    subnet: parseCidr(subnet),
    attrs: {
      publicIP,
      backendType: mac ? "vxlan" : "host-gw",
      backendData: mac ? { VNI: 1, VtepMAC: mac } : undefined,
    },
    expiresAt: null,
    revision: 1,
  };
}

const own = lease(OWN, ext.publicIP, vtep.mac);

function assertForeignKept(nl: FakeNl, what: string) {
  const have = new Set(nl.routes.map(key));
  const lost = FOREIGN.map(key).filter((k) => !have.has(k));
  assert.deepEqual(
    lost,
    [],
    `${what} removed or changed routes that are not weft's:\n` +
      `${lost.join("\n")}\noperations: ${nl.ops.join(", ")}`,
  );
}

async function runBackend(
  type: "host-gw" | "vxlan",
  extra: Route[],
  peers: Lease[],
  backend: Record<string, unknown> = {},
): Promise<FakeNl> {
  const nl = new FakeNl([...FOREIGN, ...extra]);
  const cfg = parseNetworkConfig(
    JSON.stringify({ Network: "198.19.0.0/16", Backend: { Type: type, ...backend } }),
  );
  const b = type === "vxlan"
    ? new VxlanBackend(nl as unknown as Netlink)
    : new HostGwBackend(nl as unknown as Netlink);
  await b.prepare({ config: cfg, ext, previous: null });
  await b.start(own);
  await b.reconcile(peers);
  await b.reconcile(peers); // a periodic reconcile: still nothing foreign goes
  await b.check?.();
  return nl;
}

Deno.test("route ownership: apply removes weft's and flanneld's routes in event order", async () => {
  for (const type of ["host-gw", "vxlan"] as const) {
    const mac = (i: number) => type === "vxlan" ? `be:00:00:00:00:0${i}` : undefined;
    const gone = lease("198.19.4.0/24", "198.18.0.14", mac(4)); // flanneld's route (boot)
    const back = lease("198.19.2.0/24", "198.18.0.12", mac(2)); // removed, then added again
    const stale = type === "vxlan"
      ? r("198.19.4.0/24", { gw: "198.19.4.0", dev: VTEP, onlink: true })
      : FLANNELD_HOSTGW;
    const nl = await runBackend(type, [], [back]);
    nl.routes.push({ ...stale });
    const b = type === "vxlan"
      ? new VxlanBackend(nl as unknown as Netlink)
      : new HostGwBackend(nl as unknown as Netlink);
    const cfg = parseNetworkConfig(
      JSON.stringify({ Network: "198.19.0.0/16", Backend: { Type: type } }),
    );
    await b.prepare({ config: cfg, ext, previous: null });
    await b.start(own);
    await b.apply([
      { type: "removed", lease: gone },
      { type: "removed", lease: back },
      { type: "added", lease: back },
    ]);
    const dsts = nl.routes.map((x) => x.dst);
    assert.ok(!dsts.includes("198.19.4.0/24"), `${type}: flanneld's route of a removed lease kept`);
    assert.ok(
      dsts.includes("198.19.2.0/24"),
      `${type}: a lease removed and added again lost its route`,
    );
    assertForeignKept(nl, type);
  }
});

Deno.test("route ownership: host-gw reconcile keeps every route that is not weft's", async () => {
  const weftStale = r("198.19.10.0/24", { gw: "198.18.0.15", dev: EXT, protocol: 87 });
  const peer = lease("198.19.2.0/24", "198.18.0.12");
  const nl = await runBackend("host-gw", [FLANNELD_HOSTGW, weftStale], [peer]);
  assertForeignKept(nl, "host-gw");
  const dsts = nl.routes.map((x) => x.dst);
  assert.ok(!dsts.includes(FLANNELD_HOSTGW.dst), "flanneld's stale host-gw route not removed");
  assert.ok(!dsts.includes(weftStale.dst), "weft's own stale route (proto 87) not removed");
  const mine = nl.routes.find((x) => x.dst === "198.19.2.0/24");
  assert.equal(mine && key(mine), "198.19.2.0/24 gw=198.18.0.12 dev=2 table=254 proto=87 metric=0");
});

Deno.test("route ownership: vxlan reconcile keeps every route that is not weft's", async () => {
  const weftStale = r("198.19.10.0/24", {
    gw: "198.19.10.0",
    dev: VTEP,
    onlink: true,
    protocol: 87,
  });
  const peer = lease("198.19.2.0/24", "198.18.0.12", "02:00:00:00:00:12");
  const nl = await runBackend("vxlan", [FLANNELD_VXLAN, FLANNELD_HOSTGW, weftStale], [peer]);
  assertForeignKept(nl, "vxlan");
  const dsts = nl.routes.map((x) => x.dst);
  assert.ok(!dsts.includes(FLANNELD_VXLAN.dst), "flanneld's stale vxlan route not removed");
  assert.ok(!dsts.includes(weftStale.dst), "weft's own stale route (proto 87) not removed");
  // Without DirectRouting, vxlan makes no routes via a gateway: a host-gw-shaped one is not its.
  assert.ok(dsts.includes(FLANNELD_HOSTGW.dst), "vxlan without DirectRouting took a host-gw route");
  const mine = nl.routes.find((x) => x.dst === "198.19.2.0/24");
  assert.equal(
    mine && key(mine),
    "198.19.2.0/24 gw=198.19.2.0 dev=5 table=254 proto=87 metric=0 onlink",
  );
});

Deno.test("route ownership: vxlan DirectRouting adopts flanneld's routes via peers", async () => {
  const nl = await runBackend("vxlan", [FLANNELD_VXLAN, FLANNELD_HOSTGW], [], {
    DirectRouting: true,
  });
  assertForeignKept(nl, "vxlan with DirectRouting");
  const dsts = nl.routes.map((x) => x.dst);
  assert.ok(!dsts.includes(FLANNELD_HOSTGW.dst), "flanneld's stale direct route not removed");
});

Deno.test("route ownership: an adopted flanneld route is marked as weft's", async () => {
  const peer = lease("198.19.4.0/24", "198.18.0.14");
  const nl = await runBackend("host-gw", [FLANNELD_HOSTGW], [peer]);
  const mine = nl.routes.filter((x) => x.dst === "198.19.4.0/24").map(key);
  assert.deepEqual(mine, ["198.19.4.0/24 gw=198.18.0.14 dev=2 table=254 proto=87 metric=0"]);
  assert.ok(!nl.ops.includes("del 198.19.4.0/24"), "adoption must replace in place, not delete");
});

Deno.test("route ownership: weft cleanup plans only weft's and flanneld's exact routes", async () => {
  const weftStale = r("198.19.10.0/24", { gw: "198.18.0.15", dev: EXT, protocol: 87 });
  const cfg = parseNetworkConfig(`{"Network":"198.19.0.0/16","Backend":{"Type":"host-gw"}}`);
  const routes = [...FOREIGN, FLANNELD_HOSTGW, weftStale];
  for (
    const [what, facts] of [
      ["config known", { network: cfg.network, own: parseCidr(OWN), subnetLen: 24 }],
      ["config unknown, subnet.env known", { network: cfg.network, own: parseCidr(OWN) }],
    ] as const
  ) {
    const plan = planKernel(await owners(cfg), {
      links: links.filter((l) => l.index === EXT), // no VTEP: device routes aside
      routes,
      extIndex: EXT,
      ...facts,
    });
    assert.deepEqual(
      plan.routes.map((x) => x.route.dst).sort(),
      [FLANNELD_HOSTGW.dst, weftStale.dst].sort(),
      `cleanup (${what}) plans: ${plan.routes.map((x) => x.text).join("; ")}`,
    );
  }
  // Without the subnet size (no config, no subnet.env subnet), only weft's marked routes.
  const blind = planKernel(await owners(null), {
    links: links.filter((l) => l.index === EXT),
    routes,
    network: cfg.network,
    own: null,
    extIndex: EXT,
  });
  assert.deepEqual(blind.routes.map((x) => x.route.dst), [weftStale.dst]);
});

Deno.test("route ownership: the rule over a route list, route by route", () => {
  const scope = {
    network: parseCidr("198.19.0.0/16"),
    own: parseCidr(OWN),
    ext: EXT,
    subnetLen: 24,
  };
  const all = { vxlan: VTEP, gateway: true };
  for (const x of FOREIGN) assert.equal(isOwnedRoute(x, scope, all), false, key(x));
  assert.ok(isOwnedRoute(FLANNELD_VXLAN, scope, all));
  assert.ok(isOwnedRoute(FLANNELD_HOSTGW, scope, all));
  assert.ok(!isOwnedRoute(FLANNELD_HOSTGW, scope, { vxlan: VTEP }), "boot via gw without gateway");
  assert.ok(!isOwnedRoute(FLANNELD_HOSTGW, { ...scope, subnetLen: null }, all), "size unknown");
  const w = { ...FLANNELD_HOSTGW, protocol: RTPROT_WEFT };
  assert.ok(isOwnedRoute(w, { ...scope, subnetLen: null }, { vxlan: VTEP }), "marked is proof");
  assert.ok(isOwnedRoute({ ...w, dst: "198.19.64.0/18" }, scope, all), "marked, any size");
  // With Network 0.0.0.0/0 (refused at start, but cleanup may read it) nothing foreign is weft's.
  const wide = { ...scope, network: parseCidr("0.0.0.0/0") };
  for (const x of FOREIGN) assert.equal(isOwnedRoute(x, wide, all), false, `wide: ${key(x)}`);
});

Deno.test("route ownership: a Network over the host's underlay address is refused", () => {
  checkUnderlayOverlap(parseCidr("198.19.0.0/16"), ext);
  assert.throws(
    () => checkUnderlayOverlap(parseCidr("198.18.0.0/15"), ext),
    (e: Error) =>
      e instanceof ConfigError && e.message.includes("198.18.0.0/15") &&
      e.message.includes("198.18.0.11") && e.message.includes("eth0"),
  );
  assert.throws(
    () => checkUnderlayOverlap(parseCidr("203.0.113.0/24"), { ...ext, publicIP: "203.0.113.7" }),
    /203\.0\.113\.0\/24 contains this host's underlay address 203\.0\.113\.7 \(the public IP/,
  );
});

Deno.test("route ownership: an IPv6Network over the host's IPv6 underlay address is refused", () => {
  const ext6 = { ...ext, ifaceAddr6: "2001:db8:ffff::b", publicIPv6: "2001:db8:ffff::b" };
  checkUnderlayOverlap6(parseCidr6("2001:db8:1::/56"), ext6);
  // A network beside the underlay's prefix, or inside a wider underlay prefix, is fine.
  checkUnderlayOverlap6(parseCidr6("2001:db8:fffe::/48"), ext6);
  checkUnderlayOverlap6(parseCidr6("2001:db8:1::/56"), { name: "eth0" }); // no IPv6 address
  for (const net of ["2001:db8::/32", "2001:db8:ffff::/64", "2001:db8:ffff::/120"]) {
    assert.throws(
      () => checkUnderlayOverlap6(parseCidr6(net), ext6),
      (e: Error) =>
        e instanceof ConfigError &&
        e.message.startsWith(
          `the cluster IPv6Network ${net} contains this host's underlay address ` +
            "2001:db8:ffff::b (the IPv6 address of eth0, the external interface)",
        ) && e.message.includes("Choose an IPv6Network that does not overlap"),
      net,
    );
  }
  assert.throws(
    () =>
      checkUnderlayOverlap6(parseCidr6("2001:db8:2::/56"), {
        ...ext6,
        publicIPv6: "2001:db8:2:7::9",
      }),
    /2001:db8:2::\/56 contains this host's underlay address 2001:db8:2:7::9 \(the public IPv6 address \(--public-ipv6\)/,
  );
});
