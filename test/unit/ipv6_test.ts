import assert from "node:assert/strict";
import {
  contains6,
  containsNet6,
  formatCidr6,
  formatIp6,
  isIp6,
  maskOf6,
  networkOf6,
  overlaps6,
  parseCidr6,
  parseIp6,
  sizeOf6,
} from "../../src/base/ipv6.ts";
import { ipv6Problem, nonUnicastOverlap6 } from "../../src/config/unicast.ts";

Deno.test("ipv6: formats in RFC 5952 compressed form, as Go's net.IP.String() does", () => {
  const cases: [string, string][] = [
    ["2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"],
    ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"], // first of two equal runs
    ["2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"], // a single zero group stays
    ["2001:DB8:1:5::", "2001:db8:1:5::"],
    ["::", "::"],
    ["::1", "::1"],
    ["2001:db8:0:0:1:0:0:0", "2001:db8:0:0:1::"], // the longest run wins
  ];
  for (const [text, want] of cases) assert.equal(formatIp6(parseIp6(text)), want, text);
});

Deno.test("ipv6: bad addresses and CIDRs are refused, naming the value", () => {
  for (
    const t of ["", "1::2::3", "2001:db8", "12345::", "g::1", "1:2:3:4:5:6:7:8:9", "fe80::1%eth0"]
  ) {
    assert.ok(!isIp6(t), t);
    assert.throws(() => parseIp6(t), new RegExp("not an IPv6 address"), t);
  }
  assert.throws(() => parseCidr6("2001:db8::1/64"), /host bits set .*2001:db8::\/64/);
  assert.throws(() => parseCidr6("2001:db8::/129"), /not an IPv6 CIDR/);
  assert.throws(() => parseCidr6("2001:db8::/064"), /not an IPv6 CIDR/);
  assert.equal(formatCidr6(parseCidr6("2001:db8::1/64", true)), "2001:db8::1/64");
});

Deno.test("ipv6: masks, sizes, containment", () => {
  assert.equal(maskOf6(0), 0n);
  assert.equal(maskOf6(128), (1n << 128n) - 1n);
  assert.equal(maskOf6(64), ((1n << 64n) - 1n) << 64n);
  assert.equal(sizeOf6(64), 1n << 64n);
  const net = parseCidr6("2001:db8:1::/56");
  const sub = { ip: net.ip + 5n * sizeOf6(64), prefix: 64 };
  assert.equal(formatCidr6(sub), "2001:db8:1:5::/64");
  assert.ok(containsNet6(net, sub));
  assert.ok(!containsNet6(sub, net));
  assert.ok(contains6(sub, parseIp6("2001:db8:1:5::1")));
  assert.ok(!contains6(sub, parseIp6("2001:db8:1:6::1")));
  assert.ok(overlaps6(net, sub) && overlaps6(sub, net));
  assert.ok(!overlaps6(sub, parseCidr6("2001:db8:1:6::/64")));
  assert.equal(
    formatCidr6(networkOf6(parseCidr6("2001:db8:1:5::1/64", true))),
    "2001:db8:1:5::/64",
  );
});

Deno.test("ipv6: which addresses and networks can be a host's", () => {
  assert.equal(ipv6Problem("2001:db8::5"), null);
  for (const t of ["::", "::1", "ff02::1", "fe80::1", "::ffff:198.18.0.1", "nope"]) {
    assert.ok(ipv6Problem(t), t);
  }
  assert.match(nonUnicastOverlap6(parseCidr6("::/0"))!, /::\/128/);
  assert.equal(nonUnicastOverlap6(parseCidr6("2001:db8:1::/56")), null);
});
