import assert from "node:assert/strict";
import {
  backendBool,
  backendNumber,
  parseNetworkConfig,
  sameConfig,
} from "../../src/config/network.ts";
import { ConfigError } from "../../src/base/errors.ts";
import { BACKEND_TYPES } from "../../src/config/backend_options.ts";
import { formatIp } from "../../src/base/ipv4.ts";
import { formatCidr6, formatIp6 } from "../../src/base/ipv6.ts";
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

Deno.test("config validation: backend type, options, Network and size are checked before use", () => {
  const net = (backend: string, extra = "") =>
    `{"Network":"198.19.0.0/16"${extra},"Backend":${backend}}`;
  // Each error is a ConfigError naming the field, the value given and the expected form.
  const cases: [string, RegExp][] = [
    [net(`{"Type":"bogus"}`), /Backend\.Type "bogus".*one of vxlan, host-gw, udp, alloc/],
    [net(`{"Type":"vxlan","VNI":16777216}`), /Backend\.VNI 16777216 .*0\.\.16777215/],
    [net(`{"Type":"vxlan","VNI":-1}`), /Backend\.VNI -1 .*0\.\.16777215/],
    [net(`{"Type":"vxlan","VNI":1.5}`), /Backend\.VNI 1\.5 .*0\.\.16777215/],
    [net(`{"Type":"vxlan","Port":70000}`), /Backend\.Port 70000 .*1\.\.65535/],
    [net(`{"Type":"udp","Port":70000}`), /Backend\.Port 70000 .*1\.\.65535/],
    [net(`{"Type":"vxlan","MTU":10}`), /Backend\.MTU 10 .*118\.\.65485/],
    [net(`{"Type":"vxlan","MTU":100000}`), /Backend\.MTU 100000 .*118\.\.65485/],
    [net(`{"Type":"vxlan","DirectRouting":"yes"}`), /Backend\.DirectRouting "yes".*true or false/],
    [net(`{"Type":"vxlan","GBP":1}`), /Backend\.GBP 1 .*true or false/],
    [net(`{"Type":"udp","TunOffload":"no"}`), /Backend\.TunOffload "no".*true or false/],
    [`{"Network":"0.0.0.0/0"}`, /Network 0\.0\.0\.0\/0 .*0\.0\.0\.0\/8/],
    [`{"Network":"64.0.0.0/2"}`, /Network 64\.0\.0\.0\/2 .*127\.0\.0\.0\/8/],
    [`{"Network":"224.0.0.0/8"}`, /Network 224\.0\.0\.0\/8 .*224\.0\.0\.0\/4/],
    [`{"Network":"198.19.0.0/16","EnableIPv4":"yes"}`, /EnableIPv4 "yes".*true or false/],
  ];
  for (const [text, re] of cases) {
    assert.throws(() => parseNetworkConfig(text), ConfigError, text);
    assert.throws(() => parseNetworkConfig(text), re, text);
  }
  // Too large for the registry: said before the write, not as the registry's own error text.
  const big = `{"Network":"198.19.0.0/16","Pad":"${"x".repeat(70_000)}"}`;
  assert.throws(() => parseNetworkConfig(big), /config too large \(70036 bytes; at most 65520\)/);
  // What flanneld accepts stays accepted: 0 and absent mean the defaults, unknown keys are ignored.
  for (
    const ok of [
      net(`{"Type":"vxlan","VNI":0,"Port":0,"MTU":0}`),
      net(`{"Type":"vxlan","VNI":16777215,"Port":65535,"MTU":1450,"DirectRouting":true}`),
      net(`{"Type":"host-gw","SomethingElse":"yes"}`),
      net(`{"type":"UDP","port":8285}`),
      `{"Network":"198.19.0.0/16"}`,
    ]
  ) parseNetworkConfig(ok);
});

Deno.test("config validation: the backend types live in one list", () => {
  assert.deepEqual([...BACKEND_TYPES], ["vxlan", "host-gw", "udp", "alloc"]);
});

