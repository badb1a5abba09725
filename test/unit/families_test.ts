import assert from "node:assert/strict";
import { parseNetworkConfig } from "../../src/config/network.ts";
import { checkFamilies, createBackend } from "../../src/agent/select_backend.ts";
import { ConfigError } from "../../src/base/errors.ts";

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
  assert.throws(
    () => checkFamilies(v6only, alloc),
    (e: Error) => e instanceof ConfigError && /EnableIPv4 is false .*IPv6-only/.test(e.message),
  );
  const noV6 = { name: "vxlan" } as Parameters<typeof checkFamilies>[1];
  assert.throws(
    () => checkFamilies(dual("vxlan"), noV6),
    (e: Error) =>
      e instanceof ConfigError && /EnableIPv6 is true but weft's vxlan backend/.test(e.message),
  );
});
