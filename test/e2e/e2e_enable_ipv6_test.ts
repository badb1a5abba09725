/**
 * Enabling IPv6 on a running IPv4 cluster (host-gw, Deno KV): after `weft config set` with
 * EnableIPv6 and a restart, every node keeps its IPv4 subnet (flanneld would renumber it) and its
 * lease gains an IPv6 half; the old IPv4-only keys are gone and pods reach each other over both.
 */
import assert from "node:assert/strict";
import { withCluster } from "../kit/cluster.ts";
import { formatCidr } from "../../src/base/ipv4.ts";
import { formatCidr6 } from "../../src/base/ipv6.ts";
import { waitFor } from "../kit/proc.ts";
import { openKvRegistry } from "../../src/registry/kv/mod.ts";

Deno.test({
  name: "enabling IPv6 on a running IPv4 cluster keeps every node's IPv4 subnet",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await withCluster({ hosts: 2, registry: "kv", ipv6: true }, async (c) => {
      const args = ["--iptables-forward-rules=false"];
      await c.startAll({ backend: "host-gw", extraArgs: args });
      const before = await Promise.all(c.hosts.map(async (h) => (await c.readSubnetEnv(h))!));
      for (const e of before) assert.equal(e.ipv6, undefined);
      const dual = { EnableIPv6: true, IPv6Network: c.network6 };
      const file = `${c.hosts[0].dir}/dual.json`;
      await Deno.writeTextFile(
        file,
        JSON.stringify({ Network: c.network, ...dual, Backend: { Type: "host-gw" } }),
      );
      const set = await c.weft(c.hosts[0], ["config", "set", file, ...c.registryArgs()]);
      assert.equal(set.code, 0, set.stdout + set.stderr);
      for (const h of c.hosts) {
        await h.agent!.stop();
        // With a healthz port, ready means this start's /readyz: the subnet.env of the first
        // start (written moments ago) cannot pass for the new one.
        c.startAgent(h, {
          backend: "host-gw",
          netConfig: dual,
          extraArgs: args,
          healthzPort: 18080,
        });
      }
      await Promise.all(c.hosts.map((h) => h.agent!.waitReady()));
      const after = await Promise.all(c.hosts.map(async (h) => (await c.readSubnetEnv(h))!));
      const r = await openKvRegistry({ path: c.kvPath!, pollMs: 50 });
      try {
        const keys = (await r.listLeases()).leases.map((l) => l.key).sort();
        for (const [i, e] of after.entries()) {
          assert.equal(formatCidr(e.subnet), formatCidr(before[i].subnet), "IPv4 subnet kept");
          assert.ok(e.ipv6, `${c.hosts[i].name}: subnet.env has no IPv6 lines`);
          const v4key = formatCidr(e.subnet).replace("/", "-");
          assert.ok(keys.some((k) => k.startsWith(`${v4key}&2001:db8:1:`)), keys.join(" "));
          assert.ok(!keys.includes(v4key), `the IPv4-only key ${v4key} was left`);
        }
        assert.equal(keys.length, 2, keys.join(" "));
      } finally {
        await r.close();
      }
      await c.waitPeersProgrammed();
      // Each host's IPv6 route to the other arrives by the watch: wait for it before pinging.
      for (const [i, h] of c.hosts.entries()) {
        const peer = 1 - i;
        const want = `${formatCidr6(after[peer].ipv6!.subnet)} via ${c.hosts[peer].ip6} dev eth0`;
        await waitFor(`${h.name}: IPv6 route to the other host`, async () => {
          const routes = await c.exec(h, ["ip", "-6", "route", "show", "proto", "87"]);
          assert.ok(routes.includes(want), routes);
          return true;
        }, { timeoutMs: 20_000, intervalMs: 200 });
      }
      for (const h of c.hosts) await c.addPod(h);
      const [a, b] = c.pods();
      assert.equal((await c.ping(a, b.ip, { count: 2 })).received, 2, "IPv4 pod to pod");
      assert.equal((await c.ping(a, b.ip6!, { count: 2 })).received, 2, "IPv6 pod to pod");
    });
  },
});
