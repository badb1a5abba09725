/** The IPv6 half of leases: keys, peer checks per family, and the pure allocation policy. */
import assert from "node:assert/strict";
import { parseNetworkConfig } from "../../src/config/network.ts";
import {
  chooseOwnLease,
  freeSubnets6,
  halfTakenBefore,
  hasUsableIpv6Half,
  isAllocatable6,
} from "../../src/lease/allocate.ts";
import {
  type Lease,
  LeaseFormatError,
  parseSubnetKey,
  parseSubnetKey6,
  peerProblem,
  subnetKey,
} from "../../src/lease/codec.ts";
import { LeaseDecoder } from "../../src/lease/decode.ts";
import { leaseRows, renderLeaseTable } from "../../src/cli/leases_table.ts";
import { formatCidr, parseCidr } from "../../src/base/ipv4.ts";
import { formatCidr6, parseCidr6 } from "../../src/base/ipv6.ts";
import { flannelDualStackKey } from "../kit/fixtures/flannel_leases.ts";

const dual = parseNetworkConfig(
  `{"Network":"198.19.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8:1::/56",` +
    `"Backend":{"Type":"alloc"}}`,
);
const v6only = parseNetworkConfig(
  `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"2001:db8:1::/56","Backend":{"Type":"alloc"}}`,
);

function lease(key: string, publicIP: string, publicIPv6: string | null, revision = 1): Lease {
  const subnet6 = parseSubnetKey6(key);
  return {
    key,
    subnet: parseSubnetKey(key),
    ...(subnet6 ? { subnet6 } : {}),
    attrs: { publicIP, publicIPv6 },
    expiresAt: Date.now() + 1e6,
    revision,
  };
}

Deno.test("lease keys with an IPv6 half: flanneld's form, one spelling per subnet", () => {
  assert.equal(
    subnetKey(parseCidr("198.19.5.0/24"), parseCidr6("2001:db8:1:5::/64")),
    "198.19.5.0-24&2001:db8:1:5::-64",
  );
  assert.equal(
    subnetKey({ ip: 0, prefix: 0 }, parseCidr6("2001:db8:1:5::/64")),
    "0.0.0.0-0&2001:db8:1:5::-64",
  );
  assert.equal(formatCidr6(parseSubnetKey6(flannelDualStackKey)!), "fc00::/64");
  assert.equal(parseSubnetKey6("198.19.5.0-24"), null);
  for (
    const bad of [
      "198.19.5.0-24&2001:DB8:1:5::-64", // not flanneld's (lower-case) spelling
      "198.19.5.0-24&2001:db8:1:5:0:0:0:0-64", // not compressed
      "198.19.5.0-24&2001:db8:1:5::1-64", // host bits
      "198.19.5.0-24&2001:db8:1:5::-129",
      "198.19.5.0-24&2001:db8:1:5::-064",
      "198.19.5.0-24&nope-64",
      "198.19.5.0-24&",
    ]
  ) assert.throws(() => parseSubnetKey6(bad), LeaseFormatError, bad);
});

Deno.test("the decoder keeps both halves; IPv6-only leases only when it serves IPv6", () => {
  const r = {
    key: "0.0.0.0-0&2001:db8:1:5::-64",
    value: `{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8::5","BackendType":"vxlan"}`,
    revision: 3,
    expiresAt: null,
  };
  assert.equal(new LeaseDecoder().decode(r), null);
  const l = new LeaseDecoder({ ipv6: true }).decode(r)!;
  assert.equal(formatCidr6(l.subnet6!), "2001:db8:1:5::/64");
  assert.equal(formatCidr(l.subnet), "0.0.0.0/0");
  const d = new LeaseDecoder().decode({ ...r, key: "198.19.5.0-24&2001:db8:1:5::-64" })!;
  assert.equal(formatCidr(d.subnet), "198.19.5.0/24");
  assert.equal(formatCidr6(d.subnet6!), "2001:db8:1:5::/64");
  // An IPv4-only lease has no subnet6 field at all (leases compare as before).
  assert.ok(!("subnet6" in new LeaseDecoder().decode({ ...r, key: "198.19.5.0-24" })!));
});