Deno.test("dual stack: IPv6 fields with flannel's defaults", () => {
  const c = parseNetworkConfig(
    `{"Network":"198.19.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8:1::/56",` +
      `"Backend":{"Type":"vxlan"}}`,
  );
  assert.equal(c.enableIPv4, true);
  assert.equal(c.enableIPv6, true);
  assert.equal(c.subnetLen, 24);
  const v6 = c.ipv6!;
  assert.equal(formatCidr6(v6.network), "2001:db8:1::/56");
  assert.equal(v6.subnetLen, 64);
  assert.equal(formatIp6(v6.subnetMin), "2001:db8:1:1::");
  assert.equal(formatIp6(v6.subnetMax), "2001:db8:1:ff::");
  const len = (net: string, extra = "") =>
    parseNetworkConfig(
      `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"${net}"${extra},` +
        `"Backend":{"Type":"host-gw"}}`,
    ).ipv6!.subnetLen;
  assert.equal(len("2001:db8::/62"), 64);
  assert.equal(len("2001:db8::/63"), 65);
  assert.equal(len("2001:db8::/124"), 126);
  assert.equal(len("2001:db8::/48", `,"IPv6SubnetLen":80`), 80);
  const b = parseNetworkConfig(
    `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"2001:db8:1::/56",` +
      `"IPv6SubnetMin":"2001:db8:1:10::","IPv6SubnetMax":"2001:db8:1:20::","Backend":{"Type":"host-gw"}}`,
  );
  assert.equal(formatIp6(b.ipv6!.subnetMin), "2001:db8:1:10::");
  assert.equal(formatIp6(b.ipv6!.subnetMax), "2001:db8:1:20::");
  // IPv6-only: no IPv4 half (the empty network, as in flanneld's `0.0.0.0-0&…` keys).
  assert.equal(b.enableIPv4, false);
  assert.deepEqual(b.network, { ip: 0, prefix: 0 });
  // IPv4-only configs carry no IPv6 half, whatever IPv6Network says (flannel ignores it too).
  const v4 = parseNetworkConfig(`{"Network":"198.19.0.0/16","IPv6Network":"2001:db8:1::/56"}`);
  assert.equal(v4.ipv6, undefined);
  assert.equal(v4.enableIPv6, false);
});

Deno.test("dual stack: bad IPv6 configs name the field and the expected form", () => {
  const v6 = (extra: string, backend = "vxlan") =>
    `{"Network":"198.19.0.0/16","EnableIPv6":true${extra},"Backend":{"Type":"${backend}"}}`;
  const cases: [string, RegExp][] = [
    [`{"Network":"198.19.0.0/16","EnableIPv4":false}`, /EnableIPv4 and EnableIPv6 are both false/],
    [v6(""), /IPv6Network is required .*2001:db8:1::\/56/],
    [v6(`,"IPv6Network":"198.19.0.0/16"`), /IPv6Network: .*not an IPv6 CIDR/],
    [v6(`,"IPv6Network":"2001:db8:1::1/56"`), /IPv6Network: .*host bits set/],
    [v6(`,"IPv6Network":"::/0"`), /IPv6Network ::\/0 overlaps/],
    [v6(`,"IPv6Network":"fe80::/64"`), /link-local/],
    [v6(`,"IPv6Network":"2001:db8::/125"`), /too small: use a prefix of \/124 or shorter/],
    [
      v6(`,"IPv6Network":"2001:db8::/56","IPv6SubnetLen":57`),
      /IPv6SubnetLen 57 .* between 58 and 126/,
    ],
    [v6(`,"IPv6Network":"2001:db8::/56","IPv6SubnetLen":127`), /IPv6SubnetLen 127 .* 126/],
    [
      v6(`,"IPv6Network":"2001:db8::/56","IPv6SubnetLen":"64"`),
      /IPv6SubnetLen must be a non-negative integer/,
    ],
    [
      v6(`,"IPv6Network":"2001:db8::/56","IPv6SubnetMin":"2001:db9::"`),
      /IPv6SubnetMin .* not inside/,
    ],
    [
      v6(`,"IPv6Network":"2001:db8::/56","IPv6SubnetMin":"2001:db8:0:1::5"`),
      /IPv6SubnetMin .* not aligned to IPv6SubnetLen \/64 \(e.g. 2001:db8:0:1::\)/,
    ],
    [
      v6(`,"IPv6Network":"2001:db8::/56","IPv6SubnetMax":"198.19.0.0"`),
      /IPv6SubnetMax "198.19.0.0" is not an IPv6 address/,
    ],
    [
      v6(
        `,"IPv6Network":"2001:db8::/56","IPv6SubnetMin":"2001:db8:0:9::","IPv6SubnetMax":"2001:db8:0:2::"`,
      ),
      /IPv6SubnetMin is above IPv6SubnetMax/,
    ],
    [
      v6(`,"IPv6Network":"2001:db8::/56"`, "udp"),
      /EnableIPv6 is true with the udp backend.*vxlan.*host-gw/,
    ],
    [`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"2001:db8::/56"}`, /udp backend/], // udp is the default
  ];
  for (const [text, re] of cases) {
    assert.throws(() => parseNetworkConfig(text), (e: Error) => {
      assert.ok(e instanceof ConfigError, text);
      assert.match(e.message, re, text);
      return true;
    });
  }
});
