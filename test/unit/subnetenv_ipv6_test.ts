/** subnet.env's IPv6 lines (dual stack, IPv6-only) and the CNI ranges built from them. */
import assert from "node:assert/strict";
import {
  NO_IPV4,
  parseSubnetEnv,
  readSubnetEnvHints,
  renderSubnetEnv,
  SubnetEnvError,
  writeSubnetEnv,
} from "../../src/config/subnet_env.ts";
import { formatCidr, parseCidr } from "../../src/base/ipv4.ts";
import { formatCidr6, parseCidr6 } from "../../src/base/ipv6.ts";
import { buildDelegate, parseNetConf } from "../../src/cni/netconf.ts";

const ipv6 = { network: parseCidr6("2001:db8:1::/56"), subnet: parseCidr6("2001:db8:1:5::/64") };
const dual = {
  network: parseCidr("198.19.0.0/16"),
  subnet: parseCidr("198.19.42.0/24"),
  ipv6,
  mtu: 1450,
  ipMasq: true,
};

Deno.test("subnet.env: dual stack adds flanneld's two IPv6 lines; IPv6-only drops the IPv4 ones", () => {
  const text = renderSubnetEnv(dual);
  assert.equal(
    text,
    "FLANNEL_NETWORK=198.19.0.0/16\nFLANNEL_SUBNET=198.19.42.1/24\n" +
      "FLANNEL_IPV6_NETWORK=2001:db8:1::/56\nFLANNEL_IPV6_SUBNET=2001:db8:1:5::1/64\n" +
      "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
  );
  assert.deepEqual(parseSubnetEnv(text, "f"), dual);
  const only = { ...dual, network: NO_IPV4, subnet: NO_IPV4 };
  const t6 = renderSubnetEnv(only);
  assert.equal(
    t6,
    "FLANNEL_IPV6_NETWORK=2001:db8:1::/56\nFLANNEL_IPV6_SUBNET=2001:db8:1:5::1/64\n" +
      "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
  );
  assert.deepEqual(parseSubnetEnv(t6, "f"), only);
});

Deno.test("subnet.env: a half-written IPv6 pair or a bad IPv6 value is named", () => {
  const text = renderSubnetEnv(dual);
  const cases: [string, RegExp][] = [
    [text.replace(/FLANNEL_IPV6_SUBNET=.*\n/, ""), /missing FLANNEL_IPV6_SUBNET/],
    [text.replace(/FLANNEL_IPV6_NETWORK=.*\n/, ""), /missing FLANNEL_IPV6_NETWORK/],
    [text.replace("2001:db8:1::/56", "2001:db8:1::/999"), /FLANNEL_IPV6_NETWORK=.* is invalid/],
    [text.replace("2001:db8:1:5::1/64", "198.19.1.1/24"), /FLANNEL_IPV6_SUBNET=.* is invalid/],
    [text.replace(/FLANNEL_NETWORK=.*\n/, ""), /missing FLANNEL_NETWORK/],
  ];
  for (const [t, re] of cases) {
    assert.throws(
      () => parseSubnetEnv(t, "f"),
      (e: Error) => e instanceof SubnetEnvError && re.test(e.message),
      t,
    );
  }
});

Deno.test("subnet.env: the agent's IPv6 hint is read back", async () => {
  const dir = await Deno.makeTempDir({ prefix: "weft-senv6-" });
  try {
    await writeSubnetEnv(`${dir}/subnet.env`, dual);
    const h = await readSubnetEnvHints(`${dir}/subnet.env`);
    assert.equal(formatCidr(h.subnet!), "198.19.42.0/24");
    assert.equal(formatCidr6(h.subnet6!), "2001:db8:1:5::/64");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("subnet.env: an IPv6-only node's file reads back as hints with no IPv4 half", async () => {
  const dir = await Deno.makeTempDir({ prefix: "weft-senv6only-" });
  try {
    await writeSubnetEnv(`${dir}/subnet.env`, { ...dual, network: NO_IPV4, subnet: NO_IPV4 });
    const h = await readSubnetEnvHints(`${dir}/subnet.env`);
    assert.deepEqual([h.exists, h.network, h.subnet], [true, null, null]);
    assert.equal(formatCidr6(h.subnet6!), "2001:db8:1:5::/64");
    assert.equal(formatCidr6(h.network6!), "2001:db8:1::/56");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("CNI: host-local gets one range per family and a route to each network", () => {
  const conf = parseNetConf(JSON.stringify({ cniVersion: "1.0.0", name: "weft", type: "weft" }));
  const d = buildDelegate(conf, dual);
  const ipam = d.ipam as Record<string, unknown>;
  assert.deepEqual(ipam.ranges, [[{ subnet: "198.19.42.0/24" }], [{
    subnet: "2001:db8:1:5::/64",
  }]]);
  assert.deepEqual(ipam.routes, [{ dst: "198.19.0.0/16" }, { dst: "2001:db8:1::/56" }]);
  const d6 = buildDelegate(conf, { ...dual, network: NO_IPV4, subnet: NO_IPV4 });
  const ipam6 = d6.ipam as Record<string, unknown>;
  assert.deepEqual(ipam6.ranges, [[{ subnet: "2001:db8:1:5::/64" }]]);
  assert.deepEqual(ipam6.routes, [{ dst: "2001:db8:1::/56" }]);
});
