/**
 * `weft doctor` on a 3-host dual-stack vxlan cluster (Deno KV): healthy gives exit 0 with no
 * warn, the IPv6 half checked and probed (flannel-v6.1, ICMPv6 over the overlay); then h2's IPv6
 * route, neighbour and FDB entry are deleted by hand on h1 one at a time, and doctor must name
 * each with its `ip -6` / `bridge` fix, and report ok after the repair. One cluster start serves
 * every break; agents reconcile rarely so they do not repair the breakage while doctor looks.
 */
import assert from "node:assert/strict";
import { type Cluster, type RunResult, withCluster } from "../kit/cluster.ts";
import { formatCidr6, formatIp6 } from "../../src/base/ipv6.ts";

const HEALTHZ = 9475;

async function doctor(c: Cluster): Promise<RunResult> {
  return await c.weft("h1", [
    "doctor",
    ...c.hostFlags("h1", HEALTHZ),
    "--iptables-forward-rules=false",
  ], { timeoutMs: 30_000 });
}

const lines = (r: RunResult, status: string) =>
  r.stdout.split("\n").filter((l) => l.startsWith(`${status} `));

async function expectHealthy(c: Cluster, what: string): Promise<RunResult> {
  const r = await doctor(c);
  assert.deepEqual(
    [...lines(r, "warn"), ...lines(r, "fail")],
    [],
    `${what}: doctor should find nothing:\n${r.stdout}${r.stderr}`,
  );
  assert.equal(r.code, 0, r.stdout + r.stderr);
  return r;
}

/** Doctor exits 1 with a fail line matching `re`; returns that line. */
async function expectFail(c: Cluster, re: RegExp): Promise<string> {
  const r = await doctor(c);
  const hit = lines(r, "fail").find((l) => re.test(l));
  assert.ok(hit, `doctor should fail with ${re}; got exit ${r.code}:\n${r.stdout}${r.stderr}`);
  assert.equal(r.code, 1, r.stdout);
  return hit;
}

const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

Deno.test("weft doctor on dual stack: the IPv6 route, neighbour and FDB entry named, ok after repair", async () => {
  await withCluster({ hosts: 3, registry: "kv", ipv6: true }, async (c) => {
    try {
      await c.startAll({
        backend: "vxlan",
        healthzPort: HEALTHZ,
        netConfig: { EnableIPv6: true, IPv6Network: c.network6 },
        extraArgs: ["--reconcile-interval", "3600", "--iptables-forward-rules=false"],
      });
      await c.waitPeersProgrammed();
      const healthy = await expectHealthy(c, "a healthy dual-stack cluster");
      const env2 = (await c.readSubnetEnv("h2"))!;
      const sub6 = formatCidr6(env2.ipv6!.subnet);
      const gw6 = formatIp6(env2.ipv6!.subnet.ip);
      const h2 = c.host("h2");
      // Both halves checked and probed: ICMPv6 over flannel-v6.1, full-size DF packets too.
      for (
        const re of [
          /^ok +kernel\.device6: flannel-v6\.1: VNI 1, local 2001:db8:/m,
          new RegExp(`^ok +kernel\\.peer: peer ${esc(sub6)} .*route, neighbour and FDB entry`, "m"),
          new RegExp(`^ok +probe\\.overlay: peer ${esc(sub6)} .*${esc(gw6)} answers`, "m"),
          new RegExp(`^ok +probe\\.mtu: peer ${esc(sub6)} .*1430-byte DF packets pass`, "m"),
          /^ok +host\.ip-forward6: /m,
          /^ok +mtu\.device6: eth0 MTU 1500, flannel-v6\.1 MTU 1430/m,
        ]
      ) assert.match(healthy.stdout, re);
      const mac6 = JSON.parse(await c.exec("h2", ["ip", "-j", "link", "show", "flannel-v6.1"]))[0]
        .address as string;

      // h2's IPv6 route.
      await c.exec("h1", ["ip", "-6", "route", "del", sub6]);
      const route = await expectFail(
        c,
        new RegExp(`^fail kernel\\.route: peer ${esc(sub6)} \\(${esc(h2.ip6!)}\\): route missing`),
      );
      assert.match(
        route,
        new RegExp(
          `fix: .*ip -6 route replace ${esc(sub6)} via ${esc(gw6)} dev flannel-v6\\.1 onlink`,
        ),
      );
      await c.exec("h1", [
        "ip",
        "-6",
        "route",
        "replace",
        sub6,
        "via",
        gw6,
        "dev",
        "flannel-v6.1",
        "onlink",
        "proto",
        "87",
      ]);
      await expectHealthy(c, "IPv6 route restored");

      // h2's IPv6 neighbour.
      await c.exec("h1", ["ip", "-6", "neigh", "del", gw6, "dev", "flannel-v6.1"]);
      const neigh = await expectFail(
        c,
        new RegExp(`^fail kernel\\.neigh: peer ${esc(sub6)} .*neighbour ${esc(gw6)} missing`),
      );
      assert.match(
        neigh,
        new RegExp(`fix: .*ip -6 neigh replace ${esc(gw6)} lladdr ${mac6} dev flannel-v6\\.1`),
      );
      await c.exec("h1", [
        "ip",
        "-6",
        "neigh",
        "replace",
        gw6,
        "lladdr",
        mac6,
        "dev",
        "flannel-v6.1",
        "nud",
        "permanent",
      ]);
      await expectHealthy(c, "IPv6 neighbour restored");

      // h2's IPv6 FDB entry.
      const fdb = [mac6, "dev", "flannel-v6.1", "dst", h2.ip6!, "self"];
      await c.exec("h1", ["bridge", "fdb", "del", ...fdb]);
      const miss = await expectFail(
        c,
        new RegExp(
          `^fail kernel\\.fdb: peer ${esc(sub6)} .*${mac6} dev flannel-v6\\.1 dst ${
            esc(h2.ip6!)
          } missing`,
        ),
      );
      assert.match(miss, /fix: .*bridge fdb replace/);
      await c.exec("h1", ["bridge", "fdb", "append", ...fdb, "permanent"]);
      await expectHealthy(c, "IPv6 FDB entry restored");
    } catch (e) {
      await c.dumpLogs();
      throw e;
    }
  });
});
