/**
 * Reliability on real kernels: 3 hosts in network namespaces, vxlan, etcd, one pod per host.
 *
 * 1. etcd is killed for 60 s, three times the lease TTL (20 s). Pods keep pinging each other
 *    every 0.2 s with zero loss, /readyz stays 200 on every agent, the agents log renewal failures
 *    and keep running. etcd stops lease clocks while it is down and re-arms every lease with its
 *    full TTL when it is leader again, so no lease expires across the outage: afterwards the same
 *    leases are there, the agents renew them again (each key rewritten after the restart, expiry
 *    moved past the restart), and a lease written after the outage reaches every agent's
 *    datapath, and its deletion leaves it again (the watch resumed).
 * 2. An agent is killed with SIGKILL and restarted while a pod pings through it: zero loss, and
 *    the restarted agent keeps its subnet.
 *
 * etcd is stopped with SIGKILL only: a graceful stop sends HTTP/2 GOAWAY, which now and then
 * crashes Deno 2.9.6 processes holding a grpc-js connection (see test/kit/etcd.ts).
 *
 * @example
 * ```sh
 * deno test -A test/e2e_reliability_test.ts   # about 100 s
 * ```
 */
import assert from "node:assert/strict";
import { sleep, waitFor } from "../kit/proc.ts";
import { type Cluster, type Pod, withCluster } from "../kit/cluster.ts";
import { formatCidr } from "../../src/base/ipv4.ts";

const TTL = 20;
const OUTAGE_MS = 60_000;
const HEALTHZ_PORT = 9181;
const PING_INTERVAL_S = 0.2;

interface LeaseRow {
  subnet: string;
  publicIP: string;
  expiresAt: string | null;
}

/** `weft leases --json`, run on host h1 against the cluster's etcd. */
async function weftLeases(c: Cluster): Promise<LeaseRow[]> {
  const out = await c.weftOk("h1", ["leases", "--json", ...c.registryArgs()], {
    timeoutMs: 20_000,
    env: { NO_COLOR: "1" },
  });
  return JSON.parse(out) as LeaseRow[];
}

/** etcdctl (v3) inside the registry namespace. */
function etcdctl(c: Cluster, ...args: string[]): Promise<string> {
  return c.exec("reg", ["etcdctl", `--endpoints=${c.etcd!.endpoint}`, ...args], {
    env: { ETCDCTL_API: "3" },
  });
}

/** mod_revision of every lease key, and the store revision they were read at. */
async function leaseRevisions(c: Cluster): Promise<{ rev: number; keys: Map<string, number> }> {
  const r = JSON.parse(
    await etcdctl(c, "get", "--prefix", `${c.etcdPrefix}/subnets/`, "-w", "json"),
  ) as { header: { revision: number }; kvs?: { key: string; mod_revision: number }[] };
  const keys = new Map<string, number>();
  for (const kv of r.kvs ?? []) keys.set(atob(kv.key), Number(kv.mod_revision));
  return { rev: Number(r.header.revision), keys };
}

/** Pings along a ring of pods (p1→p2→p3→p1) for `seconds`; resolves to the three results. */
function pingRing(c: Cluster, pods: Pod[], seconds: number) {
  const count = Math.ceil(seconds / PING_INTERVAL_S);
  return Promise.all(pods.map(async (a, i) => {
    const b = pods[(i + 1) % pods.length];
    const r = await c.ping(a, b, { count, intervalS: PING_INTERVAL_S, timeoutS: 1 });
    return { from: a.name, to: b.name, ...r };
  }));
}

