import assert from "node:assert/strict";
import { vxlanOptions } from "../../src/backend/vxlan/device.ts";
import { parseNetworkConfig } from "../../src/config/network.ts";
import type { ExternalInterface } from "../../src/net/iface.ts";

const ext: ExternalInterface = {
  name: "eth0",
  index: 2,
  ifaceAddr: "198.18.0.11",
  publicIP: "198.18.0.11",
  mtu: 9000,
};
const cfg = (backend: string) =>
  parseNetworkConfig(`{"Network":"198.19.0.0/16","Backend":${backend}}`);

Deno.test("Backend.MTU is the underlay MTU, as flanneld reads it: the VTEPs get it less 50 / 70", () => {
  // Unset: the external interface's MTU is the underlay's.
  const d = vxlanOptions(cfg(`{"Type":"vxlan"}`), ext);
  assert.deepEqual([d.mtu, d.mtu6], [8950, 8930]);
  // Set: a flanneld node with this config makes flannel.1 1400 − 50; so does weft.
  const o = vxlanOptions(cfg(`{"Type":"vxlan","MTU":1400}`), ext);
  assert.deepEqual([o.mtu, o.mtu6], [1350, 1330]);
});
