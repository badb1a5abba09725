/**
 * Which IPv6 routes are weft's: routes.ts's rule for the IPv6 family (dual stack), over a route
 * list that mixes weft's and flanneld's IPv6 host-gw routes with everything else an IPv6 host has.
 */
import assert from "node:assert/strict";
import { parseCidr } from "../../src/base/ipv4.ts";
import { parseCidr6 } from "../../src/base/ipv6.ts";
import { parseNetworkConfig } from "../../src/config/network.ts";
import type { Route } from "../../ffi/libnl/mod.ts";
import { isOwnedRoute, routeScope, RTPROT_WEFT } from "../../src/backend/routes.ts";

const EXT = 2;
const VTEP6 = 6;
const r = (dst: string, more: Partial<Route> = {}): Route => ({
  dst,
  table: 254,
  protocol: 3,
  scope: 0,
  onlink: false,
  metric: 1024,
  ...more,
});

const FOREIGN6: Route[] = [
  r("::/0", { gw: "fe80::1", dev: EXT }),
  r("2001:db8:ffff::/64", { dev: EXT, protocol: 2, metric: 256 }),
  r("fe80::/64", { dev: EXT, protocol: 2, metric: 256 }),
  r("2001:db8:1:1::/64", { dev: 9, protocol: 2, metric: 256 }), // cni0's own route
  r("2001:db8:1:1::/64", { gw: "2001:db8:ffff::1", dev: EXT }), // own subnet via a gateway
  r("2001:db8:2::/64", { gw: "2001:db8:ffff::1", dev: EXT }), // static, outside IPv6Network
  r("2001:db8:1::/60", { gw: "2001:db8:ffff::1", dev: EXT }), // inside, not IPv6SubnetLen
  r("2001:db8:1:8::/64", { gw: "2001:db8:ffff::1", dev: EXT, metric: 100 }), // another metric
  r("2001:db8:1:9::/64", { dev: EXT }), // no gateway
  r("2001:db8:1:a::/64", { gw: "2001:db8:ffff::1", dev: EXT, protocol: 4 }), // static
  r("2001:db8:1:b::/64", { gw: "2001:db8:ffff::1", dev: EXT, protocol: 12 }), // bird
  r("2001:db8:1:c::/64", { gw: "2001:db8:ffff::1", dev: EXT, table: 100 }),
  r("2001:db8:1:d::/64", { gw: "2001:db8:ffff::1", dev: EXT, src: "2001:db8:ffff::b" }),
  r("2001:db8:1:e::/64", { gw: "2001:db8:1:e::5", dev: EXT }), // gateway inside the network
];

const cfg = parseNetworkConfig(
  `{"Network":"198.19.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8:1::/56",` +
    `"Backend":{"Type":"host-gw"}}`,
);
const scope = routeScope(cfg, parseCidr("198.19.1.0/24"), EXT, parseCidr6("2001:db8:1:1::/64"));

Deno.test("route ownership (IPv6): only weft's marked and flanneld's exact host-gw routes", () => {
  const all = { vxlan: VTEP6, gateway: true };
  for (const x of FOREIGN6) assert.equal(isOwnedRoute(x, scope, all), false, JSON.stringify(x));
  const flanneld = r("2001:db8:1:4::/64", { gw: "2001:db8:ffff::e", dev: EXT });
  assert.ok(isOwnedRoute(flanneld, scope, all), "flanneld's exact IPv6 host-gw route");
  assert.ok(!isOwnedRoute(flanneld, scope, { vxlan: VTEP6 }), "boot via gw without gateway");
  const weft = { ...flanneld, protocol: RTPROT_WEFT };
  assert.ok(isOwnedRoute(weft, scope, { vxlan: VTEP6 }), "marked is proof");
  assert.ok(isOwnedRoute({ ...weft, metric: undefined }, scope, all), "metric 0 as written");
  // Without an IPv6 side in the scope (an IPv4-only config) no IPv6 route is weft's.
  const v4only = routeScope(
    parseNetworkConfig(`{"Network":"198.19.0.0/16","Backend":{"Type":"host-gw"}}`),
    null,
    EXT,
  );
  assert.equal(isOwnedRoute(weft, v4only, all), false);
});
