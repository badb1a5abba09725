/**
 * Fault matrix, etcd (issue 10): 4 hosts in network namespaces, vxlan, a real etcd on the
 * registry host (reached over the underlay), lease TTL 4 s, one pod on h1..h3. One cluster; each
 * step starts from a converged cluster and ends with every host converged (exact flannel.1
 * entries, one lease per agent, nothing stale: test/kit/faults.ts), the ping matrix complete, and
 * what /readyz said during the fault recorded and asserted.
 *
 * 1. etcd down for 3 TTLs: pods keep pinging with zero loss, every agent stays ready (only the
 *    registry is gone, the datapath is whole), the same leases afterwards.
 * 2. h3's underlay cut for longer than the TTL: its lease expires, the others drop it exactly,
 *    h3 keeps its datapath and stays ready (it cannot tell this from a registry outage); healed,
 *    h3 takes its subnet back and everything converges.
 * 3. h3's agent frozen (SIGSTOP) past the TTL: the others drop its routes, its /readyz does not
 *    answer; after SIGCONT it re-acquires its subnet and everything converges.
 * 4. h3's lease deleted every second for a minute: afterwards converged, zero stale entries.
 * 5. every agent restarted from scratch (no lease, no subnet.env) and etcd killed while they
 *    acquire, then restarted: distinct leases, no duplicate, no orphan past the TTL.
 *
 * etcd is stopped with SIGKILL only (a graceful stop's HTTP/2 GOAWAY can crash Deno 2.9.6
 * processes holding a grpc-js connection; see test/kit/etcd.ts).
 */
import assert from "node:assert/strict";
import { type Cluster, type Pod, withCluster } from "../kit/cluster.ts";
import {
  assertAll,
  assertPingMatrix,
  convergenceProblems,
  deleteLease,
  leaseOf,
  listLeases,
  partition,
  type ReadyzSample,
  recordReadyz,
  summarizeReadyz,
  waitConverged,
} from "../kit/faults.ts";
import { sleep, waitFor } from "../kit/proc.ts";

const TTL = 4;
const HEALTHZ_PORT = 9181;

/** Pods ping along a ring (p1→p2→p3→p1) every 0.2 s for `seconds`. */
function pingRing(c: Cluster, pods: Pod[], seconds: number) {
  return Promise.all(pods.map(async (a, i) => {
    const b = pods[(i + 1) % pods.length];
    const r = await c.ping(a, b, { count: Math.ceil(seconds / 0.2), intervalS: 0.2, timeoutS: 1 });
    return { from: a.name, to: b.name, ...r };
  }));
}

