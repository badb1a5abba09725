import assert from "node:assert/strict";
import {
  decodeLeaseValue,
  encodeLeaseValue,
  leaseBackendType,
  LeaseFormatError,
  parseSubnetKey,
  subnetKey,
} from "../../src/lease/codec.ts";
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
