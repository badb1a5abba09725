/**
 * A Deno KV registry file deleted, replaced or truncated under running agents (issue 10, defect
 * 6): the registry notices that the file it has open is no longer the one at its path, says so
 * (problem(), /readyz), never creates a file in place of a deleted one, and reopens the path
 * once a usable file is there: watchers re-list it and revisions go on from where they were.
 */
import assert from "node:assert/strict";
import { openKvRegistry } from "../../src/registry/kv/mod.ts";
import type { WatchMessage } from "../../src/registry/contract/registry.ts";
import { KvFileError } from "../../src/registry/kv/file_guard.ts";
import { waitFor } from "../kit/proc.ts";
import { withCluster } from "../kit/cluster.ts";
import { decodeLeaseValue, subnetKey } from "../../src/lease/codec.ts";
import { formatIp } from "../../src/base/ipv4.ts";

const VALUE = (ip: string) => `{"PublicIP":"${ip}","PublicIPv6":null,"BackendType":"alloc"}`;

async function removeKvFiles(path: string) {
  for (const f of [path, `${path}-wal`, `${path}-shm`]) await Deno.remove(f).catch(() => {});
}

Deno.test({
  name: "kv file: deleted under a client → problem and retryable errors, no file made; " +
    "a new file at the path → reopened, re-listed, revisions carried on",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "weft-kvfile-" });
    const path = `${dir}/r.kv`;
    const a = await openKvRegistry({ path });
    const ctl = new AbortController();
    const got: WatchMessage[] = [];
    try {
      const first = await a.createLease("198.19.1.0-24", VALUE("198.18.0.1"), 60);
      assert.ok(first);
      const watch = (async () => {
        for await (const m of a.watchLeases(first.revision, ctl.signal)) got.push(m);
      })();
      await removeKvFiles(path);
      const err = await waitFor("the deletion noticed", async () => {
        try {
          await a.listLeases();
          return false;
        } catch (e) {
          return e;
        }
      }, { timeoutMs: 10_000, intervalMs: 100 });
      assert.ok(err instanceof KvFileError, String(err));
      assert.match(a.problem()!, /r\.kv was deleted under this agent.*not ready/);
      assert.rejects(() => Deno.stat(path), "a file was made in place of the deleted one");

      // Someone (an agent with --net-config-path, a restore) puts a new file at the path.
      const b = await openKvRegistry({ path });
      try {
        assert.ok(await b.createLease("198.19.2.0-24", VALUE("198.18.0.2"), 60));
      } finally {
        await b.close();
      }
      const { leases, revision } = (await waitFor("reopened", async () => {
        try {
          return await a.listLeases();
        } catch {
          return false;
        }
      }, { timeoutMs: 10_000, intervalMs: 100 }))!;
      assert.deepEqual(leases.map((l) => l.key), ["198.19.2.0-24"]);
      assert.ok(revision > first.revision, `revision ${revision} went back from ${first.revision}`);
      // The watcher starts over from a full list of the new file (taken before or after the
      // new file's lease was written: then that lease follows as a change).
      const view = () => {
        let keys: Set<string> | null = null;
        for (const m of got) {
          if (m.kind === "snapshot") keys = new Set(m.leases.map((l) => l.key));
          else if (keys) {
            for (const c of m.changes) {
              if (c.type === "put") keys.add(c.lease.key);
              else keys.delete(c.key);
            }
          }
        }
        return keys ? [...keys].join() : null;
      };
      await waitFor("the watcher's view: a snapshot of the new file, then its changes", () => {
        if (view() === "198.19.2.0-24") return true;
        throw new Error(`watch messages: ${JSON.stringify(got)}; problem: ${a.problem()}`);
      }, { timeoutMs: 10_000, intervalMs: 50 });
      // Not trusted (problem() set) until the watcher has handled that list.
      await waitFor("the problem cleared", () => a.problem() === null, {
        timeoutMs: 10_000,
        intervalMs: 50,
      });
      ctl.abort();
      await watch;
    } finally {
      ctl.abort();
      await a.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

for (const fault of ["deleted", "truncated", "corrupted"] as const) {
  Deno.test({
    name: `kv file ${fault} under running agents: not ready naming it, then back with ` +
      `their leases when a new file is made`,
    sanitizeOps: false,
    sanitizeResources: false,
    async fn() {
      await withCluster({ hosts: 3, registry: "kv" }, async (c) => {
        const [h1, h2, h3] = c.hosts;
        const o = (port: number) => ({
          backend: "alloc",
          healthzPort: port,
          extraArgs: ["--iptables-forward-rules=false"],
        });
        const a1 = c.startAgent(h1, o(9921));
        const a2 = c.startAgent(h2, o(9922));
        await a1.waitReady();
        await a2.waitReady();
        const s1 = (await c.readSubnetEnv(h1))!.subnet;
        const s2 = (await c.readSubnetEnv(h2))!.subnet;
        const kv = c.kvPath!;
        if (fault === "deleted") await removeKvFiles(kv);
        else if (fault === "truncated") await Deno.truncate(kv, 0);
        else {
          // A bad restore: garbage in place of the file. (Garbage written into the open file
          // itself is masked by SQLite's write-ahead log, which holds every page, and healed
          // by its next checkpoint: readers old and new see the same good data.)
          await Deno.writeTextFile(`${kv}.bad`, "not a database ".repeat(1000));
          await removeKvFiles(kv);
          await Deno.rename(`${kv}.bad`, kv);
        }
        for (const a of [a1, a2]) {
          await waitFor(`${a.host} not ready, naming the KV file`, async () => {
            const r = await a.readyzText();
            return r.code === 503 && r.body.includes(`KV file ${kv}`);
          }, { timeoutMs: 20_000, intervalMs: 200 });
        }
        if (fault !== "deleted") await removeKvFiles(kv); // what an operator does next
        // A third agent seeds a new file from its --net-config-path; the others reopen it and
        // put their leases back (same subnets: their subnet.env says which). The third one's
        // subnet.env names a third subnet, so that its own pick never takes one of theirs.
        const base = s1.ip - (s1.ip % 65536); // 198.19.0.0: the cluster network
        const s3 = [100, 101, 102].map((o) => ({ ip: base + o * 256, prefix: 24 }))
          .find((n) => n.ip !== s1.ip && n.ip !== s2.ip)!;
        await Deno.mkdir(h3.subnetFile.replace(/\/[^/]*$/, ""), { recursive: true });
        await Deno.writeTextFile(
          h3.subnetFile,
          `FLANNEL_NETWORK=198.19.0.0/16\nFLANNEL_SUBNET=${formatIp(s3.ip + 1)}/24\n` +
            `FLANNEL_MTU=1500\nFLANNEL_IPMASQ=false\n`,
        );
        const a3 = c.startAgent(h3, o(9923));
        await a3.waitReady();
        for (const a of [a1, a2]) {
          await waitFor(`${a.host} ready again`, async () => (await a.readyz()) === 200, {
            timeoutMs: 30_000,
            intervalMs: 200,
          });
        }
        // Ready means each node holds its lease again: listed at once, not waited for.
        const reg = await openKvRegistry({ path: kv });
        try {
          const held = new Map(
            (await reg.listLeases()).leases.map((l) => [l.key, decodeLeaseValue(l.value).publicIP]),
          );
          const seen = JSON.stringify([...held]);
          for (const [s, h] of [[s1, h1], [s2, h2], [s3, h3]] as const) {
            assert.equal(held.get(subnetKey(s)), h.ip, `${subnetKey(s)} of ${h.name}: ${seen}`);
          }
          assert.equal(held.size, 3, seen);
        } finally {
          await reg.close();
        }
      });
    },
  });
}
