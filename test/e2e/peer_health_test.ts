/**
 * The agent's live peer health on a 3-host vxlan cluster (Deno KV registry), probing every 2 s:
 * with UDP 8472 dropped on h2, h1's `weft_peer_reachable` for h2 goes to 0 (h3's stays 1),
 * `/readyz` stays 200, `/status` and `weft status` show h2 unreachable, and the change is logged
 * once however many rounds pass; with the rule removed it goes back to 1 and is logged once more.
 * Every wait is for the exact state asserted, bounded; no timing is asserted.
 */
import assert from "node:assert/strict";
import { type Cluster, withCluster } from "../kit/cluster.ts";
import { waitFor } from "../kit/proc.ts";
import { formatIp } from "../../src/base/ipv4.ts";
import type { AgentStatus } from "../../src/agent/status.ts";

const HEALTHZ = 9474;
const INTERVAL_S = 2;

async function subnetOf(c: Cluster, host: string): Promise<string> {
  const env = (await c.readSubnetEnv(host))!;
  return `${formatIp(env.subnet.ip)}/${env.subnet.prefix}`;
}

/** h1's `weft_peer_reachable` for `subnet`: 1, 0, or null while it has no series. */
async function reachable(c: Cluster, subnet: string): Promise<number | null> {
  const { code, body } = await c.host("h1").agent!.readyzText("/metrics");
  if (code !== 200) throw new Error(`/metrics answered ${code}`);
  const m = new RegExp(`^weft_peer_reachable\\{[^}]*subnet="${subnet}"[^}]*\\} (\\d+)$`, "m")
    .exec(body);
  return m ? Number(m[1]) : null;
}

async function status(c: Cluster): Promise<AgentStatus> {
  const { code, body } = await c.host("h1").agent!.readyzText("/status");
  if (code !== 200) throw new Error(`/status answered ${code}: ${body}`);
  return JSON.parse(body);
}

function statusArgs(extra: string[] = []): string[] {
  return ["status", "--healthz-port", String(HEALTHZ), ...extra];
}

Deno.test("peer health: h1's probes see h2's overlay dropped and restored; /readyz stays 200", async () => {
  await withCluster({ hosts: 3, registry: "kv" }, async (c) => {
    await c.startAll({
      healthzPort: HEALTHZ,
      extraArgs: ["--peer-probe-interval", String(INTERVAL_S)],
    });
    await c.waitPeersProgrammed();
    const sub2 = await subnetOf(c, "h2");
    const sub3 = await subnetOf(c, "h3");
    const h1 = c.host("h1").agent!;
    const wait = (what: string, fn: () => Promise<boolean>) =>
      waitFor(what, async () => await fn() || undefined, { timeoutMs: 30_000, intervalMs: 250 });

    await wait(
      "h1 to see h2 and h3 reachable",
      async () => await reachable(c, sub2) === 1 && await reachable(c, sub3) === 1,
    );
    const ok = await c.weft("h1", statusArgs(), { timeoutMs: 20_000 });
    assert.equal(ok.code, 0, ok.stdout + ok.stderr);
    assert.match(ok.stdout, /^ready {5}yes$/m);
    for (const [sub, h] of [[sub2, "h2"], [sub3, "h3"]]) {
      assert.match(
        ok.stdout,
        new RegExp(
          `^${sub.replaceAll(".", "\\.")}\\s+${
            c.host(h).ip.replaceAll(".", "\\.")
          }\\s+yes\\s+\\d+\\.\\d+\\s+`,
          "m",
        ),
        ok.stdout,
      );
    }

    // Encapsulated traffic to h2 dropped: overlay dead, underlay alive.
    const drop = ["INPUT", "-p", "udp", "--dport", "8472", "-j", "DROP"];
    const logBefore = (await c.logs("h1")).length;
    await c.exec("h2", ["iptables", "-I", ...drop]);
    await wait(
      "h1's weft_peer_reachable for h2 to be 0",
      async () => await reachable(c, sub2) === 0,
    );
    assert.equal(await reachable(c, sub3), 1, "h3 is untouched");
    assert.equal(await h1.readyz(), 200, "one unreachable peer never makes the node unready");
    // Let at least two more rounds probe h2 while it is down: still one log line.
    const firstDown = (await status(c)).peers.find((p) => p.subnet === sub2)!;
    assert.equal(firstDown.reachable, false);
    const seen = new Set<string>();
    await wait("two more rounds to probe h2", async () => {
      const p = (await status(c)).peers.find((x) => x.subnet === sub2)!;
      if (p.lastProbe !== firstDown.lastProbe) seen.add(p.lastProbe!);
      return seen.size >= 2;
    });
    const st = await status(c);
    assert.equal(st.readiness.ok, true);
    assert.equal(st.registry, "kv");
    assert.equal(st.lease?.subnet, await subnetOf(c, "h1"));
    assert.deepEqual(
      st.peers.map((p) => [p.subnet, p.publicIP, p.reachable]).sort(),
      [[sub2, c.host("h2").ip, false], [sub3, c.host("h3").ip, true]].sort(),
    );
    assert.ok(st.lastErrors.some((e) => e.msg.includes(`peer ${sub2}`)), JSON.stringify(st));
    const down = await c.weft("h1", statusArgs(), { timeoutMs: 20_000 });
    assert.equal(down.code, 1, "an unreachable peer: exit 1\n" + down.stdout + down.stderr);
    assert.match(down.stdout, new RegExp(`^${sub2.replaceAll(".", "\\.")}\\s+\\S+\\s+NO\\s`, "m"));
    const json = await c.weft("h1", statusArgs(["--json"]), { timeoutMs: 20_000 });
    assert.equal(
      (JSON.parse(json.stdout) as AgentStatus).peers.find((p) => p.subnet === sub2)?.reachable,
      false,
    );
    const downLog = (await c.logs("h1")).slice(logBefore);
    assert.equal(
      downLog.split("\n").filter((l) => l.includes(`peer ${sub2}`) && l.includes("unreachable"))
        .length,
      1,
      `logged once per change, not every round:\n${downLog}`,
    );

    // Restored.
    await c.exec("h2", ["iptables", "-D", ...drop]);
    await wait(
      "h1's weft_peer_reachable for h2 to be 1 again",
      async () => await reachable(c, sub2) === 1,
    );
    const upLog = (await c.logs("h1")).slice(logBefore);
    assert.match(
      upLog,
      new RegExp(`peer ${sub2.replaceAll(".", "\\.")} \\(\\S+\\) reachable again`),
    );
    const back = await c.weft("h1", statusArgs(), { timeoutMs: 20_000 });
    assert.equal(back.code, 0, back.stdout + back.stderr);
    assert.match(back.stdout, /2 peer\(s\): 2 reachable, 0 unreachable/);
  });
});

