/**
 * `weft doctor` on a 3-host vxlan cluster on etcd (and a shorter run on Deno KV): healthy gives exit 0 and no warn;
 * then one thing is broken at a time as h1 sees it (a peer's route, neighbour, FDB entry; a stale
 * route via another device; FORWARD policy DROP without forward rules; UDP 8472 dropped on h2 (the
 * VXLAN frame doctor sends by hand to h2:8472 is not answered either); h1's own traffic into
 * flannel.1 dropped (that frame is answered: h1's own path is named);
 * h2's underlay MTU shrunk, a black hole for full-size packets; a duplicate-PublicIP lease; h3's
 * agent stopped until its lease expires), doctor must name it with its fix, and after the repair
 * report ok again. Agents run with a long reconcile interval so they do not repair the breakage
 * while doctor looks.
 */
import assert from "node:assert/strict";
import { type Cluster, type RunResult, withCluster } from "../kit/cluster.ts";
import { waitFor } from "../kit/proc.ts";
import { formatIp } from "../../src/base/ipv4.ts";
import { openKvRegistry } from "../../src/registry/kv/mod.ts";

const HEALTHZ = 9473;
const AGENT = {
  ttl: 20,
  healthzPort: HEALTHZ,
  extraArgs: ["--reconcile-interval", "3600", "--iptables-forward-rules=false"],
};

function doctorArgs(c: Cluster, host: string): string[] {
  return ["doctor", ...c.hostFlags(host, HEALTHZ), "--iptables-forward-rules=false"];
}

async function doctor(c: Cluster, host = "h1", extra: string[] = []): Promise<RunResult> {
  return await c.weft(host, [...doctorArgs(c, host), ...extra], { timeoutMs: 30_000 });
}

/** `ip route replace` of a vxlan peer's route as weft makes it. */
const peerRoute = (subnet: string, gw: string) => [
  "ip",
  "route",
  "replace",
  subnet,
  "via",
  gw,
  "dev",
  "flannel.1",
  "onlink",
  "proto",
  "87",
];

let lastOutput = "";
const lines = (r: RunResult, status: string) =>
  r.stdout.split("\n").filter((l) => l.startsWith(`${status} `));

/** Doctor exits 1 with a fail line matching `re`; returns that line. */
async function expectFail(c: Cluster, re: RegExp, host = "h1"): Promise<string> {
  const r = await doctor(c, host);
  lastOutput = r.stdout;
  const hit = lines(r, "fail").find((l) => re.test(l));
  assert.ok(
    hit,
    `doctor on ${host} should fail with ${re}; got exit ${r.code}:\n${r.stdout}${r.stderr}`,
  );
  assert.equal(r.code, 1, r.stdout);
  return hit;
}

async function expectHealthy(c: Cluster, what: string): Promise<void> {
  const r = await doctor(c);
  assert.deepEqual(
    [...lines(r, "warn"), ...lines(r, "fail")],
    [],
    `${what}: doctor should find nothing:\n${r.stdout}${r.stderr}`,
  );
  assert.equal(r.code, 0, r.stdout + r.stderr);
}

