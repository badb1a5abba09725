/**
 * Dual stack with a node in flanneld's shoes (vxlan, etcd): two weft nodes and one node whose
 * state is made by hand exactly as flanneld makes it for a dual-stack network: its lease under
 * flannel's `<v4>-<len>&<v6>-<len>` key with `PublicIPv6` and `BackendV6Data`, its `flannel.1`
 * and `flannel-v6.1` devices and per-peer entries of both families, read from the weft nodes'
 * leases as flanneld reads them. Pods on all three reach each other over IPv4 and IPv6.
 */
import { flannelPeer } from "../kit/flannel_peer.ts";
import assert from "node:assert/strict";
import { withCluster } from "../kit/cluster.ts";
import { waitFor } from "../kit/proc.ts";
import { formatIp, parseCidr } from "../../src/base/ipv4.ts";
import { formatIp6, parseCidr6 } from "../../src/base/ipv6.ts";

const MAC4 = "c6:d2:32:6f:8f:44";
const MAC6 = "c6:d2:32:6f:8f:66";
const SUBNET4 = "198.19.200.0/24";
const SUBNET6 = "2001:db8:1:c8::/64";

Deno.test({
  name: "interop dual stack: weft nodes and a flanneld-format dual-stack node on one etcd prefix",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await withCluster({ hosts: 3, registry: "etcd", ipv6: true }, async (c) => {
      const [h1, h2, h3] = c.hosts;
      const etcdctl = (...a: string[]) => c.etcd!.etcdctl(...a);
      const opts = {
        backend: "vxlan",
        ttl: 60,
        netConfig: { EnableIPv6: true, IPv6Network: c.network6 },
        extraArgs: ["--iptables-forward-rules=false"],
      };
      c.startAgent(h1, opts);
      c.startAgent(h2, opts);
      await Promise.all([h1.agent!.waitReady(), h2.agent!.waitReady()]);

      // The flanneld node's lease, as flanneld writes a dual-stack one, under an etcd lease.
      const grant = await etcdctl("lease", "grant", "600");
      const leaseId = /lease ([0-9a-f]+) granted/.exec(grant)![1];
      const key = `${c.etcdPrefix}/subnets/198.19.200.0-24&2001:db8:1:c8::-64`;
      const value = `{"PublicIP":"${h3.ip}","PublicIPv6":"${h3.ip6}","BackendType":"vxlan",` +
        `"BackendData":{"VNI":1,"VtepMAC":"${MAC4}"},"BackendV6Data":{"VNI":1,"VtepMAC":"${MAC6}"}}`;
      await etcdctl("put", `--lease=${leaseId}`, key, value);

      // flanneld's side: its regex over the keys, its fields from the values.
      const lines = (await etcdctl("get", "--prefix", `${c.etcdPrefix}/subnets/`)).trim()
        .split("\n");
      const peers: { s4: string; s6: string; ip: string; ip6: string; m4: string; m6: string }[] =
        [];
      for (let i = 0; i < lines.length; i += 2) {
        if (lines[i] === key) continue;
        const m = /(\d+\.\d+.\d+.\d+)-(\d+)(?:&([a-f\d:]+)-(\d+))?$/.exec(lines[i]);
        assert.ok(m && m[3], `not a dual-stack key as flanneld parses it: ${lines[i]}`);
        const v = JSON.parse(lines[i + 1]);
        peers.push({
          s4: `${m[1]}/${m[2]}`,
          s6: `${m[3]}/${m[4]}`,
          ip: v.PublicIP,
          ip6: v.PublicIPv6,
          m4: v.BackendData.VtepMAC,
          m6: v.BackendV6Data.VtepMAC,
        });
      }
      assert.equal(peers.length, 2);
      const sh = (...cmd: string[]) => c.exec(h3, cmd);
      const vtep = async (dev: string, mac: string, local: string, mtu: number, addr: string) => {
        await sh(
          "ip",
          "link",
          "add",
          dev,
          "address",
          mac,
          "type",
          "vxlan",
          "id",
          "1",
          "local",
          local,
          "dev",
          "eth0",
          "dstport",
          "8472",
          "nolearning",
        );
        await sh("ip", "link", "set", dev, "mtu", String(mtu));
        await sh("ip", "addr", "add", addr, "dev", dev);
        await sh("ip", "link", "set", dev, "up");
      };
      await vtep("flannel.1", MAC4, h3.ip, 1450, `${formatIp(parseCidr(SUBNET4).ip)}/32`);
      await vtep("flannel-v6.1", MAC6, h3.ip6!, 1430, `${formatIp6(parseCidr6(SUBNET6).ip)}/128`);
      for (const p of peers) {
        const gw4 = formatIp(parseCidr(p.s4).ip);
        const gw6 = formatIp6(parseCidr6(p.s6).ip);
        await flannelPeer(sh, { dev: "flannel.1", subnet: p.s4, gw: gw4, mac: p.m4, dst: p.ip });
        await flannelPeer(sh, {
          dev: "flannel-v6.1",
          subnet: p.s6,
          gw: gw6,
          mac: p.m6,
          dst: p.ip6,
        });
      }
      await c.writeSubnetEnv(h3, {
        FLANNEL_NETWORK: "198.19.0.0/16",
        FLANNEL_SUBNET: "198.19.200.1/24",
        FLANNEL_IPV6_NETWORK: c.network6,
        FLANNEL_IPV6_SUBNET: "2001:db8:1:c8::1/64",
        FLANNEL_MTU: 1430,
        FLANNEL_IPMASQ: false,
      });
      for (const h of c.hosts) await c.addPod(h);

      // The weft nodes program flannel's entries of both families for the flanneld node.
      for (const h of [h1, h2]) {
        await waitFor(`${h.name} to program the flanneld node in both families`, async () => {
          const r6 = await c.exec(h, ["ip", "-6", "route", "show", SUBNET6]);
          assert.match(r6, /2001:db8:1:c8::\/64 via 2001:db8:1:c8:: dev flannel-v6\.1 proto 87/);
          const fdb6 = await c.exec(h, ["bridge", "fdb", "show", "dev", "flannel-v6.1"]);
          assert.ok(fdb6.includes(`${MAC6} dst ${h3.ip6} self permanent`), fdb6);
          const r4 = await c.exec(h, ["ip", "route", "show", SUBNET4]);
          assert.match(
            r4,
            /198\.19\.200\.0\/24 via 198\.19\.200\.0 dev flannel\.1 proto 87 onlink/,
          );
          return true;
        }, { timeoutMs: 10_000 });
      }
      await c.waitPeersProgrammed();
      const m4 = await c.pingMatrix({ count: 2 });
      assert.ok(m4.ok, `IPv4 ping matrix failed: ${JSON.stringify(m4.failed)}`);
      // The weft nodes' IPv6 routes to each other arrive by the watch: wait, then ping.
      for (const [h, o] of [[h1, h2], [h2, h1]] as const) {
        const s6 = (await c.readSubnetEnv(o))!.ipv6!.subnet;
        await waitFor(
          `${h.name}: IPv6 route to ${o.name}`,
          async () =>
            (await c.exec(h, ["ip", "-6", "route", "show", "proto", "87"])).includes(
              `${formatIp6(s6.ip)}/64 via`,
            ),
          { timeoutMs: 10_000 },
        );
      }
      const m6 = await c.pingMatrix({ count: 2, family: 6 });
      assert.ok(m6.ok, `IPv6 ping matrix failed: ${JSON.stringify(m6.failed)}`);
    });
  },
});
