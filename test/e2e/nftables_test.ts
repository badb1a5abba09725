/**
 * flannel's nftables tables on harness hosts, end to end (`"EnableNFTables": true`): agents with
 * `--ip-masq` (forward rules on, the default) and `--iptables-resync 1` on 2 hosts (vxlan, Deno
 * KV registry, one pod each). nft tables are per network namespace, so each host's are its own.
 *
 * - h1 starts with what an earlier iptables run left (FLANNEL-POSTRTG / FLANNEL-FWD and their
 *   jumps) beside a foreign iptables rule and a foreign nft table: the nftables agent removes the
 *   FLANNEL-* chains and touches nothing else;
 * - `nft list table ip flannel-ipv4` on each host is exactly the spec's table; no ip6 table;
 * - a rule deleted by hand, and the whole table on h2, are back within the resync period;
 * - a pod's datagram to the registry host (outside the cluster network) arrives from its host's
 *   address (masqueraded); one to the other host's pod keeps the pod's own address;
 * - SIGTERM keeps the table; `weft cleanup` removes it and leaves the foreign table and rule.
 * A second test drives the keeper and the firewall part in a bare namespace: a subnet change
 * replaces the old subnet's rules, and iptables mode removes flannel's nftables tables (only).
 */
import assert from "node:assert/strict";
import { waitFor } from "../kit/proc.ts";
import { type Cluster, type Host, withCluster } from "../kit/cluster.ts";
import { udpSink } from "../kit/udp_sink.ts";
import { newRunId } from "../kit/names.ts";
import { createNs, deleteNs, nsExec } from "../kit/netns.ts";
import { formatCidr, parseCidr } from "../../src/base/ipv4.ts";
import { parseNetworkConfig } from "../../src/config/network.ts";
import { RuleManager } from "../../src/iptables/keeper.ts";
import { NftKeeper } from "../../src/nftables/keeper.ts";
import { FirewallPart } from "../../src/agent/firewall_part.ts";
import type { Lease } from "../../src/lease/codec.ts";

const HEALTHZ_PORT = 9183;
const RESYNC_S = 1;
const NET = "198.19.0.0/16";

/** The spec's table as `nft list table ip flannel-ipv4` prints it, written out by hand. */
function expectedTable(pod: string, masq = "masquerade fully-random"): string {
  return [
    `table ip flannel-ipv4 {`,
    `\tcomment "rules for flannel-ipv4"`,
    `\tchain forward {`,
    `\t\tcomment "chain to accept flannel traffic"`,
    `\t\ttype filter hook forward priority filter; policy accept;`,
    `\t\tip saddr ${NET} accept`,
    `\t\tip daddr ${NET} accept`,
    `\t}`,
    ``,
    `\tchain postrtg {`,
    `\t\tcomment "chain to manage traffic masquerading by flannel"`,
    `\t\ttype nat hook postrouting priority srcnat; policy accept;`,
    `\t\tmeta mark 0x00004000 return`,
    `\t\tip saddr ${pod} ip daddr ${NET} return`,
    `\t\tip saddr ${NET} ip daddr ${pod} return`,
    `\t\tip saddr != ${pod} ip daddr ${NET} return`,
    `\t\tip saddr ${NET} ip daddr != 224.0.0.0/4 ${masq}`,
    `\t\tip saddr != ${NET} ip daddr ${NET} ${masq}`,
    `\t}`,
    `}`,
    ``,
  ].join("\n");
}

/** Someone else's state: an nft table and an iptables rule in nat and in filter. */
const FOREIGN_NFT =
  `table ip weft-test-foreign {\n\tchain keep {\n\t\tip saddr 198.18.99.0/24 counter\n\t}\n}\n`;
const FOREIGN_NAT = "-A POSTROUTING -s 198.18.99.0/24 -j RETURN";
const FOREIGN_FWD = "-A FORWARD -s 198.18.99.0/24 -j ACCEPT";

async function addForeign(exec: (cmd: string[]) => Promise<string>) {
  await exec(["bash", "-c", `nft -f - <<'EOF'\n${FOREIGN_NFT}EOF`]);
  await exec(["bash", "-c", `iptables -t nat ${FOREIGN_NAT} && iptables ${FOREIGN_FWD}`]);
}

