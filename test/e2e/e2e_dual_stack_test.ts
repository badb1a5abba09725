/**
 * Dual stack on host-gw: three hosts with IPv4 and IPv6 underlay addresses (KV registry), one
 * lease per host holding both halves, IPv6 routes via each peer's PublicIPv6 beside the IPv4 ones
 * (marked proto 87), pods reaching each other over both families, a route deleted by hand put
 * back, a peer's removal taking both families' routes with it, and `weft cleanup` removing both
 * families' routes and nothing else.
 */
import assert from "node:assert/strict";
import { withCluster } from "../kit/cluster.ts";
import { waitFor } from "../kit/proc.ts";
import { openKvRegistry } from "../../src/registry/kv/mod.ts";
import { formatCidr6 } from "../../src/base/ipv6.ts";
import { formatCidr } from "../../src/base/ipv4.ts";

Deno.test({
  name: "dual stack host-gw: 3 hosts, pods ping over IPv4 and IPv6, routes per family, removal",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await withCluster({ hosts: 3, registry: "kv", ipv6: true }, async (c) => {
      await c.startAll({
        backend: "host-gw",
        netConfig: { EnableIPv6: true, IPv6Network: c.network6 },
        // The self-checks (every 5 s) put back a route deleted by hand.
        extraArgs: ["--iptables-forward-rules=false"],
      });
      const envs = await Promise.all(c.hosts.map(async (h) => (await c.readSubnetEnv(h))!));
      for (const e of envs) {
        assert.ok(e.ipv6, "subnet.env has the IPv6 lines");
        assert.equal(formatCidr6(e.ipv6.network), "2001:db8:1::/56");
        assert.equal(e.ipv6.subnet.prefix, 64);
      }
      // Each lease: both halves in the key, PublicIPv6 in the value.
      const r = await openKvRegistry({ path: c.kvPath!, pollMs: 50 });
      try {
        const { leases } = await r.listLeases();
        assert.equal(leases.length, 3);
        for (const [i, h] of c.hosts.entries()) {
          const key = `${formatCidr(envs[i].subnet).replace("/", "-")}&${
            formatCidr6(envs[i].ipv6!.subnet).replace("/", "-")
          }`;
          const l = leases.find((x) => x.key === key);
          assert.ok(l, `${h.name}: no lease ${key} in ${leases.map((x) => x.key)}`);
          assert.match(
            l.value,
            new RegExp(`^\\{"PublicIP":"${h.ip}","PublicIPv6":"${h.ip6}","BackendType":"host-gw"`),
          );
        }
        await c.waitPeersProgrammed();
        // Exact IPv6 routes on every host: each peer's IPv6 subnet via its PublicIPv6.
        const v6routes = (h: typeof c.hosts[0]) =>
          c.exec(h, ["ip", "-6", "route", "show", "proto", "87"]);
        const want6 = (h: typeof c.hosts[0], peers = c.hosts) =>
          peers.filter((p) => p !== h).map((p) => {
            const e = envs[c.hosts.indexOf(p)];
            return `${formatCidr6(e.ipv6!.subnet)} via ${p.ip6} dev eth0 metric 1024 pref medium`;
          }).sort();
        const lines = async (h: typeof c.hosts[0]) =>
          (await v6routes(h)).trim().split("\n").filter(Boolean).sort();
        for (const h of c.hosts) {
          await waitFor(`${h.name}: IPv6 routes to both peers`, async () => {
            assert.deepEqual(await lines(h), want6(h));
            return true;
          }, { timeoutMs: 20_000, intervalMs: 200 });
        }
        // Pods on every host reach each other over both families.
        for (const h of c.hosts) await c.addPod(h);
        for (const p of c.pods()) assert.ok(p.ip6, `${p.name} has an IPv6 address`);
        const m4 = await c.pingMatrix({ count: 2 });
        assert.ok(m4.ok, `IPv4 pings failed: ${JSON.stringify(m4.failed)}`);
        const m6 = await c.pingMatrix({ count: 2, family: 6 });
        assert.ok(m6.ok, `IPv6 pings failed: ${JSON.stringify(m6.failed)}`);

        // A route deleted by hand comes back (the backend's self-check).
        const [h1, h2, h3] = c.hosts;
        const gone = formatCidr6(envs[1].ipv6!.subnet);
        await c.exec(h1, ["ip", "-6", "route", "del", gone]);
        await waitFor("h1 to put back its IPv6 route to h2", async () => {
          assert.deepEqual(await lines(h1), want6(h1));
          return true;
        }, { timeoutMs: 20_000, intervalMs: 200 });

        // h3 stops (its datapath and lease stay) and its lease is deleted: both families' routes
        // to it go from h1 and h2.
        await h3.agent!.stop();
        const key3 = leases.find((l) =>
          l.key.startsWith(formatCidr(envs[2].subnet).replace("/", "-"))
        )!
          .key;
        assert.ok(await r.deleteLease(key3));
        for (const h of [h1, h2]) {
          await waitFor(`${h.name}: h3's routes removed in both families`, async () => {
            assert.deepEqual(await lines(h), want6(h, [h1, h2]));
            const v4 = await c.exec(h, ["ip", "route", "show", "proto", "87"]);
            assert.ok(!v4.includes(formatCidr(envs[2].subnet)), v4);
            return true;
          }, { timeoutMs: 20_000, intervalMs: 200 });
        }
        const m6b = await c.ping(c.pods()[0], c.pods()[1].ip6!, { count: 2 });
        assert.equal(m6b.received, 2, "h1 to h2 over IPv6 after h3 left");

        // weft cleanup on h1 (agent stopped) removes its routes of both families, nothing else.
        await h1.agent!.stop();
        const before6 = await c.exec(h1, ["ip", "-6", "route", "show"]);
        const cl = await c.weft(h1, c.cleanupArgs(h1), { timeoutMs: 60_000 });
        assert.equal(cl.code, 0, cl.stdout + cl.stderr);
        assert.equal((await v6routes(h1)).trim(), "", "IPv6 routes left after cleanup");
        assert.equal((await c.exec(h1, ["ip", "route", "show", "proto", "87"])).trim(), "");
        const after6 = await c.exec(h1, ["ip", "-6", "route", "show"]);
        assert.deepEqual(
          after6.trim().split("\n").sort(),
          before6.trim().split("\n").filter((l) => !l.includes("proto 87")).sort(),
          "cleanup touched IPv6 routes that are not weft's",
        );
      } finally {
        await r.close();
      }
    });
  },
});
