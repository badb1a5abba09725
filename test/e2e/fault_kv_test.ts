/**
 * Fault matrix, Deno KV (issue 10): 3 hosts in network namespaces sharing one KV file, vxlan,
 * lease TTL 4 s, one pod per host; h3's subnet.env lives on a small tmpfs of its own. One
 * cluster; each step starts from a converged cluster and ends with every host converged (exact
 * flannel.1 entries, one lease per agent, nothing stale: test/kit/faults.ts), the ping matrix
 * complete, and what /readyz said during the fault recorded and asserted.
 *
 * 1. h3's underlay cut for 2 TTLs: the registry is a file on the machine, so only the datapath is
 *    cut — h3 keeps renewing, nobody drops anything, every agent stays ready; healed, pings work.
 * 2. h2's agent frozen (SIGSTOP) past the TTL: its lease is reaped, the others drop it exactly,
 *    its /readyz does not answer; after SIGCONT it re-acquires its subnet and all converge.
 * 3. h3's subnet.env directory read-only, then full, while h3 must rewrite subnet.env (its lease
 *    was deleted and is re-acquired): h3 says why in its log and is not ready until the
 *    directory is writable again, then recovers on its own.
 */
import assert from "node:assert/strict";
import { type Cluster, withCluster } from "../kit/cluster.ts";
import {
  assertAll,
  assertPingMatrix,
  deleteLease,
  leaseOf,
  mountSubnetDir,
  partition,
  type ReadyzSample,
  recordReadyz,
  type SubnetDir,
  summarizeReadyz,
  waitConverged,
} from "../kit/faults.ts";
import { sleep, StopWaiting, waitFor } from "../kit/proc.ts";

const TTL = 4;
const HEALTHZ_PORT = 9181;

/**
 * Makes h3 rewrite subnet.env while `fault` is in force: deletes its lease (h3 re-acquires the
 * same subnet and must write subnet.env again), waits until h3 says `logLine` and is not ready,
 * keeps the fault for two more write retries, then `repair`s and waits until h3 is ready again.
 * Returns the /readyz samples.
 */
async function unwritableSubnetDir(
  c: Cluster,
  dir: SubnetDir,
  fault: () => Promise<void>,
  repair: () => Promise<void>,
  logLine: RegExp,
  reason?: RegExp,
): Promise<{ samples: ReadyzSample[]; said: string }> {
  const h3 = c.host("h3");
  const lease = (await leaseOf(c, h3))!;
  const logFrom = (await c.logs(h3)).length;
  const rec = recordReadyz(c);
  let samples: ReadyzSample[] = [];
  let said = "";
  let repaired = false;
  try {
    await fault();
    await deleteLease(c, lease.key);
    await waitFor("h3 to report that it cannot write subnet.env", async () => {
      const log = (await c.logs(h3)).slice(logFrom);
      if (!logLine.test(log)) throw new Error(`no ${logLine} in h3's log yet`);
      return (await h3.agent!.readyz()) !== 200;
    }, { timeoutMs: 20_000, intervalMs: 200 });
    await sleep(7000); // two retries of the write (every 3 s) with the fault in place
    const during = await h3.agent!.readyzText();
    said = `/readyz ${during.code} "${during.body}"; log: ${
      (await c.logs(h3)).slice(logFrom).match(new RegExp(`.*${logLine.source}.*`))?.[0]
    }`;
    assert.equal(during.code, 503, "h3 is ready while subnet.env cannot be written");
    if (reason) assert.match(during.body, reason, "/readyz must name the cause");
    await repair();
    repaired = true;
    await waitFor("h3 ready again", async () => (await h3.agent!.readyz()) === 200, {
      timeoutMs: 20_000,
      intervalMs: 200,
    });
  } finally {
    if (!repaired) await repair().catch(() => {});
    samples = await rec.stop();
  }
  await waitConverged(c);
  assert.equal((await leaseOf(c, h3))!.subnet, lease.subnet, "h3 kept its subnet");
  // The failed writes left no temporary file behind.
  const left = (await Array.fromAsync(Deno.readDir(dir.path))).map((e) => e.name);
  assert.deepEqual(left, ["subnet.env"], `files left in ${dir.path}`);
  await assertPingMatrix(c, "after subnet.env could be written again");
  return { samples, said };
}