Deno.test("peer checks per family present: PublicIP for the IPv4 half, PublicIPv6 for the IPv6 half", () => {
  const ok = lease("198.19.5.0-24&2001:db8:1:5::-64", "198.18.0.5", "2001:db8:ffff::5");
  assert.equal(peerProblem(ok, true), null);
  const noV6 = lease("198.19.5.0-24&2001:db8:1:5::-64", "198.18.0.5", null);
  assert.equal(peerProblem(noV6), null, "an IPv4-only node judges the IPv4 half alone");
  assert.match(peerProblem(noV6, true)!, /PublicIPv6 missing/);
  const badV6 = lease("198.19.5.0-24&2001:db8:1:5::-64", "198.18.0.5", "ff02::1");
  assert.match(peerProblem(badV6, true)!, /PublicIPv6 ff02::1 is in ff00::\/8 \(multicast\)/);
  assert.match(
    peerProblem({ ...badV6, attrs: { ...badV6.attrs, publicIPv6: "x" } }, true)!,
    /"x" is not an IPv6 address/,
  );
  // IPv6-only: PublicIP 0.0.0.0 is how flanneld writes it, not a bogus address.
  const only = lease("0.0.0.0-0&2001:db8:1:5::-64", "0.0.0.0", "2001:db8:ffff::5");
  assert.equal(peerProblem(only, true), null);
  assert.match(peerProblem(lease("198.19.5.0-24", "0.0.0.0", null))!, /PublicIP 0\.0\.0\.0/);
});

Deno.test("IPv6 allocation: free subnets from IPv6SubnetMin, own lease by PublicIPv6 when IPv6-only", () => {
  const taken = lease("198.19.1.0-24&2001:db8:1:1::-64", "198.18.0.1", "2001:db8:ffff::1");
  const free = freeSubnets6(dual, [taken], 2).map(formatCidr6);
  assert.deepEqual(free, ["2001:db8:1:2::/64", "2001:db8:1:3::/64"]);
  assert.ok(isAllocatable6(dual, parseCidr6("2001:db8:1:ff::/64")));
  assert.ok(!isAllocatable6(dual, parseCidr6("2001:db8:1::/64")), "SubnetMin skips the first");
  assert.ok(!isAllocatable6(dual, parseCidr6("2001:db8:2:1::/64")));
  // IPv6-only leases all say PublicIP 0.0.0.0: PublicIPv6 tells them apart.
  const a = lease("0.0.0.0-0&2001:db8:1:7::-64", "0.0.0.0", "2001:db8:ffff::7");
  const b = lease("0.0.0.0-0&2001:db8:1:8::-64", "0.0.0.0", "2001:db8:ffff::8");
  assert.equal(chooseOwnLease(v6only, [a, b], "2001:db8:ffff::8").lease, b);
  assert.equal(chooseOwnLease(v6only, [a, b], "2001:db8:ffff::9").lease, null);
  // A free subnet.env subnet is not moved by a lease this node did not write.
  assert.equal(
    chooseOwnLease(v6only, [a], "2001:db8:ffff::7", { hint6: parseCidr6("2001:db8:1:9::/64") })
      .lease,
    null,
  );
  // An IPv4-only lease of ours is kept and gains an IPv6 half.
  const old = lease("198.19.3.0-24", "198.18.0.3", null);
  assert.equal(chooseOwnLease(dual, [old], "198.18.0.3").lease, old);
  assert.equal(hasUsableIpv6Half(dual, old), false);
  assert.equal(hasUsableIpv6Half(dual, taken), true);
});

