/**
 * The node's own lease and subnet against hostile neighbours (issue 10, defects 2 and 4), with
 * real agent processes in namespaces:
 * - two hosts started with the same --public-ip: the second is not ready and names the
 *   conflict, the first keeps its lease, which never flaps; when the first is gone, the second
 *   takes the address over. A restarted agent (same node id file) takes its lease straight back.
 * - a route sending the node's own subnet away from its pods: an operator's keeps the node not
 *   ready, naming it; one marked as weft's is removed.
 */
import assert from "node:assert/strict";
import { withCluster } from "../kit/cluster.ts";
import { sleep, waitFor } from "../kit/proc.ts";
import { formatCidr } from "../../src/base/ipv4.ts";
import { openKvRegistry } from "../../src/registry/kv/mod.ts";
import { LeaseDecoder } from "../../src/lease/decode.ts";

const SHARED_IP = "198.18.0.250";

Deno.test({
  name: "two hosts with one --public-ip: the second waits not ready naming the conflict, " +
    "the lease never flaps, and it takes over when the first is gone",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await withCluster({ hosts: 2, registry: "kv" }, async (c) => {
      const [h1, h2] = c.hosts;
      const opts = (port: number) => ({
        backend: "alloc",
        ttl: 4,
        healthzPort: port,
        extraArgs: ["--iptables-forward-rules=false", "--public-ip", SHARED_IP],
      });
      const a1 = c.startAgent(h1, opts(9911));
      await a1.waitReady();
      const reg = await openKvRegistry({ path: c.kvPath! });
      try {
        const shared = async () =>
          new LeaseDecoder().decodeAll((await reg.listLeases()).leases)
            .filter((l) => l.attrs.publicIP === SHARED_IP);
        const held = await shared();
        assert.equal(held.length, 1);
        const key = held[0].key;
        const nodeIdOf = async () => (await shared()).find((l) => l.key === key)?.attrs.nodeId;
        const first = await nodeIdOf();
        assert.equal(first, (await Deno.readTextFile(`${h1.dir}/node-id`)).trim());

        // A restart keeps the host's identity and takes the lease straight back, no claim.
        await a1.restart();
        await a1.waitReady();
        assert.equal(await nodeIdOf(), first);

        const a2 = c.startAgent(h2, opts(9912));
        await waitFor("h2 not ready, naming the conflict", async () => {
          const r = await a2.readyzText();
          return r.code === 503 && r.body.includes(SHARED_IP) && r.body.includes(first);
        }, { timeoutMs: 30_000, intervalMs: 200 });
        // Never flaps: through renewals (TTL 4 s: one every 2 s) h1 keeps it and stays ready.
        await sleep(5000);
        assert.equal(await nodeIdOf(), first);
        assert.equal(await a1.readyz(), 200);
        assert.equal((await a2.readyzText()).code, 503);
        assert.equal((await shared()).length, 1);
        assert.match(a1.log(), /claimed lease .*this node keeps it/);

        // The first host goes away for good: its lease expires, the second takes the address.
        await a1.stop("SIGKILL");
        await waitFor("h2 ready", async () => (await a2.readyz()) === 200, {
          timeoutMs: 40_000,
          intervalMs: 200,
        });
        const now = await shared();
        assert.equal(now.length, 1);
        assert.equal(now[0].attrs.nodeId, (await Deno.readTextFile(`${h2.dir}/node-id`)).trim());
      } finally {
        await reg.close();
      }
    });
  },
});

Deno.test({
  name:
    "a route sending the own subnet away: an operator's keeps the node not ready, weft's is removed",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await withCluster({ hosts: 1, registry: "kv" }, async (c) => {
      const [h1] = c.hosts;
      const agent = c.startAgent(h1, {
        backend: "vxlan",
        healthzPort: 9913,
        extraArgs: ["--iptables-forward-rules=false"],
      });
      await agent.waitReady();
      const subnet = (await c.readSubnetEnv(h1))!.subnet;
      const own = formatCidr(subnet);

      // An operator's static route for the own subnet via the underlay: named, not touched.
      const underlayGw = h1.ip.replace(/\.\d+$/, ".254");
      await c.exec(h1, ["ip", "route", "add", own, "via", underlayGw, "dev", "eth0"]);
      await waitFor("not ready, naming the route", async () => {
        const r = await agent.readyzText();
        return r.code === 503 && r.body.includes(`own subnet ${own}`) &&
          r.body.includes(`ip route del ${own} via ${underlayGw} dev eth0`);
      }, { timeoutMs: 30_000, intervalMs: 200 });
      assert.match(await c.exec(h1, ["ip", "route", "show", own]), new RegExp(underlayGw));
      await c.exec(h1, ["ip", "route", "del", own, "via", underlayGw, "dev", "eth0"]);
      await waitFor("ready again", async () => (await agent.readyz()) === 200, {
        timeoutMs: 30_000,
        intervalMs: 200,
      });

      // A route into the overlay, marked as weft's (a stale peer route): removed.
      await c.exec(h1, ["ip", "route", "add", own, "dev", "flannel.1", "proto", "87"]);
      await waitFor(
        "weft's stray route removed",
        async () => (await c.exec(h1, ["ip", "route", "show", own])).trim() === "",
        {
          timeoutMs: 30_000,
          intervalMs: 200,
        },
      );
      assert.equal(await agent.readyz(), 200);
      assert.match(
        agent.log(),
        new RegExp(`removed weft's route ${own} dev flannel\\.1`),
      );
    });
  },
});
