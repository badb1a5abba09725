import assert from "node:assert/strict";
import {
  decodeLeaseValue,
  encodeLeaseValue,
  type Lease,
  leaseBackendType,
  LeaseFormatError,
  parseSubnetKey,
  peerProblem,
  sameDatapath,
  subnetKey,
} from "../../src/lease/codec.ts";
import { LeaseDecoder } from "../../src/lease/decode.ts";
import { macProblem } from "../../src/config/unicast.ts";
import { metrics } from "../../src/base/metrics.ts";
import { formatCidr, parseCidr } from "../../src/base/ipv4.ts";
import {
  flannelDualStackKey,
  flannelHostGwLease,
  flannelUdpLease,
  flannelVxlanLease,
} from "../kit/fixtures/flannel_leases.ts";

Deno.test("flannel-written lease values round-trip byte for byte", () => {
  for (const v of [flannelVxlanLease, flannelHostGwLease, flannelUdpLease]) {
    assert.equal(encodeLeaseValue(decodeLeaseValue(v)), v);
  }
});

Deno.test("weft writes flanneld's exact vxlan lease JSON", () => {
  const v = encodeLeaseValue({
    publicIP: "198.18.0.3",
    backendType: "vxlan",
    backendData: { VNI: 1, VtepMAC: "c6:d2:32:6f:8f:44" },
  });
  assert.equal(v, flannelVxlanLease);
});

Deno.test("udp leases have no BackendType and count as udp", () => {
  const a = decodeLeaseValue(flannelUdpLease);
  assert.equal(a.backendType, undefined);
  assert.equal(leaseBackendType(a), "udp");
  assert.equal(leaseBackendType(decodeLeaseValue(flannelHostGwLease)), "host-gw");
});

Deno.test("lease keys: flannel form, dual stack, and rejects", () => {
  assert.equal(subnetKey(parseCidr("198.19.5.0/24")), "198.19.5.0-24");
  assert.equal(formatCidr(parseSubnetKey("198.19.5.0-24")), "198.19.5.0/24");
  assert.equal(formatCidr(parseSubnetKey(flannelDualStackKey)), "198.19.1.0/24");
  for (const bad of ["198.19.5.0", "198.19.5.1-24", "x-24", "198.19.5.0-33", "300.1.1.0-24"]) {
    assert.throws(() => parseSubnetKey(bad), LeaseFormatError, bad);
  }
});

Deno.test("malformed lease values are typed errors naming the problem", () => {
  assert.throws(() => decodeLeaseValue("{not json"), /not JSON/);
  assert.throws(() => decodeLeaseValue("[]"), /not a JSON object/);
  assert.throws(() => decodeLeaseValue(`{"PublicIP":"nope"}`), /PublicIP "nope"/);
  assert.throws(() => decodeLeaseValue(`{"PublicIP":"198.18.0.1","BackendType":5}`), /BackendType/);
});

Deno.test("field names match case-insensitively like Go's encoding/json", () => {
  const a = decodeLeaseValue(`{"publicip":"198.18.0.9","backendtype":"vxlan"}`);
  assert.equal(a.publicIP, "198.18.0.9");
  assert.equal(a.backendType, "vxlan");
});

const bogusIPs = ["0.0.0.0", "0.1.2.3", "127.0.0.1", "224.0.0.5", "239.1.1.1", "240.0.0.1"];

Deno.test("peer leases: the public IP must be a host's unicast address", () => {
  const lease = (ip: string): Lease => ({
    key: "198.19.5.0-24",
    subnet: parseCidr("198.19.5.0/24"),
    attrs: { publicIP: ip, backendType: "vxlan" },
    expiresAt: null,
    revision: 1,
  });
  for (const ip of [...bogusIPs, "255.255.255.255"]) {
    assert.match(peerProblem(lease(ip)) ?? "", new RegExp(`PublicIP ${ip} is in \\d`), ip);
  }
  assert.match(peerProblem(lease("255.255.255.255"))!, /240\.0\.0\.0\/4 \(reserved and broadcast/);
  for (const ip of ["198.18.0.3", "1.0.0.1", "223.255.255.254", "126.255.255.255"]) {
    assert.equal(peerProblem(lease(ip)), null, ip);
  }
});

Deno.test("VTEP MACs: multicast, broadcast, zero and non-MACs are refused", () => {
  for (const m of ["01:00:5e:00:00:01", "ff:ff:ff:ff:ff:ff", "33:33:00:00:00:01"]) {
    assert.match(macProblem(m) ?? "", /multicast MAC/, m);
  }
  assert.match(macProblem("00:00:00:00:00:00")!, /zero MAC/);
  for (const m of [5, "c6:d2:32:6f:8f", undefined, "c6-d2-32-6f-8f-44"]) {
    assert.match(macProblem(m) ?? "", /not a MAC address/, String(m));
  }
  for (const m of ["c6:d2:32:6f:8f:44", "02:00:00:00:00:01", "00:16:3e:00:00:01"]) {
    assert.equal(macProblem(m), null, m);
  }
});

Deno.test("an IPv6-only flannel lease has no IPv4 half: skipped quietly, not malformed", () => {
  const malformed = metrics.counter("weft_registry_malformed_leases_total", "");
  const before = malformed.get();
  const d = new LeaseDecoder();
  const v6only = {
    key: "0.0.0.0-0&2001:db8:1::-64",
    value: `{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8::5","BackendType":"vxlan",` +
      `"BackendV6Data":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}`,
    revision: 3,
    expiresAt: null,
  };
  for (let i = 0; i < 3; i++) assert.equal(d.decode({ ...v6only, revision: 3 + i }), null);
  assert.equal(malformed.get(), before);
  // A dual-stack lease keeps its IPv4 half.
  const dual = d.decode({ ...v6only, key: flannelDualStackKey, value: flannelVxlanLease });
  assert.equal(formatCidr(dual!.subnet), "198.19.1.0/24");
});

Deno.test("weft's identity fields: written last only when set, decoded defensively", () => {
  const base = { publicIP: "198.18.0.3", backendType: "host-gw" };
  assert.equal(
    encodeLeaseValue(base),
    `{"PublicIP":"198.18.0.3","PublicIPv6":null,"BackendType":"host-gw"}`,
  );
  const v = encodeLeaseValue({ ...base, nodeId: "n-1", claim: true });
  assert.equal(
    v,
    `{"PublicIP":"198.18.0.3","PublicIPv6":null,"BackendType":"host-gw","WeftNodeID":"n-1","WeftClaim":true}`,
  );
  assert.deepEqual(decodeLeaseValue(v), {
    ...base,
    publicIPv6: null,
    backendData: undefined,
    backendV6Data: undefined,
    nodeId: "n-1",
    claim: true,
  });
  // A malformed identity is no identity, and a claim without one is no claim; the lease stays.
  for (const id of [42, "", "a b", "x".repeat(65), null]) {
    const a = decodeLeaseValue(
      JSON.stringify({ PublicIP: "198.18.0.3", WeftNodeID: id, WeftClaim: true }),
    );
    assert.equal(a.nodeId, undefined);
    assert.equal(a.claim, undefined);
  }
  // Identity changes are no datapath change (no route removed and re-added on a claim).
  assert.ok(sameDatapath({ ...base, nodeId: "a" }, { ...base, nodeId: "b", claim: true }));
  assert.ok(!sameDatapath(base, { ...base, publicIP: "198.18.0.4" }));
});