/** Asserts the foreign state is untouched and no FLANNEL-* chain is left in iptables. */
async function assertForeignOnly(exec: (cmd: string[]) => Promise<string>, where: string) {
  const save = await exec(["iptables-save"]);
  assert.doesNotMatch(save, /FLANNEL-/, `FLANNEL-* iptables state left on ${where}`);
  assert.ok(save.split("\n").includes(FOREIGN_NAT), `foreign nat rule gone on ${where}`);
  assert.ok(save.split("\n").includes(FOREIGN_FWD), `foreign filter rule gone on ${where}`);
  assert.equal(
    (await exec(["nft", "list", "table", "ip", "weft-test-foreign"])).replace(
      / packets \d+ bytes \d+/,
      "",
    ),
    FOREIGN_NFT,
    `foreign nft table changed on ${where}`,
  );
}

const listTable = (c: Cluster, h: Host) =>
  c.exec(h, ["nft", "list", "table", "ip", "flannel-ipv4"]);

Deno.test({
  name: "nftables e2e: exact table, iptables leftovers removed, repair, masquerade, cleanup",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await withCluster({ hosts: 2, registry: "kv", podsPerHost: 1 }, async (c) => {
      const [h1, h2] = c.hosts;
      const exec1 = (cmd: string[]) => c.exec(h1, cmd);
      // 0. An earlier iptables run's chains on h1, beside someone else's rules and table.
      await new RuleManager({
        network: parseCidr(NET),
        podSubnet: parseCidr("198.19.250.0/24"),
        ipMasq: true,
        forward: true,
        commandPrefix: ["ip", "netns", "exec", h1.netns],
      }).ensure();
      await addForeign(exec1);
      assert.match(await exec1(["iptables-save"]), /FLANNEL-POSTRTG/);

      await c.startAll({
        backend: "vxlan",
        healthzPort: HEALTHZ_PORT,
        netConfig: { EnableNFTables: true },
        extraArgs: ["--ip-masq", "--iptables-resync", String(RESYNC_S)],
      });
      const [p1, p2] = c.pods();
      const pod1 = formatCidr((await c.readSubnetEnv(h1))!.subnet);
      const pod2 = formatCidr((await c.readSubnetEnv(h2))!.subnet);

      // 1. Exactly the spec's table on each host, no IPv6 table, and the mode switch cleaned up.
      assert.equal(await listTable(c, h1), expectedTable(pod1));
      assert.equal(await listTable(c, h2), expectedTable(pod2));
      for (const h of [h1, h2]) {
        const tables = (await c.exec(h, ["nft", "list", "tables"])).split("\n");
        assert.ok(!tables.includes("table ip6 flannel-ipv6"), `ip6 table on ${h.name}`);
        assert.doesNotMatch(await c.exec(h, ["iptables-save"]), /FLANNEL-/);
      }
      await assertForeignOnly(exec1, h1.name);

      // 2. A rule deleted by hand (h1) and the whole table (h2) come back within the resync.
      const handles = await exec1(["nft", "-a", "list", "table", "ip", "flannel-ipv4"]);
      const line = handles.split("\n").find((l) => l.includes("daddr != 224.0.0.0/4"));
      const handle = /# handle (\d+)/.exec(line ?? "")?.[1];
      assert.ok(handle, `no handle for the masquerade rule in:\n${handles}`);
      await exec1(["nft", "delete", "rule", "ip", "flannel-ipv4", "postrtg", "handle", handle]);
      await c.exec(h2, ["nft", "delete", "table", "ip", "flannel-ipv4"]);
      assert.notEqual(await listTable(c, h1), expectedTable(pod1), "rule was not deleted");
      await waitFor("the hand-deleted rule and table to be restored", async () => {
        assert.equal(await listTable(c, h1), expectedTable(pod1));
        assert.equal(await listTable(c, h2), expectedTable(pod2));
        return true;
      }, { timeoutMs: RESYNC_S * 1000 + 20_000, intervalMs: 50 });
      // The agent logs the repair after reading the table back: wait for the line (bounded).
      for (const h of [h1, h2]) {
        await waitFor(`the repair to be logged on ${h.name}`, async () => {
          assert.match(
            await c.logs(h),
            /nftables rules were missing or changed and have been restored/,
          );
          return true;
        }, { timeoutMs: 15_000, intervalMs: 50 });
      }

      // 3. Masquerade: pod -> outside the cluster network arrives from the host's address;
      //    pod -> pod on another host keeps the pod's address.
      const tag = c.runId;
      const outside = await udpSink(c, "reg", c.registryHost.ip);
      try {
        const src = await outside.sourceOf(p1, `out-${tag}`);
        assert.equal(src, h1.ip, `pod traffic to ${c.registryHost.ip} must leave as ${h1.ip}`);
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

      // 4. SIGTERM keeps the table; cleanup removes it, and only it.
      const st = await h1.agent!.stop("SIGTERM");
      assert.equal(st.code, 0);
      assert.equal(await listTable(c, h1), expectedTable(pod1));
      const out = await c.weftOk(h1, c.cleanupArgs(h1), { timeoutMs: 60_000 });
      assert.match(out, /^removed nftables table ip flannel-ipv4$/m);
      const left = (await exec1(["nft", "list", "tables"])).split("\n");
      assert.ok(!left.some((l) => l.includes("flannel-")), `left: ${left.join(", ")}`);
      await assertForeignOnly(exec1, `${h1.name} after cleanup`);
    });
  },
});