Deno.test("weft doctor names each broken thing with its fix, and ok after the repair", async () => {
  await withCluster({ hosts: 3, registry: "etcd" }, async (c) => {
    try {
      await c.startAll(AGENT);
      await c.waitPeersProgrammed();
      await expectHealthy(c, "a healthy cluster");
      const json = await doctor(c, "h1", ["--json", "--peer", c.host("h2").ip]);
      const report = JSON.parse(json.stdout);
      assert.equal(json.code, 0, json.stdout);
      assert.equal(report.exitCode, 0);
      assert.equal(report.summary.fail, 0);
      const peerSubnets = new Set(
        report.checks.filter((x: { subnet?: string; check: string }) =>
          x.check.startsWith("probe.")
        )
          .map((x: { subnet: string }) => x.subnet),
      );
      assert.equal(peerSubnets.size, 1, `--peer probes one peer only: ${json.stdout}`);

      const env2 = (await c.readSubnetEnv("h2"))!;
      const sub2 = `${formatIp(env2.subnet.ip)}/${env2.subnet.prefix}`;
      const gw2 = formatIp(env2.subnet.ip);
      const h2 = c.host("h2");
      const mac2 = JSON.parse(await c.exec("h2", ["ip", "-j", "link", "show", "flannel.1"]))[0]
        .address as string;
      const goodRoute = peerRoute(sub2, gw2);

      // A peer's route.
      await c.exec("h1", ["ip", "route", "del", sub2]);
      const route = await expectFail(
        c,
        new RegExp(`^fail kernel\\.route: peer ${sub2} .*route missing`),
      );
      assert.match(route, /fix: .*ip route replace .* via .* dev flannel\.1 onlink/);
      await c.exec("h1", goodRoute);
      await expectHealthy(c, "route restored");

      // A peer's neighbour.
      await c.exec("h1", ["ip", "neigh", "del", gw2, "dev", "flannel.1"]);
      const neigh = await expectFail(
        c,
        new RegExp(`^fail kernel\\.neigh: peer ${sub2} .*neighbour ${gw2} missing`),
      );
      assert.doesNotMatch(
        lastOutput,
        /encapsulated traffic dropped/,
        "a kernel cause is no firewall",
      );
      // The echo sent by hand in a VXLAN frame to h2's UDP 8472 bypasses h1's missing neighbour.
      assert.match(
        lastOutput,
        new RegExp(
          `^fail probe\\.overlay: peer ${sub2} .*VXLAN frame sent straight to ${h2.ip}:8472 is ` +
            "answered .*the port and the peer are fine",
          "m",
        ),
      );
      assert.match(
        neigh,
        new RegExp(`fix: .*ip neigh replace ${gw2} lladdr ${mac2} dev flannel\\.1`),
      );
      await c.exec("h1", [
        "ip",
        "neigh",
        "replace",
        gw2,
        "lladdr",
        mac2,
        "dev",
        "flannel.1",
        "nud",
        "permanent",
      ]);
      await expectHealthy(c, "neighbour restored");

      // A peer's FDB entry.
      await c.exec("h1", ["bridge", "fdb", "del", mac2, "dev", "flannel.1", "dst", h2.ip, "self"]);
      const fdb = await expectFail(
        c,
        new RegExp(
          `^fail kernel\\.fdb: peer ${sub2} .*${mac2} dev flannel\\.1 dst ${h2.ip} missing`,
        ),
      );
      assert.match(fdb, /fix: .*bridge fdb replace/);
      await c.exec("h1", [
        "bridge",
        "fdb",
        "append",
        mac2,
        "dev",
        "flannel.1",
        "dst",
        h2.ip,
        "self",
        "permanent",
      ]);
      await expectHealthy(c, "fdb entry restored");

      // A stale route for the peer's subnet via another device (flannel issue 2554's cni0).
      await c.exec("h1", ["ip", "link", "add", "stale0", "type", "bridge"]);
      await c.exec("h1", ["ip", "link", "set", "stale0", "up"]);
      await c.exec("h1", ["ip", "route", "replace", sub2, "dev", "stale0"]);
      const stale = await expectFail(
        c,
        new RegExp(`^fail kernel\\.route: peer ${sub2} .*route is ${sub2} dev stale0`),
      );
      assert.match(stale, /fix: ip route replace .* dev flannel\.1 onlink/);
      await c.exec("h1", goodRoute);
      await c.exec("h1", ["ip", "link", "del", "stale0"]);
      await expectHealthy(c, "stale route replaced");

      // FORWARD policy DROP, forward rules off.
      await c.exec("h1", ["iptables", "-P", "FORWARD", "DROP"]);
      const fwd = await expectFail(c, /^fail host\.forward: FORWARD policy is DROP/);
      assert.match(fwd, /fix: .*--iptables-forward-rules/);
      await c.exec("h1", ["iptables", "-P", "FORWARD", "ACCEPT"]);
      await expectHealthy(c, "FORWARD policy ACCEPT again");

      // UDP 8472 dropped on h2: overlay dead, underlay alive.
      const drop = ["INPUT", "-p", "udp", "--dport", "8472", "-j", "DROP"];
      await c.exec("h2", ["iptables", "-I", ...drop]);
      const udp = await expectFail(
        c,
        new RegExp(
          `^fail probe\\.overlay: peer ${sub2} .*encapsulated traffic dropped between us \\(firewall or UDP port 8472/8285 blocked\\?\\)`,
        ),
      );
      assert.match(udp, new RegExp(`fix: allow UDP 8472 between ${c.host("h1").ip} and ${h2.ip}`));
      assert.match(udp, new RegExp(`VXLAN frame sent straight to ${h2.ip}:8472 is not answered`));
      await c.exec("h2", ["iptables", "-D", ...drop]);
      await expectHealthy(c, "UDP 8472 allowed again");

      // h1 drops what it sends into flannel.1: the VXLAN frame sent by hand to h2:8472 is
      // answered, so the port and h2 are fine and the fault is h1's own path.
      const local = ["OUTPUT", "-o", "flannel.1", "-d", gw2, "-j", "DROP"];
      await c.exec("h1", ["iptables", "-I", ...local]);
      const own = await expectFail(
        c,
        new RegExp(
          `^fail probe\\.overlay: peer ${sub2} .*${h2.ip}:8472 is answered .*this host's own path to it is broken`,
        ),
      );
      assert.doesNotMatch(own, /encapsulated traffic dropped/);
      await c.exec("h1", ["iptables", "-D", ...local]);
      await expectHealthy(c, "h1's OUTPUT rule removed");

      // h2's underlay MTU shrunk: small packets pass, full-size ones are dropped on arrival.
      await c.exec("h2", ["ip", "link", "set", "eth0", "mtu", "1400"]);
      const mtu = await expectFail(
        c,
        new RegExp(
          `^fail probe\\.mtu: peer ${sub2} .*full-size 1450-byte don't-fragment packets .* lost while small ones pass`,
        ),
      );
      assert.match(mtu, /fix: lower the overlay MTU/);
      await c.exec("h2", ["ip", "link", "set", "eth0", "mtu", "1500"]);
      await expectHealthy(c, "h2's MTU restored");

      // A duplicate-PublicIP lease (h2's address under another subnet).
      const key = `${c.etcdPrefix}/subnets/198.19.250.0-24`;
      const value = JSON.stringify({
        PublicIP: h2.ip,
        PublicIPv6: null,
        BackendType: "vxlan",
        BackendData: { VNI: 1, VtepMAC: "0e:00:00:00:fa:01" },
      });
      const etcdctl = ["etcdctl", "--endpoints", c.etcd!.endpoint];
      await c.exec("reg", [...etcdctl, "put", key, value]);
      const dup = await expectFail(
        c,
        new RegExp(`^fail registry\\.duplicate-public-ip: PublicIP ${h2.ip} is in 2 leases`),
      );
      assert.match(dup, /fix: delete the stale lease: etcdctl del /);
      await c.exec("reg", [...etcdctl, "del", key]);
      await waitFor(
        "doctor ok once the duplicate lease is gone and its entries removed",
        async () => {
          const r = await doctor(c);
          if (r.code !== 0 || lines(r, "warn").length) throw new Error(r.stdout);
          return true;
        },
        { timeoutMs: 20_000, intervalMs: 500 },
      );

      // h3's agent stops and its lease expires: doctor on h3 names the missing lease.
      await c.host("h3").agent!.kill();
      await expectFail(c, /^fail agent\.running: no agent answers/, "h3");
      await waitFor("h3's lease to expire", async () => {
        const r = await doctor(c, "h3");
        const l = lines(r, "fail").find((x) => x.startsWith("fail registry.own-lease:"));
        if (!l) throw new Error(r.stdout);
        assert.match(
          l,
          new RegExp(`no lease for this node's public IP ${c.host("h3").ip}.*fix: start the agent`),
        );
        return true;
      }, { timeoutMs: 40_000, intervalMs: 1000 });
    } catch (e) {
      await c.dumpLogs();
      throw e;
    }
  });
});