Deno.test("weft status: with no agent on the port it says so and prints the doctor's checks", async () => {
  await withCluster({ hosts: 1, registry: "kv" }, async (c) => {
    const r = await c.weft("h1", statusArgs(), { timeoutMs: 20_000 });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(
      r.stderr,
      new RegExp(`no agent answers on http://127\\.0\\.0\\.1:${HEALTHZ}/status`),
    );
    assert.match(r.stderr, /weft doctor/);
    // What doctor finds instead, with the same flags: no agent runs here.
    assert.match(r.stdout, /^fail agent\.running: /m, r.stdout);
    const usage = await c.weft("h1", ["status"], { timeoutMs: 20_000 });
    assert.equal(usage.code, 2, usage.stderr);
    assert.match(usage.stderr, /--healthz-port/);
  });
});

/** h1's value of an unlabelled gauge, or null while it has none. */
async function gauge(c: Cluster, name: string): Promise<number | null> {
  const { code, body } = await c.host("h1").agent!.readyzText("/metrics");
  if (code !== 200) throw new Error(`/metrics answered ${code}`);
  const m = new RegExp(`^${name} (\\d+)$`, "m").exec(body);
  return m ? Number(m[1]) : null;
}

Deno.test("peer health on host-gw: a peer without pods is 'no pod address', not unreachable; reachable once a pod runs", async () => {
  await withCluster({ hosts: 2, registry: "kv" }, async (c) => {
    await c.startAll({
      backend: "host-gw",
      healthzPort: HEALTHZ,
      extraArgs: ["--peer-probe-interval", "1", "--iptables-forward-rules=false"],
    });
    await c.waitPeersProgrammed();
    const sub2 = await subnetOf(c, "h2");
    const wait = (what: string, fn: () => Promise<boolean>) =>
      waitFor(what, async () => await fn() || undefined, { timeoutMs: 30_000, intervalMs: 250 });
    // h2 has no pods, so no bridge holds its gateway address: h2 answers on the underlay only.
    await wait(
      "h1 to count h2 as a peer without a pod address",
      async () => await gauge(c, "weft_peers_without_pod_address") === 1,
    );
    assert.equal(await gauge(c, "weft_peers_unreachable"), 0, "no false alarm");
    assert.equal(await reachable(c, sub2), null, "no reachability series for it");
    const st = await c.weft("h1", statusArgs(), { timeoutMs: 20_000 });
    assert.equal(st.code, 0, st.stdout + st.stderr);
    assert.match(
      st.stdout,
      new RegExp(`^${sub2.replaceAll(".", "\\.")}\\s+\\S+\\s+no pods\\s`, "m"),
    );
    const doc = await c.weft("h1", [
      "doctor",
      ...c.hostFlags("h1", HEALTHZ),
      "--iptables-forward-rules=false",
    ], { timeoutMs: 30_000 });
    assert.equal(doc.code, 0, doc.stdout + doc.stderr);
    assert.match(
      doc.stdout,
      new RegExp(
        `^ok +probe\\.overlay: peer ${sub2.replaceAll(".", "\\.")} .*no pod address to probe`,
        "m",
      ),
    );
    // A pod on h2: its bridge answers, the peer is reachable.
    await c.addPod("h2");
    await wait("h1 to see h2 reachable", async () => await reachable(c, sub2) === 1);
    assert.equal(await gauge(c, "weft_peers_without_pod_address"), 0);
  });
});