const RUN = newRunId();

const lease = (subnet: string): Lease => ({
  key: subnet.replace("/", "-"),
  subnet: parseCidr(subnet),
  attrs: { publicIP: "198.18.0.11" },
  expiresAt: null,
  revision: 1,
});

Deno.test("nftables keeper in a namespace: subnet change, then iptables mode removes the tables", async () => {
  const ns = `wnft-${RUN}`;
  await createNs(ns, { bare: true });
  const exec = (cmd: string[]) => nsExec(ns, cmd, { timeoutMs: 30_000 });
  try {
    await addForeign(exec);
    const prefix = ["ip", "netns", "exec", ns];
    const cfg = parseNetworkConfig(`{"Network":"${NET}","EnableNFTables":true}`);
    // Plain masquerade (--ip-masq-fully-random-disable), through the agent's part.
    const part = new FirewallPart({
      ipMasq: true,
      forward: true,
      randomFullyDisable: true,
      commandPrefix: prefix,
    });
    await part.apply(cfg, lease("198.19.7.0/24"), null);
    const list = () => exec(["nft", "list", "table", "ip", "flannel-ipv4"]);
    assert.equal(await list(), expectedTable("198.19.7.0/24", "masquerade"));
    assert.equal(await part.check(), false);
    // The subnet changes: the old subnet's rules are gone, in the same transaction.
    await part.apply(cfg, lease("198.19.8.0/24"), lease("198.19.7.0/24"));
    assert.equal(await list(), expectedTable("198.19.8.0/24", "masquerade"));
    // A keeper with the IPv6 table too (not served by the agent yet): both tables, then the
    // ip6 one goes when IPv6 is off again.
    const k = new NftKeeper({ ipMasq: true, forward: true, commandPrefix: prefix });
    const v4 = { family: "ip" as const, network: NET, podSubnet: "198.19.8.0/24" };
    await k.write([v4, {
      family: "ip6",
      network: "2001:db8:1::/48",
      podSubnet: "2001:db8:1:8::/64",
    }]);
    assert.match(
      await exec(["nft", "list", "table", "ip6", "flannel-ipv6"]),
      /ip6 saddr 2001:db8:1::\/48 ip6 daddr != ff00::\/8 masquerade fully-random/,
    );
    await k.write([v4]);
    assert.ok(!(await exec(["nft", "list", "tables"])).includes("flannel-ipv6"));

    // iptables mode (a config without EnableNFTables): flannel's tables go, the chains come.
    const ipt = new FirewallPart({ ipMasq: true, forward: true, commandPrefix: prefix });
    await ipt.apply(parseNetworkConfig(`{"Network":"${NET}"}`), lease("198.19.8.0/24"), null);
    assert.equal(ipt.name, "iptables rules");
    const tables = await exec(["nft", "list", "tables"]);
    assert.ok(!tables.includes("flannel-"), tables);
    assert.ok(tables.includes("table ip weft-test-foreign"), tables);
    assert.match(await exec(["iptables-save"]), /-A FLANNEL-POSTRTG/);
  } finally {
    await deleteNs(ns);
  }
});