Deno.test("weft doctor on Deno KV: healthy, a missing peer route, a duplicate-PublicIP lease", async () => {
  await withCluster({ hosts: 3, registry: "kv" }, async (c) => {
    try {
      await c.startAll(AGENT);
      await c.waitPeersProgrammed();
      await expectHealthy(c, "a healthy KV cluster");
      const env2 = (await c.readSubnetEnv("h2"))!;
      const sub2 = `${formatIp(env2.subnet.ip)}/${env2.subnet.prefix}`;
      const gw2 = formatIp(env2.subnet.ip);
      await c.exec("h1", ["ip", "route", "del", sub2]);
      await expectFail(c, new RegExp(`^fail kernel\\.route: .*${sub2.replace(".", "\\.")}`));
      await c.exec("h1", peerRoute(sub2, gw2));
      await expectHealthy(c, "the route put back");

      const h2 = c.host("h2");
      const r = await openKvRegistry({ path: c.kvPath! });
      try {
        const value = JSON.stringify({
          PublicIP: h2.ip,
          PublicIPv6: null,
          BackendType: "vxlan",
          BackendData: { VNI: 1, VtepMAC: "0e:00:00:00:fa:02" },
        });
        assert.ok(await r.createLease("198.19.251.0-24", value, 600));
        await expectFail(
          c,
          new RegExp(`^fail registry\\.duplicate-public-ip: PublicIP ${h2.ip} is in 2 leases`),
        );
        assert.ok(await r.deleteLease("198.19.251.0-24"));
      } finally {
        await r.close();
      }
      await waitFor("doctor ok once the duplicate lease is gone", async () => {
        const d = await doctor(c);
        if (d.code !== 0 || lines(d, "warn").length) throw new Error(d.stdout);
        return true;
      }, { timeoutMs: 20_000, intervalMs: 500 });
    } catch (e) {
      await c.dumpLogs();
      throw e;
    }
  });
});
