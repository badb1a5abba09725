/**
 * flannel's iptables rules on harness hosts, end to end: agents with `--ip-masq` (forward rules
 * on, the default) and `--iptables-resync 1` on 2 hosts (vxlan, Deno KV registry, one pod each).
 *
 * - `iptables-save` in each host's namespace holds exactly the spec's chains and rules, nothing
 *   more (fresh namespaces, so any extra rule is the agent's);
 * - rules deleted by hand (one in nat, one in filter) are back within the resync period;
 * - a pod's UDP datagram to the registry host (198.18.0.2, outside the cluster network) arrives
 *   from its host's underlay address (masqueraded), while one to a pod on the other host keeps
 *   the pod's own address (the RETURN rules). A tiny UDP sink (node:dgram under `deno eval`)
 *   prints each sender's address; bash's /dev/udp sends, so no extra tool is needed.
 *
 * @example
 * ```sh
 * deno test -A test/e2e_iptables_test.ts   # about 10 s
 * ```
 */
import assert from "node:assert/strict";
import { waitFor } from "../kit/proc.ts";
import { type Cluster, type Host, withCluster } from "../kit/cluster.ts";
import { udpSink } from "../kit/udp_sink.ts";
import { formatCidr } from "../../src/base/ipv4.ts";

const HEALTHZ_PORT = 9182;
const RESYNC_S = 1;

/** The spec's rules for pod subnet `pod` in 198.19.0.0/16, written out by hand, per table. */
function expectedRules(pod: string): { nat: string[]; filter: string[] } {
  const m = `-m comment --comment "flanneld masq"`;
  const f = `-m comment --comment "flanneld forward"`;
  const net = "198.19.0.0/16";
  return {
    nat: [
      `-A POSTROUTING ${m} -j FLANNEL-POSTRTG`,
      `-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 ${m} -j RETURN`,
      `-A FLANNEL-POSTRTG -s ${pod} -d ${net} ${m} -j RETURN`,
      `-A FLANNEL-POSTRTG -s ${net} -d ${pod} ${m} -j RETURN`,
      `-A FLANNEL-POSTRTG ! -s ${net} -d ${pod} ${m} -j RETURN`,
      `-A FLANNEL-POSTRTG -s ${net} ! -d 224.0.0.0/4 ${m} -j MASQUERADE --random-fully`,
      `-A FLANNEL-POSTRTG ! -s ${net} -d ${net} ${m} -j MASQUERADE --random-fully`,
    ],
    filter: [
      `-A FORWARD ${f} -j FLANNEL-FWD`,
      `-A FLANNEL-FWD -s ${net} ${f} -j ACCEPT`,
      `-A FLANNEL-FWD -d ${net} ${f} -j ACCEPT`,
    ],
  };
}

/** `iptables-save` of a host, as chains and `-A` lines per table. */
async function saved(c: Cluster, h: Host) {
  const tables = new Map<string, { chains: string[]; rules: string[] }>();
  let cur: { chains: string[]; rules: string[] } | undefined;
  for (const line of (await c.exec(h, ["iptables-save"])).split("\n")) {
    if (line.startsWith("*")) tables.set(line.slice(1), cur = { chains: [], rules: [] });
    else if (line.startsWith(":")) cur?.chains.push(line.slice(1).split(" ")[0]);
    else if (line.startsWith("-A ")) cur?.rules.push(line);
  }
  return tables;
}

/** Asserts the host's rules are exactly the spec's (and no other table has rules). */
async function assertExactRules(c: Cluster, h: Host, pod: string) {
  const want = expectedRules(pod);
  const t = await saved(c, h);
  assert.deepEqual(t.get("nat")?.rules, want.nat, `nat rules on ${h.name}`);
  assert.deepEqual(t.get("filter")?.rules, want.filter, `filter rules on ${h.name}`);
  assert.ok(t.get("nat")!.chains.includes("FLANNEL-POSTRTG"), `no FLANNEL-POSTRTG on ${h.name}`);
  assert.ok(t.get("filter")!.chains.includes("FLANNEL-FWD"), `no FLANNEL-FWD on ${h.name}`);
  for (const [name, tb] of t) {
    if (name !== "nat" && name !== "filter") assert.deepEqual(tb.rules, [], `${name} on ${h.name}`);
  }
}