Deno.test({
  name: "reliability: 60 s etcd outage and an agent SIGKILL lose no pod traffic",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await withCluster({ hosts: 3, registry: "etcd", podsPerHost: 1 }, async (c) => {
      const t0 = Date.now();
      await c.startAll({
        backend: "vxlan",
        ttl: TTL,
        healthzPort: HEALTHZ_PORT,
        extraArgs: ["--iptables-forward-rules=false"],
      });
      const pods = c.pods();
      const subnets = await Promise.all(
        c.hosts.map(async (h) => formatCidr((await c.readSubnetEnv(h))!.subnet)),
      );
      // Ready means each agent's own lease is applied; peers started later arrive by the watch.
      await c.waitPeersProgrammed();
      const warm = await c.pingMatrix({ count: 2 });
      assert.ok(
        warm.ok,
        `pods cannot reach each other before the outage: ${JSON.stringify(warm.failed)}`,
      );
      const before = await weftLeases(c);
      assert.deepEqual(
        before.map((l) => `${l.subnet} ${l.publicIP}`).sort(),
        c.hosts.map((h, i) => `${subnets[i]} ${h.ip}`).sort(),
      );
      console.log(`cluster up in ${Date.now() - t0} ms`);

      // ---- 1. etcd down for OUTAGE_MS ----
      let pingsDoneAt = Infinity;
      const pinging = pingRing(c, pods, OUTAGE_MS / 1000 + 15).finally(() =>
        pingsDoneAt = Date.now()
      );
      await sleep(1000);
      const killedAt = Date.now();
      await c.etcd!.kill();
      const readyz: number[] = [];
      const notReady: string[] = [];
      while (Date.now() - killedAt < OUTAGE_MS) {
        for (const h of c.hosts) {
          assert.equal(h.agent!.status, null, `agent on ${h.name} exited during the outage`);
          const code = await h.agent!.readyz();
          readyz.push(code ?? 0);
          if (code !== 200) notReady.push(`${h.name} at ${Date.now() - killedAt} ms: ${code}`);
        }
        await sleep(2000);
      }
      await c.etcd!.restart();
      const backAt = Date.now();
      console.log(
        `etcd down ${backAt - killedAt} ms; ${readyz.length} /readyz probes during it, ` +
          `${notReady.length} not 200`,
      );
      assert.deepEqual(notReady, [], "/readyz must stay 200 while only the registry is down");
      for (const h of c.hosts) {
        const log = await c.logs(h);
        const failures = log.match(/cannot renew lease/g)?.length ?? 0;
        assert.ok(failures > 0, `${h.name} logged no renewal failure during the outage`);
        console.log(`${h.name}: ${failures} renewal failures logged`);
      }

      // Renewals resume: every lease key is rewritten after the restart (only its agent writes
      // it), and `weft leases` shows it expiring a full TTL after the restart or later.
      const atRestart = await leaseRevisions(c);
      const renewWaitAt = Date.now();
      await waitFor("every agent to renew its lease after etcd returned", async () => {
        const now = await leaseRevisions(c);
        return [...atRestart.keys.keys()].every((k) => (now.keys.get(k) ?? 0) > atRestart.rev);
        // etcd re-armed each lease with one TTL on restart: later than that, it would be gone.
      }, { timeoutMs: TTL * 1000, intervalMs: 200 });
      const renewedIn = Date.now() - renewWaitAt;
      const after = await weftLeases(c);
      assert.deepEqual(
        after.map((l) => `${l.subnet} ${l.publicIP}`).sort(),
        before.map((l) => `${l.subnet} ${l.publicIP}`).sort(),
        "leases changed across the outage",
      );
      for (const l of after) {
        const exp = Date.parse(l.expiresAt!);
        const old = Date.parse(before.find((b) => b.subnet === l.subnet)!.expiresAt!);
        assert.ok(exp > old, `${l.subnet}: expiry did not move forward (${l.expiresAt})`);
        assert.ok(
          exp >= backAt + (TTL - 2) * 1000,
          `${l.subnet} expires ${l.expiresAt}, not a TTL after etcd returned`,
        );
      }
      console.log(`all leases renewed ${renewedIn} ms after etcd returned`);

      // The watch resumed: a lease written now is programmed on every host, and its deletion
      // is too.
      const fake = { subnet: "198.19.250.0/24", mac: "0e:00:00:00:00:99", ip: "198.18.0.99" };
      const key = `${c.etcdPrefix}/subnets/198.19.250.0-24`;
      // etcdctl prints the lease id in hex, the form `put --lease` takes.
      const grant = await etcdctl(c, "lease", "grant", "120");
      const leaseId = /lease ([0-9a-f]+) granted/.exec(grant)?.[1];
      assert.ok(leaseId, `unexpected etcdctl lease grant output: ${grant}`);
      await etcdctl(
        c,
        "put",
        `--lease=${leaseId}`,
        key,
        JSON.stringify({
          PublicIP: fake.ip,
          PublicIPv6: null,
          BackendType: "vxlan",
          BackendData: { VNI: 1, VtepMAC: fake.mac },
        }),
      );
      const hasFake = async (h: string) => {
        const routes = await c.routes(h);
        const r = routes.find((x) => x.dst === fake.subnet);
        const fdb = await c.exec(h, ["bridge", "fdb", "show", "dev", "flannel.1"]);
        return r?.gateway === "198.19.250.0" && r.dev === "flannel.1" &&
          fdb.includes(`${fake.mac} dst ${fake.ip}`);
      };
      const putAt = Date.now();
      await waitFor(
        "the post-outage lease on every host",
        async () => (await Promise.all(c.hosts.map((h) => hasFake(h.name)))).every(Boolean),
        { timeoutMs: 15_000, intervalMs: 200 },
      );
      const seenIn = Date.now() - putAt;
      await etcdctl(c, "del", key);
      await waitFor(
        "the deleted lease to leave every host",
        async () => (await Promise.all(c.hosts.map((h) => hasFake(h.name)))).every((x) => !x),
        { timeoutMs: 15_000, intervalMs: 200 },
      );
      console.log(`post-outage lease programmed on all hosts ${seenIn} ms after it was written`);

      const rings = await pinging;
      // The pings started before the kill and ended after etcd was back, so they spanned the
      // outage; a loaded machine may stretch ping's 0.2 s interval, hence only half required.
      assert.ok(pingsDoneAt > backAt, "ping runs ended before etcd returned");
      for (const r of rings) {
        assert.ok(
          r.sent >= 0.5 * (OUTAGE_MS / 1000) / PING_INTERVAL_S,
          `too few pings: ${JSON.stringify(r)}`,
        );
        assert.equal(r.received, r.sent, `pings lost during the etcd outage: ${JSON.stringify(r)}`);
      }
      console.log(`ring pings during the outage: ${rings.map((r) => `${r.received}/${r.sent}`)}`);
      for (const h of c.hosts) {
        assert.doesNotMatch(await c.logs(h), /re-acquiring/, `${h.name} lost its lease`);
      }

      // ---- 2. SIGKILL and restart of h1's agent while p2 pings p1 ----
      const [h1] = c.hosts;
      const [p1, p2] = pods;
      let acrossDoneAt = Infinity;
      const across = c.ping(p2, p1, { count: 100, intervalS: 0.1, timeoutS: 1 }).finally(() =>
        acrossDoneAt = Date.now()
      );
      await sleep(500);
      const k0 = Date.now();
      await h1.agent!.restart("SIGKILL");
      const env = await h1.agent!.waitReady();
      const readyAt = Date.now();
      console.log(`h1 agent back ready ${readyAt - k0} ms after SIGKILL`);
      const pr = await across;
      assert.ok(acrossDoneAt > readyAt, "the pings ended before the agent was back");
      assert.equal(pr.received, pr.sent, `pings lost across the SIGKILL: ${JSON.stringify(pr)}`);
      assert.equal(formatCidr(env.subnet), subnets[0], "subnet changed after SIGKILL + restart");
      const again = await c.pingMatrix({ count: 1 });
      assert.ok(again.ok, `pods unreachable after the restart: ${JSON.stringify(again.failed)}`);
      console.log(`SIGKILL ping ${pr.received}/${pr.sent}; total ${Date.now() - t0} ms`);
    });
  },
});
