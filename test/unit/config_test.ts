import assert from "node:assert/strict";
import {
  backendBool,
  backendNumber,
  parseNetworkConfig,
  sameConfig,
} from "../../src/config/network.ts";
import { ConfigError } from "../../src/base/errors.ts";
import { formatIp } from "../../src/base/ipv4.ts";
import { flannelConfig } from "../kit/fixtures/flannel_leases.ts";

Deno.test("defaults follow flannel: SubnetLen, SubnetMin skips the first subnet, udp backend", () => {
  const c = parseNetworkConfig(`{"Network":"198.19.0.0/16"}`);
  assert.equal(c.subnetLen, 24);
  assert.equal(formatIp(c.subnetMin), "198.19.1.0");
  assert.equal(formatIp(c.subnetMax), "198.19.255.0");
  assert.equal(c.backendType, "udp");
  const small = parseNetworkConfig(`{"Network":"198.19.0.0/26"}`);
  assert.equal(small.subnetLen, 28);
  assert.equal(parseNetworkConfig(`{"Network":"198.19.0.0/22"}`).subnetLen, 24);
  assert.equal(parseNetworkConfig(`{"Network":"198.19.0.0/23"}`).subnetLen, 25);
});

Deno.test("flannel's config parses; fields and Backend.Type are case-insensitive", () => {
  const c = parseNetworkConfig(flannelConfig);
  assert.equal(c.backendType, "vxlan");
  assert.equal(backendNumber(c, "VNI", 9), 1);
  const d = parseNetworkConfig(
    `{"network":"198.19.0.0/16","backend":{"type":"VXLAN","directrouting":true}}`,
  );
  assert.equal(d.backendType, "vxlan");
  assert.equal(backendBool(d, "DirectRouting"), true);
});

Deno.test("bad configs name the field and the expected form", () => {
  const cases: [string, RegExp][] = [
    ["{", /not valid JSON/],
    ["[]", /JSON object/],
    [`{}`, /Network is required/],
    [`{"Network":"198.19.0.1/16"}`, /host bits set/],
    [`{"Network":"198.19.0.0/30"}`, /too small/],
    [`{"Network":"198.19.0.0/16","SubnetLen":17}`, /SubnetLen 17 .* between 18 and 30/],
    [`{"Network":"198.19.0.0/16","SubnetLen":31}`, /SubnetLen 31/],
    [`{"Network":"198.19.0.0/16","SubnetMin":"198.20.0.0"}`, /SubnetMin .* not inside/],
    [`{"Network":"198.19.0.0/16","SubnetMin":"198.19.0.5"}`, /not aligned/],
    [`{"Network":"198.19.0.0/16","SubnetMin":"198.19.9.0","SubnetMax":"198.19.2.0"}`, /above/],
    [`{"Network":"198.19.0.0/16","Backend":"vxlan"}`, /Backend must be an object/],
    [`{"Network":"198.19.0.0/16","SubnetLen":"24"}`, /SubnetLen must be a non-negative integer/],
  ];
  for (const [text, re] of cases) assert.throws(() => parseNetworkConfig(text), re, text);
  assert.throws(() => parseNetworkConfig("{"), ConfigError);
});

Deno.test("sameConfig ignores whitespace, key order and key case", () => {
  assert.ok(sameConfig(
    `{"Network":"198.19.0.0/16","Backend":{"Type":"vxlan"}}`,
    `{
    "backend": {"type": "vxlan"}, "network": "198.19.0.0/16" }`,
  ));
  assert.ok(!sameConfig(`{"Network":"198.19.0.0/16"}`, `{"Network":"198.18.0.0/16"}`));
});