Deno.test({
  name: "iptables e2e: exact chains, hand-deleted rules restored, pod traffic masqueraded",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await withCluster({ hosts: 2, registry: "kv", podsPerHost: 1 }, async (c) => {
      await c.startAll({
        backend: "vxlan",
        healthzPort: HEALTHZ_PORT,
        extraArgs: ["--ip-masq", "--iptables-resync", String(RESYNC_S)],
      });
      const [h1, h2] = c.hosts;
      const [p1, p2] = c.pods();
      const pod1 = formatCidr((await c.readSubnetEnv(h1))!.subnet);
      const pod2 = formatCidr((await c.readSubnetEnv(h2))!.subnet);
      const env1 = await Deno.readTextFile(h1.subnetFile);
      assert.match(env1, /^FLANNEL_IPMASQ=true$/m);

      // 1. Exactly the spec's rules on each host.
      await assertExactRules(c, h1, pod1);
      await assertExactRules(c, h2, pod2);

      // 2. Delete one nat rule and the filter jump by hand; both come back within the resync.
      const masqOut = expectedRules(pod1).nat[5].replace(/^-A /, "");
      const fwdJump = expectedRules(pod1).filter[0].replace(/^-A /, "");
      const del = (table: string, rule: string) =>
        c.exec(h1, ["bash", "-c", `iptables -t ${table} -D ${rule}`]);
      await del("nat", masqOut);
      await del("filter", fwdJump);
      const gone = await saved(c, h1);
      assert.ok(!gone.get("nat")!.rules.includes(`-A ${masqOut}`), "nat rule was not deleted");
      assert.ok(!gone.get("filter")!.rules.includes(`-A ${fwdJump}`), "jump was not deleted");
      const deletedAt = Date.now();
      await waitFor("the deleted rules to be restored", async () => {
        await assertExactRules(c, h1, pod1);
        return true;
      }, { timeoutMs: RESYNC_S * 1000 + 20_000, intervalMs: 50 });
      const restoredIn = Date.now() - deletedAt;
      console.log(`hand-deleted rules restored after ${restoredIn} ms (resync ${RESYNC_S} s)`);
      // The agent logs the repair after reading the rules back; its log reaches the file a
      // moment later, so wait for the line (bounded) rather than read it once.
      await waitFor("the repair to be logged", async () => {
        assert.match(
          await c.logs(h1),
          /iptables rules were missing or changed and have been restored/,
        );
        return true;
      }, { timeoutMs: 15_000, intervalMs: 50 });

      // 3. Masquerade: pod -> outside the cluster network arrives from the host's address;
      //    pod -> pod on another host keeps the pod's address.
      const tag = c.runId;
      const outside = await udpSink(c, "reg", c.registryHost.ip);
      try {
        const src = await outside.sourceOf(p1, `out-${tag}`);
        assert.equal(src, h1.ip, `pod traffic to ${c.registryHost.ip} must leave as ${h1.ip}`);
        const hostSrc = await outside.sourceOf(h2, `host-${tag}`);
        assert.equal(hostSrc, h2.ip);
      } finally {
        await outside.close();
      }
      const inside = await udpSink(c, p2, p2.ip);
      try {
        const src = await inside.sourceOf(p1, `pod-${tag}`);
        assert.equal(src, p1.ip, "pod-to-pod traffic across hosts must not be masqueraded");
      } finally {
        await inside.close();
      }
      assert.equal(await h1.agent!.readyz(), 200);
    });
  },
});
