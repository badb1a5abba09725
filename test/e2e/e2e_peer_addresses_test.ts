/**
 * Bogus peer leases on real kernels (issue 10, defect 8): a lease whose PublicIP is 0.0.0.0 or
 * 255.255.255.255, or whose VtepMAC is multicast, leaves no route, neighbour or FDB entry on a
 * vxlan host, and no apply error; flanneld's IPv6-only lease is skipped quietly. A good lease
 * written after them is programmed, so the agent judged them all.
 */
import assert from "node:assert/strict";
import { withCluster } from "../kit/cluster.ts";
import { waitFor } from "../kit/proc.ts";
import { openKvRegistry } from "../../src/registry/kv/mod.ts";
import { encodeLeaseValue } from "../../src/lease/codec.ts";

const vxlan = (ip: string, mac: string) =>
  encodeLeaseValue({ publicIP: ip, backendType: "vxlan", backendData: { VNI: 1, VtepMAC: mac } });

Deno.test({
  name: "peer addresses: bogus leases leave no vxlan entries on any host",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await withCluster({ hosts: 2, registry: "kv" }, async (c) => {
      await c.startAll({ backend: "vxlan", extraArgs: ["--iptables-forward-rules=false"] });
      const r = await openKvRegistry({ path: c.kvPath!, pollMs: 50 });
      try {
        const bogus: [string, string][] = [
          ["198.19.200.0-24", vxlan("0.0.0.0", "0a:00:00:00:02:00")],
          ["198.19.201.0-24", vxlan("255.255.255.255", "0a:00:00:00:02:01")],
          ["198.19.202.0-24", vxlan("198.18.0.202", "01:00:5e:00:00:01")],
          ["198.19.203.0-24", vxlan("198.18.0.203", "00:00:00:00:00:00")],
          [
            "0.0.0.0-0&2001:db8:1::-64",
            `{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8::5","BackendType":"vxlan",` +
            `"BackendV6Data":{"VNI":1,"VtepMAC":"0a:00:00:00:02:05"}}`,
          ],
        ];
        for (const [key, value] of bogus) assert.ok(await r.createLease(key, value, 600), key);
        // Written last: once it is programmed everywhere, every lease before it was judged.
        assert.ok(
          await r.createLease("198.19.210.0-24", vxlan("198.18.0.210", "0a:00:00:00:02:10"), 600),
        );
        for (const h of c.hosts) {
          const dump = async () => ({
            routes: await c.exec(h, ["ip", "route", "show", "table", "main"]),
            neigh: await c.exec(h, ["ip", "neigh", "show", "dev", "flannel.1"]),
            fdb: await c.exec(h, ["bridge", "fdb", "show", "dev", "flannel.1"]),
          });
          await waitFor(`${h.name} to program the good lease`, async () => {
            const d = await dump();
            return d.routes.includes(
              "198.19.210.0/24 via 198.19.210.0 dev flannel.1 proto 87 onlink",
            ) &&
              d.neigh.includes("198.19.210.0 lladdr 0a:00:00:00:02:10 PERMANENT") &&
              d.fdb.includes("0a:00:00:00:02:10 dst 198.18.0.210 self permanent");
          }, { timeoutMs: 20_000, intervalMs: 200 });
          const d = await dump();
          for (const net of ["198.19.200.", "198.19.201.", "198.19.202.", "198.19.203."]) {
            assert.ok(!d.routes.includes(net), `${h.name} routes ${net}0/24:\n${d.routes}`);
            assert.ok(
              !d.neigh.includes(net),
              `${h.name} has a neighbour in ${net}0/24:\n${d.neigh}`,
            );
          }
          for (const bad of ["0.0.0.0", "255.255.255.255", "01:00:5e", "00:00:00:00:00:00"]) {
            assert.ok(!d.fdb.includes(bad), `${h.name} fdb has ${bad}:\n${d.fdb}`);
          }
          assert.ok(!d.routes.startsWith("default via 198.19."), d.routes);
          const log = await c.logs(h);
          assert.doesNotMatch(log, /could not program|failed to (apply|reconcile)/, h.name);
          assert.doesNotMatch(log, /0\.0\.0\.0-0&/, `${h.name} logged the IPv6-only lease`);
        }
      } finally {
        await r.close();
      }
    });
  },
});

Deno.test({
  name:
    "peer addresses: a stale duplicate of a live peer (same VTEP), deleted, leaves its FDB entry",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await withCluster({ hosts: 2, registry: "kv", podsPerHost: 1 }, async (c) => {
      await c.startAll({ backend: "vxlan", extraArgs: ["--iptables-forward-rules=false"] });
      await c.waitPeersProgrammed();
      const [h1, h2] = c.hosts;
      const [p1, p2] = c.pods();
      const r = await openKvRegistry({ path: c.kvPath! });
      try {
        const live = (await r.listLeases()).leases.find((l) => l.value.includes(`"${h2.ip}"`))!;
        const mac = JSON.parse(live.value).BackendData.VtepMAC as string;
        const fdbLine = `${mac} dst ${h2.ip} self permanent`;
        const dup = "198.19.220.0-24";
        assert.ok(await r.createLease(dup, live.value, 600));
        const routes = () => c.exec(h1, ["ip", "route", "show", "table", "main"]);
        await waitFor(
          "the duplicate programmed on h1",
          async () => (await routes()).includes("198.19.220.0/24 via 198.19.220.0 dev flannel.1"),
          {
            timeoutMs: 20_000,
            intervalMs: 200,
          },
        );
        assert.ok(await r.deleteLease(dup));
        await waitFor(
          "the duplicate's route gone on h1",
          async () => !(await routes()).includes("198.19.220.0/24"),
          { timeoutMs: 20_000, intervalMs: 200 },
        );
        const fdb = await c.exec(h1, ["bridge", "fdb", "show", "dev", "flannel.1"]);
        assert.ok(fdb.includes(fdbLine), `h2's FDB entry went with its duplicate:\n${fdb}`);
        const neigh = await c.exec(h1, ["ip", "neigh", "show", "dev", "flannel.1"]);
        assert.ok(!neigh.includes("198.19.220.0 "), `the duplicate's neighbour stayed:\n${neigh}`);
        // And traffic to h2's pods still goes (a lost echo on a loaded machine is not the point).
        assert.ok((await c.ping(p1, p2, { count: 3, timeoutS: 3 })).received >= 1);
      } finally {
        await r.close();
      }
    });
  },
});
