/**
 * The agent's parts on an IPv6-only network (`"EnableIPv4": false`, lease `0.0.0.0-0&…`), over
 * recording fakes: nothing IPv4 is ever programmed or removed for the empty IPv4 half (no
 * `0.0.0.0/0` blackhole, no default route judged "own subnet", no iptables command), the own
 * IPv6 subnet is checked instead, and the firewall part runs ip6tables alone.
 */
import assert from "node:assert/strict";
import { FirewallPart } from "../../src/agent/firewall_part.ts";
import { BlackholePart } from "../../src/agent/blackhole.ts";
import { OwnRoutePart, strayOwnRoutes } from "../../src/agent/own_route.ts";
import { RTPROT_WEFT } from "../../src/backend/routes.ts";
import type { Runner } from "../../src/backend/command.ts";
import { parseNetworkConfig } from "../../src/config/network.ts";
import { parseCidr6 } from "../../src/base/ipv6.ts";
import type { Lease } from "../../src/lease/codec.ts";
import type { Netlink, Route } from "../../ffi/libnl/mod.ts";

const CFG = parseNetworkConfig(
  `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"2001:db8:1::/56",` +
    `"Backend":{"Type":"vxlan"}}`,
);
const LEASE: Lease = {
  key: "0.0.0.0-0&2001:db8:1:5::-64",
  subnet: { ip: 0, prefix: 0 },
  subnet6: parseCidr6("2001:db8:1:5::/64"),
  attrs: { publicIP: "0.0.0.0", publicIPv6: "2001:db8:ffff::3", backendType: "vxlan" },
  expiresAt: null,
  revision: 1,
};

/** A netlink that serves `routes` (by family) and records deletions and replacements. */
function fakeNl(routes: { 4: Route[]; 6: Route[] }) {
  const changed: string[] = [];
  const nl = {
    routeList: (f: { family?: 4 | 6 } = {}) => routes[f.family ?? 4],
    routeDel: (r: Route) => void changed.push(`del ${r.dst}`),
    routeReplace: (r: Route) => void changed.push(`replace ${r.dst}`),
    linkByIndex: (i: number) => ({ name: i === 4 ? "flannel-v6.1" : `if${i}` }),
  } as unknown as Netlink;
  return { nl, changed };
}

Deno.test("IPv6-only: the blackhole route is the own IPv6 subnet's, none for the empty IPv4 half", async () => {
  // An operator's lowest-priority blackholes (what weft's look like, outside weft's networks).
  const theirs: Route = { dst: "198.18.9.0/24", type: 6, metric: 0xffffffff };
  const theirs6: Route = { dst: "2001:db8:9::/64", type: 6, metric: 0xffffffff };
  const routes: { 4: Route[]; 6: Route[] } = { 4: [theirs], 6: [theirs6] };
  const { nl, changed } = fakeNl(routes);
  const part = new BlackholePart(nl, true, 20);
  await part.apply(CFG, LEASE, null);
  assert.deepEqual(changed, ["replace 2001:db8:1:5::/64"]);
  // In place (the kernel's spelling): nothing to do; a stale one of weft's in IPv6Network goes.
  routes[6] = [theirs6, { dst: "2001:db8:1:5::/64", type: 6, metric: 0xffffffff }];
  assert.equal(await part.check(), false);
  routes[6].push({ dst: "2001:db8:1:7::/64", type: 6, metric: 0xffffffff });
  assert.equal(await part.check(), true);
  assert.deepEqual(changed, ["replace 2001:db8:1:5::/64", "del 2001:db8:1:7::/64"]);
});

Deno.test("IPv6-only: the own-route check judges the own IPv6 subnet, never the IPv4 default", async () => {
  const v4: Route[] = [{ dst: "0.0.0.0/0", gw: "198.18.0.1", dev: 5 }];
  // weft's own stray route for its own IPv6 subnet (removed), then someone else's (reported).
  const stray: Route = { dst: "2001:db8:1:5::/64", gw: "2001:db8:1:5::", dev: 4, onlink: true };
  const routes: { 4: Route[]; 6: Route[] } = { 4: v4, 6: [{ ...stray, protocol: RTPROT_WEFT }] };
  const { nl, changed } = fakeNl(routes);
  const part = new OwnRoutePart(nl, 20);
  await part.apply(CFG, LEASE, null);
  assert.deepEqual(changed, ["del 2001:db8:1:5::/64"]);
  assert.equal(part.problem(), null);
  routes[6] = [{ dst: "2001:db8:1:5::/64", gw: "2001:db8:ffff::9", dev: 5 }];
  await part.check();
  assert.match(
    part.problem() ?? "",
    /^own subnet 2001:db8:1:5::\/64 is routed away .*via 2001:db8:ffff::9 dev if5/,
  );
  // The pure rule, IPv6: the bridge's route is fine, an IPv4 route never matches an IPv6 subnet.
  const own6 = parseCidr6("2001:db8:1:5::/64");
  assert.deepEqual(strayOwnRoutes([{ dst: "2001:db8:1:5::/64", dev: 3 }], own6, () => "cni0"), []);
  assert.deepEqual(strayOwnRoutes(v4, own6, () => "eth0"), []);
});

Deno.test("IPv6-only: the firewall part runs ip6tables alone, never iptables", async () => {
  const calls: string[] = [];
  // A host without the tools: every command fails, so only what was tried is seen.
  const runner: Runner = (argv) => {
    calls.push(argv.join(" "));
    return Promise.resolve({ code: -1, stdout: "", stderr: `${argv[0]} was not found in PATH` });
  };
  const part = new FirewallPart({ ipMasq: true, forward: true, runner });
  await assert.rejects(() => part.apply(CFG, LEASE, null));
  await part.check().catch(() => {});
  assert.equal(part.name, "ip6tables rules");
  assert.ok(calls.some((c) => c.startsWith("ip6tables")), calls.join("\n"));
  assert.ok(!calls.some((c) => /^iptables/.test(c)), calls.join("\n"));
});