Deno.test({
  name: "fault matrix (etcd): outage, partition, SIGSTOP, flapping peer, restart during allocation",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    await withCluster({ hosts: 4, registry: "etcd" }, async (c) => {
      await c.startAll({
        ttl: TTL,
        healthzPort: HEALTHZ_PORT,
        extraArgs: ["--iptables-forward-rules=false"],
      });
      for (const h of ["h1", "h2", "h3"]) await c.addPod(h);
      await waitConverged(c);
      await assertPingMatrix(c, "before any fault");
      const h3 = c.host("h3");

      await t.step("registry outage longer than the TTL", async () => {
        const before = await listLeases(c);
        const pinging = pingRing(c, c.pods(), 3 * TTL + 3);
        await sleep(1000);
        const rec = recordReadyz(c);
        await c.etcd!.kill();
        await sleep(3 * TTL * 1000);
        for (const h of c.hosts) assert.equal(h.agent!.status, null, `${h.name} exited`);
        const samples = await rec.stop();
        await c.etcd!.restart();
        console.log(`outage: readiness ${summarizeReadyz(samples)}`);
        assertAll(samples, ["h1", "h2", "h3", "h4"], 200, "only the registry is down: stay ready");
        const pings = await pinging;
        for (const p of pings) {
          assert.equal(p.received, p.sent, `${p.from}→${p.to} lost echoes during the outage`);
        }
        await waitConverged(c, 20_000);
        assert.deepEqual(await listLeases(c), before, "the same leases after the outage");
        await assertPingMatrix(c, "after the outage");
      });

      await t.step("underlay partition of h3 longer than the TTL, healed", async () => {
        const lease = (await leaseOf(c, h3))!;
        const rec = recordReadyz(c);
        let heal = () => Promise.resolve();
        let samples: ReadyzSample[] = [];
        try {
          heal = await partition(c, h3);
          const until = Date.now() + 2 * TTL * 1000;
          // h3 cannot renew: its lease expires and the others forget it, exactly.
          await waitConverged(c, (TTL + 10) * 1000, { exclude: [h3] });
          // h3 keeps its datapath to the others meanwhile.
          const routes = (await c.routes(h3)).map((r) => r.dst);
          for (const h of ["h1", "h2", "h4"]) {
            const l = (await leaseOf(c, c.host(h)))!;
            assert.ok(routes.includes(l.subnet), `h3 dropped its route to ${h} (${l.subnet})`);
          }
          const cut = await c.ping(c.host("h1").pods[0], h3.pods[0], { count: 1, timeoutS: 1 });
          assert.equal(cut.received, 0, "the partition lets pings through");
          await sleep(until - Date.now()); // cut off for at least 2 TTLs
        } finally {
          samples = await rec.stop();
          await heal();
        }
        console.log(`partition: readiness ${summarizeReadyz(samples)}`);
        assertAll(samples, ["h1", "h2", "h4"], 200, "the others are untouched: stay ready");
        // h3 cannot tell a partition from a registry outage: it keeps its datapath and stays
        // ready, as in step 1 (it must stay responsive).
        assertAll(samples, ["h3"], 200, "h3 keeps answering and keeps its datapath");
        await waitConverged(c, 30_000);
        assert.equal((await leaseOf(c, h3))!.subnet, lease.subnet, "h3 got its subnet back");
        await assertPingMatrix(c, "after the partition healed");
      });

      await t.step("agent SIGSTOP longer than the TTL, then SIGCONT", async () => {
        const lease = (await leaseOf(c, h3))!;
        const rec = recordReadyz(c, 1000);
        const until = Date.now() + 2 * TTL * 1000;
        h3.agent!.signal("SIGSTOP");
        let samples: ReadyzSample[] = [];
        try {
          await waitConverged(c, (TTL + 10) * 1000, { exclude: [h3] });
          await sleep(until - Date.now()); // frozen for at least 2 TTLs
        } finally {
          h3.agent!.signal("SIGCONT");
          samples = await rec.stop();
        }
        console.log(`SIGSTOP: readiness ${summarizeReadyz(samples)}`);
        assertAll(samples, ["h1", "h2", "h4"], 200, "the others stay ready");
        assert.ok(
          samples.some((s) => s.host === "h3" && s.code === null),
          `a frozen agent answered /readyz: ${summarizeReadyz(samples)}`,
        );
        await waitConverged(c, 20_000);
        assert.equal((await leaseOf(c, h3))!.subnet, lease.subnet, "h3 got its subnet back");
        await assertPingMatrix(c, "after SIGCONT");
      });

      await t.step("a peer flapping every second for a minute", async () => {
        const lease = (await leaseOf(c, h3))!;
        const logFrom = (await c.logs(h3)).length;
        const reacquired = async () =>
          (await c.logs(h3)).slice(logFrom).match(/was deleted or taken over/g)?.length ?? 0;
        const rec = recordReadyz(c, 1000);
        for (let i = 0; i < 60; i++) {
          const t0 = Date.now();
          // Each delete removes a lease h3 holds: h3 must have re-created the last one.
          await waitFor(`h3's lease back (flap ${i})`, () => leaseOf(c, h3), { timeoutMs: 5000 });
          await deleteLease(c, lease.key);
          await sleep(1000 - (Date.now() - t0));
        }
        const samples = await rec.stop();
        await waitFor("h3 to log 60 re-acquisitions", async () => (await reacquired()) >= 60, {
          timeoutMs: 10_000,
        });
        console.log(
          `flapping: ${await reacquired()} re-acquisitions; readiness ${summarizeReadyz(samples)}`,
        );
        assertAll(samples, ["h1", "h2", "h4"], 200, "the others stay ready");
        await waitConverged(c, 20_000);
        assert.equal((await leaseOf(c, h3))!.subnet, lease.subnet, "h3 kept its subnet");
        await assertPingMatrix(c, "after the flapping");
      });

      await t.step("etcd restart while every agent acquires a lease", async () => {
        await Promise.all(c.hosts.map((h) => h.agent!.kill()));
        await c.etcd!.etcdctl("del", "--prefix", `${c.etcdPrefix}/subnets/`);
        for (const h of c.hosts) await Deno.remove(h.subnetFile);
        const logged = new Map(c.hosts.map((h) => [h, 0]));
        for (const h of c.hosts) logged.set(h, (await c.logs(h)).length);
        for (const h of c.hosts) await h.agent!.restart();
        // Kill etcd once two agents are past their config and about to list and create.
        await waitFor("two agents to reach allocation", async () => {
          let n = 0;
          for (const h of c.hosts) {
            if ((await c.logs(h)).slice(logged.get(h)).includes("using interface")) n++;
          }
          return n >= 2;
        }, { timeoutMs: 30_000, intervalMs: 50 });
        const rec = recordReadyz(c);
        await c.etcd!.kill();
        await sleep(2000);
        await c.etcd!.restart();
        await Promise.all(c.hosts.map((h) => h.agent!.waitReady(30_000)));
        const samples = await rec.stop();
        let retries = 0;
        for (const h of c.hosts) {
          const log = (await c.logs(h)).slice(logged.get(h));
          retries += log.match(/cannot (read leases|acquire a lease)/g)?.length ?? 0;
        }
        console.log(
          `allocation: ${retries} registry retries; readiness ${summarizeReadyz(samples)}`,
        );
        // Distinct leases, one per agent, no orphan left by a create whose reply was lost
        // (bounded by a TTL past the restart and more).
        await waitConverged(c, (TTL + 20) * 1000);
        const leases = await listLeases(c);
        assert.equal(new Set(leases.map((l) => l.subnet)).size, 4, JSON.stringify(leases));
        // The hosts' subnets changed: pods move with them, as a CNI re-ADD would.
        for (const h of c.hosts) {
          for (const p of [...h.pods]) await c.removePod(p);
          await c.run(h, ["ip", "link", "del", "cni0"]);
        }
        for (const h of ["h1", "h2", "h3"]) await c.addPod(h);
        assert.deepEqual(await convergenceProblems(c), []);
        await assertPingMatrix(c, "after the re-allocation");
      });
    });
  },
});
