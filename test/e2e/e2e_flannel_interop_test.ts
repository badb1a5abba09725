/**
 * Mixed cluster: two weft nodes and one node in flanneld's shoes, on one etcd prefix. The
 * "flanneld" node is made exactly as flanneld v0.28 makes its state: its lease written with
 * flannel's key and JSON under an etcd lease, its flannel.1 device and per-peer entries made by
 * hand from the weft nodes' leases as flanneld reads them. Pods on all three reach each other, so
 * weft reads flanneld's leases and flanneld can read weft's.
 */
import { flannelPeer } from "../kit/flannel_peer.ts";
import assert from "node:assert/strict";
import { withCluster } from "../kit/cluster.ts";
import { waitFor } from "../kit/proc.ts";
import { formatIp, parseCidr } from "../../src/base/ipv4.ts";

const FLANNEL_MAC = "c6:d2:32:6f:8f:44";
const FLANNEL_SUBNET = "198.19.200.0/24";

Deno.test({
  name: "interop: weft nodes and a flanneld-format node share one etcd prefix",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await withCluster({ hosts: 3, registry: "etcd" }, async (c) => {
      const [h1, h2, h3] = c.hosts;
      const etcdctl = (...a: string[]) =>
        c.exec("reg", ["etcdctl", `--endpoints=${c.etcd!.endpoint}`, ...a]);
      const opts = { backend: "vxlan", ttl: 60, extraArgs: ["--iptables-forward-rules=false"] };
      c.startAgent(h1, opts);
      c.startAgent(h2, opts);
      await Promise.all([h1.agent!.waitReady(), h2.agent!.waitReady()]);

      // The flanneld node's lease, byte for byte as flanneld writes it, with an etcd lease TTL.
      const grant = await etcdctl("lease", "grant", "600");
      const leaseId = /lease ([0-9a-f]+) granted/.exec(grant)![1];
      const key = `${c.etcdPrefix}/subnets/${FLANNEL_SUBNET.replace("/", "-")}`;
      const value =
        `{"PublicIP":"${h3.ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"${FLANNEL_MAC}"}}`;
      await etcdctl("put", `--lease=${leaseId}`, key, value);

      // flanneld's side: read the weft nodes' leases exactly as stored and program its kernel.
      const listed = await etcdctl("get", "--prefix", `${c.etcdPrefix}/subnets/`);
      const lines = listed.trim().split("\n");
      const weftLeases: { subnet: string; ip: string; mac: string }[] = [];
      for (let i = 0; i < lines.length; i += 2) {
        const k = lines[i].split("/").pop()!;
        if (lines[i] === key) continue;
        // What flanneld parses: its own LeaseAttrs JSON, field order and all.
        assert.match(
          lines[i + 1],
          // flanneld's fields in its order, then weft's host identity (flanneld ignores it).
          /^\{"PublicIP":"[\d.]+","PublicIPv6":null,"BackendType":"vxlan","BackendData":\{"VNI":1,"VtepMAC":"[0-9a-f:]{17}"\},"WeftNodeID":"[0-9a-f-]{36}"\}$/,
        );
        const v = JSON.parse(lines[i + 1]);
        weftLeases.push({
          subnet: k.replace("-", "/"),
          ip: v.PublicIP,
          mac: v.BackendData.VtepMAC,
        });
      }
      assert.equal(weftLeases.length, 2);
      const sh = (...cmd: string[]) => c.exec(h3, cmd);
      await sh(
        "ip",
        "link",
        "add",
        "flannel.1",
        "address",
        FLANNEL_MAC,
        "type",
        "vxlan",
        "id",
        "1",
        "local",
        h3.ip,
        "dev",
        "eth0",
        "dstport",
        "8472",
        "nolearning",
      );
      await sh("ip", "link", "set", "flannel.1", "mtu", "1450");
      await sh(
        "ip",
        "addr",
        "add",
        `${formatIp(parseCidr(FLANNEL_SUBNET).ip)}/32`,
        "dev",
        "flannel.1",
      );
      await sh("ip", "link", "set", "flannel.1", "up");
      for (const l of weftLeases) {
        const gw = formatIp(parseCidr(l.subnet).ip);
        await flannelPeer(sh, { dev: "flannel.1", subnet: l.subnet, gw, mac: l.mac, dst: l.ip });
      }
      await c.writeSubnetEnv(h3, {
        FLANNEL_NETWORK: "198.19.0.0/16",
        FLANNEL_SUBNET: "198.19.200.1/24",
        FLANNEL_MTU: 1450,
        FLANNEL_IPMASQ: false,
      });
      for (const h of c.hosts) await c.addPod(h);

      // The weft nodes learn the flanneld node from its lease and program flannel's entries.
      // Wait for the exact state asserted (route and fdb entry), not just any flannel.1 route.
      for (const h of [h1, h2]) {
        await waitFor(`${h.name} to program the flanneld node`, async () => {
          const routes = await c.exec(h, ["ip", "route", "show", FLANNEL_SUBNET]);
          // flannel's route, marked as weft's (proto 87, see src/backend/routes.ts).
          assert.match(
            routes,
            /198\.19\.200\.0\/24 via 198\.19\.200\.0 dev flannel\.1 proto 87 onlink/,
          );
          const fdb = await c.exec(h, ["bridge", "fdb", "show", "dev", "flannel.1"]);
          assert.ok(fdb.includes(`${FLANNEL_MAC} dst ${h3.ip} self permanent`), fdb);
          return true;
        }, { timeoutMs: 10_000 });
      }
      // And each other: a weft node that started later reaches the other by the watch.
      await c.waitPeersProgrammed();
      const m = await c.pingMatrix({ count: 2, timeoutS: 2 });
      assert.ok(m.ok, `mixed cluster ping matrix failed: ${JSON.stringify(m.failed)}`);

      // When the flanneld node's etcd lease is revoked (as on its expiry), weft drops its entries.
      await etcdctl("lease", "revoke", leaseId);
      const gone = await waitFor(
        "the departed flanneld node's route to leave h1",
        async () => !(await c.exec(h1, ["ip", "route", "show", FLANNEL_SUBNET])).trim(),
        { timeoutMs: 10_000 },
      ).catch(() => false);
      assert.ok(gone, `route to the departed flanneld node stayed on h1`);
    });
  },
});
