/**
 * weft touches only what it made (issue #10, defect 1), on real hosts, for vxlan and host-gw: h1
 * is full of routes, neighbours, FDB entries, iptables rules and an nftables table that are not
 * weft's — a default route, static routes inside and outside the cluster network (via the
 * underlay gateway, other metrics, proto static, another table), a routing daemon's routes
 * (`proto bird`, `proto zebra`), another vxlan device with its own FDB entries, neighbours and
 * routes into the cluster network. weft starts, runs a periodic reconciliation (proven by
 * `weft_registry_resyncs_total` reaching 2 in the agent's /metrics), is killed (SIGKILL),
 * restarted, reconciles again, is stopped and `weft cleanup` runs. After each stage every foreign
 * entry is still there, byte for byte and in its order (`ip route show table all`, permanent
 * `ip neigh`, `bridge fdb`, `iptables-save` without counters, `nft list table`), while weft's
 * own routes were there while it ran and are gone after the cleanup.
 *
 * Leases come from 198.19.1.0–198.19.199.0 (SubnetMax), so no peer subnet can coincide with a
 * foreign route in 198.19.200.0/21 and up.
 */
import assert from "node:assert/strict";
import { type Cluster, type Host, withCluster } from "../kit/cluster.ts";
import { waitFor } from "../kit/proc.ts";
import { formatCidr } from "../../src/base/ipv4.ts";

const PORT = 9123;

