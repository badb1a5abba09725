import assert from "node:assert/strict";
import { parseNetworkConfig } from "../../src/config/network.ts";
import { checkFamilies, createBackend } from "../../src/agent/select_backend.ts";
import { ConfigError } from "../../src/base/errors.ts";
import { forwardRules, masqRules } from "../../src/iptables/rules.ts";
import { parseCidr6 } from "../../src/base/ipv6.ts";

const dual = (type: string) =>
  parseNetworkConfig(
    `{"Network":"198.19.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8:1::/56",` +
      `"Backend":{"Type":"${type}"}}`,
  );

Deno.test("agent refuses the config families its backend cannot serve, naming the field", async () => {
  const alloc = await createBackend("alloc");
  checkFamilies(parseNetworkConfig(`{"Network":"198.19.0.0/16"}`), alloc);
  const v6 = { name: "host-gw", servesIpv6: true } as Parameters<typeof checkFamilies>[1];
  checkFamilies(dual("host-gw"), v6);
  const v6only = parseNetworkConfig(
    `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"2001:db8:1::/56","Backend":{"Type":"alloc"}}`,
  );
  // IPv6-only networks are served by every backend that programs IPv6 (alloc, vxlan, host-gw) ...
  checkFamilies(v6only, alloc);
  for (const type of ["vxlan", "host-gw"]) checkFamilies(v6only, await createBackend(type));
  const noV6 = { name: "vxlan" } as Parameters<typeof checkFamilies>[1];
  // ... and refused, naming EnableIPv4, by one that does not.
  assert.throws(
    () => checkFamilies(v6only, noV6),
    (e: Error) =>
      e instanceof ConfigError &&
      /EnableIPv4 is false \(IPv6-only\) but weft's vxlan/.test(e.message),
  );
  assert.throws(
    () => checkFamilies(dual("vxlan"), noV6),
    (e: Error) =>
      e instanceof ConfigError && /EnableIPv6 is true but weft's vxlan backend/.test(e.message),
  );
});

Deno.test("ip6tables: flannel's chains with the IPv6 halves, ff00::/8 for multicast", () => {
  const rules = masqRules({
    network: parseCidr6("2001:db8:1::/56"),
    podSubnet: parseCidr6("2001:db8:1:5::/64"),
    randomFully: true,
  }).map((r) => `${r.chain} ${r.args.join(" ")}`);
  const c = "-m comment --comment flanneld masq";
  assert.deepEqual(rules, [
    `POSTROUTING ${c} -j FLANNEL-POSTRTG`,
    `FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 ${c} -j RETURN`,
    `FLANNEL-POSTRTG -s 2001:db8:1:5::/64 -d 2001:db8:1::/56 ${c} -j RETURN`,
    `FLANNEL-POSTRTG -s 2001:db8:1::/56 -d 2001:db8:1:5::/64 ${c} -j RETURN`,
    `FLANNEL-POSTRTG ! -s 2001:db8:1::/56 -d 2001:db8:1:5::/64 ${c} -j RETURN`,
    `FLANNEL-POSTRTG -s 2001:db8:1::/56 ! -d ff00::/8 ${c} -j MASQUERADE --random-fully`,
    `FLANNEL-POSTRTG ! -s 2001:db8:1::/56 -d 2001:db8:1::/56 ${c} -j MASQUERADE --random-fully`,
  ]);
  assert.deepEqual(
    forwardRules(parseCidr6("2001:db8:1::/56")).map((r) => r.args.slice(0, 2).join(" ")),
    ["-m comment", "-s 2001:db8:1::/56", "-d 2001:db8:1::/56"],
  );
});
