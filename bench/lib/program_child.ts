/**
 * Times weft's kernel backends programming N peers, run inside a scratch network namespace (the
 * libnl socket works in the namespace of the process that opens it). Per repetition:
 * `reconcile(N peers)` from empty (start-up path), `reconcile([])` (removal of everything),
 * `apply(N added)` (incremental path) and `apply(N removed)`; each followed by an untimed count
 * of routes / neighbours / FDB entries so a fast-but-wrong run cannot pass. Prints one JSON
 * object. Peers: /29 subnets of 198.19.0.0/16, public IPs from 198.18.64.2 (on-link on `--iface`).
 * With `--ipv6`: a dual-stack config and dual-stack leases (IPv6 halves: /64s of
 * `NETWORK6`, PublicIPv6 from `PUBLIC6_BASE` (leases.ts), on-link too; vxlan: BackendV6Data), so
 * each peer is programmed in both families (vxlan: on `flannel.1` and `flannel-v6.1`).
 *
 * @example
 * ```sh
 * ip netns exec wharn-w3k9z1-prog deno run -A bench/lib/program_child.ts \
 *   --backend vxlan --n 5000 --reps 3 --iface ext0
 * # {"backend":"vxlan","n":5000,"reps":[{"reconcileAdd":412.3,...,"counts":{...}}]}
 * ```
 */
import { parseArgs } from "node:util";
import { parseNetworkConfig } from "../../src/config/network.ts";
import { selectExternalInterface } from "../../src/net/iface.ts";
import type { Backend } from "../../src/backend/backend.ts";
import type { PeerEvent } from "../../src/lease/watch.ts";
import { VxlanBackend } from "../../src/backend/vxlan/backend.ts";
import { HostGwBackend } from "../../src/backend/hostgw/backend.ts";
import { netlink, RT_TABLE_MAIN } from "../../ffi/libnl/mod.ts";
import { leasePlan, NETWORK6, peerPlan6 } from "./leases.ts";

const { values: v } = parseArgs({
  args: Deno.args,
  options: {
    backend: { type: "string", default: "host-gw" },
    n: { type: "string", default: "1000" },
    reps: { type: "string", default: "3" },
    iface: { type: "string", default: "ext0" },
    ipv6: { type: "boolean", default: false },
  },
});
const ipv6 = v.ipv6;
const n = Number(v.n);
const nl = netlink();
const cfg = parseNetworkConfig(
  JSON.stringify({
    Network: "198.19.0.0/16",
    SubnetLen: 29,
    ...(ipv6 ? { EnableIPv6: true, IPv6Network: NETWORK6, IPv6SubnetLen: 64 } : {}),
    Backend: { Type: v.backend },
  }),
);
const ext = await selectExternalInterface({ iface: [v.iface], ipv6 });
const backend: Backend = v.backend === "vxlan" ? new VxlanBackend(nl) : new HostGwBackend(nl);
const ownPlan = leasePlan({
  count: 1,
  firstSubnet: 1,
  subnetLen: 29,
  publicBase: ext.ifaceAddr,
  backend: v.backend,
  ipv6: ipv6 ? { ...peerPlan6, publicBase: ext.publicIPv6! } : undefined,
})[0];
const peers = leasePlan({
  count: n,
  firstSubnet: 2,
  subnetLen: 29,
  publicBase: "198.18.64.2",
  backend: v.backend,
  ipv6: ipv6 ? peerPlan6 : undefined,
}).map((p) => p.lease);

await backend.prepare({ config: cfg, ext, previous: null });
await backend.start(ownPlan.lease);
const vx = v.backend === "vxlan";
const dev = vx ? nl.linkByName("flannel.1")?.index ?? null : null;
const dev6 = vx && ipv6 ? nl.linkByName("flannel-v6.1")?.index ?? null : null;

/** What the kernel holds of ours right now (not timed); the IPv6 counts with `--ipv6` only. */
function counts() {
  const routes =
    nl.routeList({ table: RT_TABLE_MAIN }).filter((r) => r.dst.startsWith("198.19.")).length;
  const v4 = dev === null ? { routes, neigh: 0, fdb: 0 } : {
    routes,
    neigh: nl.neighList(dev).filter((x) => x.permanent && x.ip.startsWith("198.19.")).length,
    fdb: nl.fdbList(dev).filter((x) => x.self && x.dst).length,
  };
  if (!ipv6) return v4;
  const routes6 = nl.routeList({ table: RT_TABLE_MAIN, family: 6 })
    // Peers' routes only (a gateway each): not the kernel's route to the VTEP's own /128.
    .filter((r) => r.dst.startsWith("2001:db8:100:") && r.gw).length;
  return {
    ...v4,
    routes6,
    neigh6: dev6 === null ? 0 : nl.neighList(dev6, 6).filter((x) => x.permanent).length,
    fdb6: dev6 === null ? 0 : nl.fdbList(dev6).filter((x) => x.self && x.dst).length,
  };
}

const time = async (fn: () => Promise<void>) => {
  const t = performance.now();
  await fn();
  return performance.now() - t;
};
const added: PeerEvent[] = peers.map((lease) => ({ type: "added", lease }));
const removed: PeerEvent[] = peers.map((lease) => ({ type: "removed", lease }));
const reps = [];
for (let r = 0; r < Number(v.reps); r++) {
  const reconcileAdd = await time(() => backend.reconcile(peers));
  const afterAdd = counts();
  const reconcileDel = await time(() => backend.reconcile([]));
  const afterDel = counts();
  const applyAdd = await time(() => backend.apply(added));
  const afterApply = counts();
  const applyDel = await time(() => backend.apply(removed));
  const afterApplyDel = counts();
  reps.push({
    reconcileAdd,
    reconcileDel,
    applyAdd,
    applyDel,
    counts: { afterAdd, afterDel, afterApply, afterApplyDel },
  });
}
if (dev !== null) nl.linkDel(dev);
if (dev6 !== null) nl.linkDel(dev6);
await backend.close();
nl.close();
console.log(JSON.stringify({ backend: v.backend, n, ipv6, reps }));