/** What an operator, a routing daemon and another overlay put on h1 before weft runs. */
function foreignSetup(h: Host): string[][] {
  return [
    ["ip", "route", "add", "default", "via", "198.18.0.1", "dev", "eth0"],
    ["ip", "route", "add", "198.18.99.0/24", "via", "198.18.0.1", "dev", "eth0"],
    ["ip", "route", "add", "198.19.0.0/17", "via", "198.18.0.1", "dev", "eth0"],
    ["ip", "route", "add", "198.19.240.0/28", "via", "198.18.0.1", "dev", "eth0"],
    ["ip", "route", "add", "198.19.241.0/24", "via", "198.18.0.1", "dev", "eth0", "metric", "50"],
    ["ip", "route", "add", "198.19.242.0/24", "via", "198.18.0.1", "proto", "static"],
    ["ip", "route", "add", "198.19.243.0/24", "via", "198.18.0.13", "proto", "bird"],
    ["ip", "route", "add", "198.19.244.0/24", "via", "198.18.0.13", "proto", "zebra"],
    ["ip", "route", "add", "198.19.245.0/24", "via", "198.18.0.1", "table", "100"],
    ["ip", "route", "add", "198.19.246.0/24", "dev", "eth0"],
    ["ip", "neigh", "add", "198.18.0.99", "lladdr", "02:aa:00:00:00:99", "dev", "eth0"],
    // Another overlay's vxlan device, with its FDB, neighbours and routes into the network.
    [
      "ip",
      "link",
      "add",
      "vxfor0",
      "type",
      "vxlan",
      "id",
      "42",
      "dstport",
      "4789",
      "dev",
      "eth0",
      "local",
      h.ip,
    ],
    ["ip", "addr", "add", "198.18.201.1/24", "dev", "vxfor0"],
    ["ip", "link", "set", "vxfor0", "up"],
    ["bridge", "fdb", "append", "00:00:00:00:00:00", "dev", "vxfor0", "dst", "198.18.0.77"],
    ["bridge", "fdb", "add", "02:aa:00:00:00:01", "dev", "vxfor0", "dst", "198.18.0.78"],
    ["ip", "neigh", "add", "198.18.201.5", "lladdr", "02:aa:00:00:00:01", "dev", "vxfor0"],
    ["ip", "neigh", "add", "198.19.247.0", "lladdr", "02:aa:00:00:00:01", "dev", "vxfor0"],
    ["ip", "route", "add", "198.19.247.0/24", "via", "198.19.247.0", "dev", "vxfor0", "onlink"],
    ["ip", "route", "add", "198.19.248.0/24", "via", "198.18.201.5", "dev", "vxfor0"],
    // Firewall state that is not weft's.
    ["iptables", "-N", "OPS-KEEP"],
    ["iptables", "-A", "OPS-KEEP", "-s", "198.19.0.0/16", "-d", "198.18.99.0/24", "-j", "ACCEPT"],
    ["iptables", "-I", "FORWARD", "1", "-j", "OPS-KEEP"],
    ["iptables", "-t", "nat", "-N", "OPS-NAT"],
    ["iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "198.19.0.0/16", "-j", "OPS-NAT"],
    ["nft", "add", "table", "inet", "opskeep"],
    [
      "nft",
      "add",
      "chain",
      "inet",
      "opskeep",
      "opsfwd",
      "{ type filter hook forward priority 10; }",
    ],
    ["nft", "add", "rule", "inet", "opskeep", "opsfwd", "ip", "saddr", "198.19.0.0/16", "accept"],
  ];
}

interface Snapshot {
  routes: string[];
  neigh: string[];
  fdb: string[];
  iptables: string[];
  nft: string[];
}

const lines = (s: string) => s.split("\n").map((l) => l.trimEnd()).filter((l) => l !== "");

/** iptables-save as "<table> <line>", without counters, comments and table delimiters. */
function iptablesLines(save: string): string[] {
  let table = "";
  const out: string[] = [];
  for (const l of lines(save)) {
    if (l.startsWith("#") || l === "COMMIT") continue;
    if (l.startsWith("*")) {
      table = l.slice(1);
      continue;
    }
    out.push(`${table} ${l.replace(/ \[\d+:\d+\]$/, "")}`);
  }
  return out;
}

async function snapshot(c: Cluster, h: Host): Promise<Snapshot> {
  return {
    routes: lines(await c.exec(h, ["ip", "route", "show", "table", "all"])),
    neigh: lines(await c.exec(h, ["ip", "neigh", "show", "nud", "permanent"])),
    fdb: lines(await c.exec(h, ["bridge", "fdb", "show"])),
    iptables: iptablesLines(await c.exec(h, ["iptables-save"])),
    nft: lines(await c.exec(h, ["nft", "list", "table", "inet", "opskeep"])),
  };
}

/** Every line of `before` is in `now`, and in the same order. */
function assertKept(stage: string, before: Snapshot, now: Snapshot) {
  for (const k of Object.keys(before) as (keyof Snapshot)[]) {
    const have = new Set(now[k]);
    const lost = before[k].filter((l) => !have.has(l));
    assert.deepEqual(
      lost,
      [],
      `${stage}: foreign ${k} entries lost or changed:\n` +
        `${lost.join("\n")}\n--- now:\n${now[k].join("\n")}`,
    );
    const was = new Set(before[k]);
    assert.deepEqual(now[k].filter((l) => was.has(l)), before[k], `${stage}: ${k} reordered`);
  }
}

async function resyncs(c: Cluster, h: Host): Promise<number> {
  const text = await c.exec(h, [
    "curl",
    "-s",
    "--max-time",
    "2",
    `http://127.0.0.1:${PORT}/metrics`,
  ], { timeoutMs: 5_000 });
  const m = /^weft_registry_resyncs_total (\d+)/m.exec(text);
  if (!m) throw new Error(`no weft_registry_resyncs_total in /metrics:\n${text.slice(0, 400)}`);
  return Number(m[1]);
}

/** Waits until this agent process re-listed the registry and reconciled after its first list. */
async function waitReconciled(c: Cluster, h: Host): Promise<void> {
  await waitFor(`a periodic reconciliation on ${h.name}`, async () => await resyncs(c, h) >= 2, {
    timeoutMs: 30_000,
    intervalMs: 500,
  });
}

/** Routes for the peers' subnets are in place (weft's, with `proto` "87" when `marked`). */
async function waitPeerRoutes(c: Cluster, h: Host, peers: Host[], marked = false): Promise<void> {
  const want = await Promise.all(
    peers.map(async (p) => formatCidr((await c.readSubnetEnv(p))!.subnet)),
  );
  await waitFor(`weft's routes on ${h.name} for ${want.join(", ")}`, async () => {
    const have = await c.exec(h, ["ip", "route", "show", ...(marked ? ["proto", "87"] : [])]);
    return want.every((w) => have.includes(`${w} via`));
  }, { timeoutMs: 20_000 });
}

for (const backend of ["vxlan", "host-gw"]) {
  Deno.test({
    name:
      `ownership (${backend}): weft leaves every route, neighbour, FDB entry and rule not its own`,
    sanitizeOps: false,
    sanitizeResources: false,
    async fn() {
      await withCluster({ hosts: 2, registry: "kv" }, async (c) => {
        const [h1, h2] = c.hosts;
        for (const cmd of foreignSetup(h1)) await c.exec(h1, cmd);
        const before = await snapshot(c, h1);

        const opts = {
          backend,
          netConfig: { SubnetMin: "198.19.1.0", SubnetMax: "198.19.199.0" },
          extraArgs: ["--ip-masq", "--reconcile-interval", "1"],
        };
        const a1 = c.startAgent(h1, { ...opts, healthzPort: PORT });
        await a1.waitReady();
        await c.startAgent(h2, opts).waitReady();
        await waitPeerRoutes(c, h1, [h2]);
        await waitReconciled(c, h1);
        assertKept("after start and a reconciliation", before, await snapshot(c, h1));
        await waitPeerRoutes(c, h1, [h2], true);

        assert.equal((await a1.kill()).signal, "SIGKILL");
        await a1.restart();
        await a1.waitReady();
        await waitPeerRoutes(c, h1, [h2]);
        await waitReconciled(c, h1);
        assertKept("after SIGKILL, restart and a reconciliation", before, await snapshot(c, h1));

        assert.equal((await a1.stop("SIGTERM")).code, 0);
        const r = await c.weft(h1, c.cleanupArgs(h1), { timeoutMs: 60_000 });
        assert.equal(r.code, 0, r.stderr + r.stdout);
        const after = await snapshot(c, h1);
        assertKept(`after weft cleanup (output: ${r.stdout})`, before, after);
        // And weft's own state is gone: no marked route, no VTEP.
        assert.equal(await c.exec(h1, ["ip", "route", "show", "table", "all", "proto", "87"]), "");
        assert.ok(!(await c.exec(h1, ["ip", "link", "show"])).includes("flannel.1"));
      });
    },
  });
}