Deno.test("a dual-stack key is unique only as a pair: the lease written first keeps a shared half", () => {
  const first = lease("198.19.5.0-24&2001:db8:1:5::-64", "198.18.0.5", "2001:db8:ffff::5", 10);
  const sameV4 = lease("198.19.5.0-24&2001:db8:1:6::-64", "198.18.0.6", "2001:db8:ffff::6", 11);
  const sameV6 = lease("198.19.6.0-24&2001:db8:1:5::-64", "198.18.0.7", "2001:db8:ffff::7", 12);
  const apart = lease("198.19.7.0-24&2001:db8:1:7::-64", "198.18.0.8", "2001:db8:ffff::8", 9);
  const all = [first, sameV4, sameV6, apart];
  assert.equal(halfTakenBefore(dual, sameV4, all), first);
  assert.equal(halfTakenBefore(dual, sameV6, all), first);
  assert.equal(halfTakenBefore(dual, first, all), null);
  assert.equal(halfTakenBefore(dual, apart, all), null);
  // IPv6-only keys all share the empty IPv4 network: that is no collision.
  const x = lease("0.0.0.0-0&2001:db8:1:5::-64", "0.0.0.0", "2001:db8:ffff::5", 1);
  const y = lease("0.0.0.0-0&2001:db8:1:6::-64", "0.0.0.0", "2001:db8:ffff::6", 2);
  assert.equal(halfTakenBefore(v6only, y, [x, y]), null);
});

Deno.test("weft leases: IPv6 columns only when a lease has an IPv6 half", () => {
  const known = (l: Lease) => ({ ...l, expiresAt: null });
  const v4 = known(lease("198.19.5.0-24", "198.18.0.5", null));
  const plain = renderLeaseTable([v4]);
  assert.ok(!plain.includes("IPV6"), plain);
  assert.deepEqual(Object.keys(leaseRows([v4])[0]).includes("subnet6"), false);
  const d = known(lease("198.19.6.0-24&2001:db8:1:6::-64", "198.18.0.6", "2001:db8:ffff::6"));
  const t = renderLeaseTable([v4, d]).split("\n");
  assert.match(t[0], /^SUBNET\s+PUBLIC IP\s+IPV6 SUBNET\s+PUBLIC IPV6\s+BACKEND/);
  assert.match(t[1], /^198\.19\.5\.0\/24\s+198\.18\.0\.5\s+-\s+-\s+udp/);
  assert.match(
    t[2],
    /^198\.19\.6\.0\/24\s+198\.18\.0\.6\s+2001:db8:1:6::\/64\s+2001:db8:ffff::6\s/,
  );
  const rows = leaseRows([d]);
  assert.equal(rows[0].subnet6, "2001:db8:1:6::/64");
  assert.equal(rows[0].publicIPv6, "2001:db8:ffff::6");
});

Deno.test("weft leases: IPv6-only leases show '-' for the IPv4 half, sorted by IPv6 subnet", () => {
  const known = (l: Lease, data?: unknown) => ({
    ...l,
    attrs: { ...l.attrs, backendType: "vxlan", backendV6Data: data },
    expiresAt: null,
  });
  const b = known(lease("0.0.0.0-0&2001:db8:1:9::-64", "0.0.0.0", "2001:db8:ffff::9"), {
    VNI: 1,
    VtepMAC: "02:00:00:00:00:09",
  });
  const a = known(lease("0.0.0.0-0&2001:db8:1:2::-64", "0.0.0.0", "2001:db8:ffff::2"));
  const t = renderLeaseTable([b, a]).split("\n");
  assert.match(t[1], /^-\s+-\s+2001:db8:1:2::\/64\s+2001:db8:ffff::2\s+vxlan\s+-\s/);
  // The VTEP MAC of an IPv6-only lease is its IPv6 VTEP's (BackendV6Data).
  assert.match(t[2], /^-\s+-\s+2001:db8:1:9::\/64\s+2001:db8:ffff::9\s+vxlan\s+02:00:00:00:00:09/);
});