Deno.test({
  name: "fault matrix (kv): partition, SIGSTOP, subnet.env directory read-only and full",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    await withCluster({ hosts: 3, registry: "kv", podsPerHost: 1 }, async (c) => {
      let dir: SubnetDir | null = null;
      try {
        dir = await mountSubnetDir(c, "h3", 64);
        await c.startAll({
          ttl: TTL,
          healthzPort: HEALTHZ_PORT,
          extraArgs: ["--iptables-forward-rules=false"],
        });
        await waitConverged(c);
        await assertPingMatrix(c, "before any fault");
        const [h1, h2, h3] = c.hosts;

        await t.step("underlay partition of h3 longer than the TTL, healed", async () => {
          const rec = recordReadyz(c);
          let heal = () => Promise.resolve();
          let samples: ReadyzSample[] = [];
          try {
            heal = await partition(c, h3);
            const cut = await c.ping(h1.pods[0], h3.pods[0], { count: 1, timeoutS: 1 });
            assert.equal(cut.received, 0, "the partition lets pings through");
            await sleep(2 * TTL * 1000);
            // The registry is not behind the underlay: h3 renewed, nobody dropped anything.
            await waitConverged(c, 1000);
          } finally {
            samples = await rec.stop();
            await heal();
          }
          console.log(`partition: readiness ${summarizeReadyz(samples)}`);
          assertAll(samples, ["h1", "h2", "h3"], 200, "lease and datapath intact: stay ready");
          await waitConverged(c);
          await assertPingMatrix(c, "after the partition healed");
        });

        await t.step("agent SIGSTOP longer than the TTL, then SIGCONT", async () => {
          const lease = (await leaseOf(c, h2))!;
          const rec = recordReadyz(c, 1000);
          const until = Date.now() + 2 * TTL * 1000;
          h2.agent!.signal("SIGSTOP");
          let samples: ReadyzSample[] = [];
          try {
            await waitConverged(c, (TTL + 10) * 1000, { exclude: [h2] });
            await sleep(until - Date.now()); // frozen for at least 2 TTLs
          } finally {
            h2.agent!.signal("SIGCONT");
            samples = await rec.stop();
          }
          console.log(`SIGSTOP: readiness ${summarizeReadyz(samples)}`);
          assertAll(samples, ["h1", "h3"], 200, "the others stay ready");
          assert.ok(
            samples.some((s) => s.host === "h2" && s.code === null),
            `a frozen agent answered /readyz: ${summarizeReadyz(samples)}`,
          );
          await waitConverged(c);
          assert.equal((await leaseOf(c, h2))!.subnet, lease.subnet, "h2 got its subnet back");
          await assertPingMatrix(c, "after SIGCONT");
        });

        await t.step("subnet.env directory read-only", async () => {
          const { samples, said } = await unwritableSubnetDir(
            c,
            dir!,
            () => dir!.readOnly(),
            () => dir!.writable(),
            /cannot write subnet file .*Read-only file system/,
          );
          console.log(`read-only: ${said}; readiness ${summarizeReadyz(samples)}`);
          assertAll(samples, ["h1", "h2"], 200, "the others stay ready");
        });

        await t.step({
          name: "subnet.env directory read-only: /readyz names the cause",
          // Found by this matrix (fixed): /readyz said "lease lost; re-acquiring" here.
          fn: async () => {
            await unwritableSubnetDir(
              c,
              dir!,
              () => dir!.readOnly(),
              () => dir!.writable(),
              /cannot write subnet file .*Read-only file system/,
              /subnet/,
            );
          },
        });

        await t.step("subnet.env directory full", async () => {
          const { samples, said } = await unwritableSubnetDir(
            c,
            dir!,
            () => dir!.fill(),
            () => dir!.unfill(),
            /cannot write subnet file .*No space left on device/,
          );
          console.log(`full: ${said}; readiness ${summarizeReadyz(samples)}`);
          assertAll(samples, ["h1", "h2"], 200, "the others stay ready");
        });

        await t.step({
          // A full directory, not a read-only one: `ip netns exec` copies the mount table at
          // the agent's start, read-only flag and all, so a remount to rw in the test's own
          // namespace would never reach an agent started while it was read-only.
          name: "agent started with a full subnet.env directory waits until it has room",
          // Found by this matrix (fixed): such an agent exited with code 1.
          fn: async () => {
            await h3.agent!.kill();
            await Deno.remove(h3.subnetFile).catch(() => {});
            await dir!.fill();
            try {
              await h3.agent!.restart();
              await waitFor("h3 to say it cannot write subnet.env", async () => {
                if (h3.agent!.status) {
                  throw new StopWaiting(`h3 exited: ${await h3.agent!.logTail()}`);
                }
                const r = await h3.agent!.readyzText();
                return r.code === 503 && /cannot write subnet file/.test(r.body);
              }, { timeoutMs: 20_000, intervalMs: 200 });
            } finally {
              await dir!.unfill();
            }
            await h3.agent!.waitReady();
            await waitConverged(c);
            await assertPingMatrix(c, "after subnet.env could be written");
          },
        });
      } finally {
        // Agents first: the tmpfs is h3's working directory for subnet.env.
        await Promise.all(c.hosts.map((h) => h.agent?.kill()));
        await dir?.unmount();
      }
    });
  },
});
