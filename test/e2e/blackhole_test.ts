/**
 * `--ip-blackhole-route` on real hosts (namespaces from the harness): the agent installs
 * `blackhole <own subnet> metric 4294967295`, next to the bridge's own route for the subnet
 * (which keeps winning, so local and remote pods stay reachable); without the bridge route,
 * traffic to an unused address of the subnet is dropped instead of taking the default route; a
 * hand-deleted blackhole route comes back; a restart without the flag removes it, and so does
 * `weft cleanup`.
 */
import assert from "node:assert/strict";
import { withCluster } from "../kit/cluster.ts";
import { waitFor } from "../kit/proc.ts";
import { formatCidr, formatIp } from "../../src/base/ipv4.ts";

interface IpRoute {
  type?: string;
  dst: string;
  metric?: number;
  dev?: string;
}

Deno.test({
  name: "--ip-blackhole-route: installed beside the bridge route, repaired, removed when off",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await withCluster({ hosts: 2, registry: "kv", podsPerHost: 1 }, async (c) => {
      const opts = {
        backend: "vxlan",
        extraArgs: ["--iptables-forward-rules=false", "--ip-blackhole-route"],
      };
      await c.startAll(opts);
      const [h1] = c.hosts;
      const [p1, p2] = c.pods();
      const own = formatCidr((await c.readSubnetEnv(h1))!.subnet);
      const blackholes = async () =>
        (JSON.parse(
          await c.exec(h1, ["ip", "-j", "route", "show", "type", "blackhole"]),
        ) as IpRoute[]).map((r) => `${r.dst} metric ${r.metric ?? 0}`);

      // Installed, with the lowest priority.
      await waitFor("the blackhole route", async () => (await blackholes()).length > 0, {
        timeoutMs: 10_000,
      });
      assert.deepEqual(await blackholes(), [`${own} metric 4294967295`]);

      // The bridge's route for the subnet wins: the local pod and the remote one answer (once
      // each host has the other: a peer that started later arrives by the watch).
      await c.waitPeersProgrammed();
      assert.equal((await c.ping(h1, p1, { count: 1, timeoutS: 2 })).received, 1);
      assert.equal((await c.ping(p2, p1, { count: 1, timeoutS: 2 })).received, 1);

      // Without the bridge route, an unused address of the subnet hits the blackhole.
      const unused = formatIp((await c.readSubnetEnv(h1))!.subnet.ip + 250);
      const viaBridge = await c.exec(h1, ["ip", "route", "get", unused]);
      assert.match(viaBridge, /dev cni0/, viaBridge);
      await c.exec(h1, ["ip", "route", "del", own, "dev", "cni0"]);
      const dropped = await c.run(h1, ["ip", "route", "get", unused]);
      assert.match(dropped.stdout + dropped.stderr, /blackhole|Invalid argument/);
      await c.exec(h1, ["ip", "route", "add", own, "dev", "cni0", "proto", "kernel"]);

      // Deleted by hand: back within the 5 s re-check.
      await c.exec(h1, ["ip", "route", "del", "blackhole", own, "metric", "4294967295"]);
      await waitFor("the blackhole route back", async () => (await blackholes()).length === 1, {
        timeoutMs: 15_000,
        intervalMs: 250,
      });

      // Restarted without the flag: removed.
      await h1.agent!.stop("SIGTERM");
      await c.startAgent(h1, { ...opts, extraArgs: ["--iptables-forward-rules=false"] })
        .waitReady();
      await waitFor("the blackhole route gone", async () => (await blackholes()).length === 0, {
        timeoutMs: 10_000,
      });

      // With the flag again, then `weft cleanup` after the agent stopped: removed too.
      await h1.agent!.stop("SIGTERM");
      await c.startAgent(h1, opts).waitReady();
      await waitFor("the blackhole route", async () => (await blackholes()).length === 1, {
        timeoutMs: 10_000,
      });
      await h1.agent!.stop("SIGTERM");
      const out = await c.weftOk(h1, c.cleanupArgs(h1), { timeoutMs: 30_000 });
      assert.match(out, new RegExp(`blackhole ${own.replaceAll(".", "\\.")}`), out);
      assert.deepEqual(await blackholes(), []);
    });
  },
});
