/**
 * `weft cleanup` on a real cluster (3 hosts, vxlan, etcd): after h1's agent is stopped, cleanup
 * inside h1's namespace removes weft's device, routes, iptables chains, subnet.env and (with
 * --release-lease) h1's lease, while an operator's routes, chains and look-alike device stay and
 * the other hosts' leases stay. A dry run changes nothing; an unreachable registry still gets
 * the kernel cleaned and fails (exit 1) only for the lease.
 *
 * @example
 * ```sh
 * deno test -A test/cleanup_test.ts
 * ```
 */
import assert from "node:assert/strict";
import { type Cluster, type Host, withCluster } from "../kit/cluster.ts";
import { owners } from "../../src/cli/cleanup.ts";
import { planKernel } from "../../src/backend/owned.ts";
import { describeRestore } from "../../src/iptables/restore.ts";
import { parseCidr } from "../../src/base/ipv4.ts";
import { parseNetworkConfig } from "../../src/config/network.ts";
import type { Link } from "../../ffi/libnl/mod.ts";

Deno.test("cleanup plan: weft's devices and routes only", async () => {
  const link = (index: number, name: string, kind: string | null, id?: number): Link => ({
    index,
    name,
    kind,
    mtu: 1450,
    up: true,
    mac: "",
    master: null,
    vxlan: id === undefined
      ? undefined
      : { id, local: null, port: 8472, learning: false, gbp: false, devIndex: 2 },
  });
  const links = [
    link(2, "eth0", "veth"),
    link(5, "flannel.1", "vxlan", 1),
    link(6, "flannel.7", "vxlan", 7),
    link(7, "flannel0", "tun"),
    link(8, "flannel.9", "dummy"),
  ];
  const routes = [
    { dst: "198.19.2.0/24", gw: "198.19.2.0", dev: 5, onlink: true },
    { dst: "198.19.0.0/16", dev: 7 },
    { dst: "198.19.3.0/24", gw: "198.18.0.13", dev: 2 }, // host-gw: weft's
    { dst: "198.19.250.0/24", dev: 2 }, // no gateway: the operator's
    { dst: "198.18.99.0/24", gw: "198.18.0.1", dev: 2 }, // outside the network
    { dst: "198.19.1.0/24", gw: "198.18.0.11", dev: 2 }, // own subnet: never weft's
  ];
  const base = {
    links,
    routes,
    network: parseCidr("198.19.0.0/16"),
    own: parseCidr("198.19.1.0/24"),
    extIndex: 2,
  };
  // What the owners declare under a vxlan config with VNI 1, and with no config at all.
  const vni1 = await owners(
    parseNetworkConfig(`{"Network":"198.19.0.0/16","Backend":{"Type":"vxlan","VNI":1}}`),
  );
  const known = planKernel(vni1, base);
  assert.deepEqual(known.devices.map((d) => d.link.name), ["flannel.1", "flannel0"]);
  assert.deepEqual(known.routes.map((r) => r.text), [
    "198.19.2.0/24 via 198.19.2.0 dev flannel.1 onlink",
    "198.19.0.0/16 dev flannel0",
    "198.19.3.0/24 via 198.18.0.13 dev eth0",
  ]);
  assert.equal(known.notes.length, 2, known.notes.join("\n")); // flannel.7 and the dummy
  const unknown = planKernel(await owners(null), { ...base, network: null, extIndex: null });
  assert.deepEqual(unknown.devices.map((d) => d.link.name), ["flannel.1", "flannel.7", "flannel0"]);
  assert.equal(unknown.routes.length, 2, "without a network only device routes are weft's");
  assert.deepEqual(
    describeRestore(
      "iptables-nft",
      "*filter\n-D FORWARD -j FLANNEL-FWD\n-F FLANNEL-FWD\n" +
        "-X FLANNEL-FWD\nCOMMIT\n",
    ),
    [
      'iptables rule "-t filter -A FORWARD -j FLANNEL-FWD" (iptables-nft)',
      "iptables chain FLANNEL-FWD in table filter (iptables-nft)",
    ],
  );
});

interface HostState {
  links: string[];
  routes: string[];
  save: string;
  subnetEnv: boolean;
}

async function state(c: Cluster, h: Host): Promise<HostState> {
  const links = (JSON.parse(await c.exec(h, ["ip", "-j", "link", "show"])) as { ifname: string }[])
    .map((l) => l.ifname);
  const routes = (JSON.parse(await c.exec(h, ["ip", "-j", "route", "show", "table", "main"])) as {
    dst: string;
    gateway?: string;
    dev: string;
  }[]).map((r) => `${r.dst}${r.gateway ? ` via ${r.gateway}` : ""} dev ${r.dev}`);
  const save = await c.exec(h, ["iptables-save"]);
  const subnetEnv = await Deno.stat(h.subnetFile).then(() => true, () => false);
  return { links, routes, save, subnetEnv };
}

async function leaseIps(c: Cluster, reg: string[]): Promise<string[]> {
  const out = await c.weftOk("h2", ["leases", "--json", ...reg], {
    timeoutMs: 30_000,
  });
  return (JSON.parse(out) as { publicIP: string }[]).map((l) => l.publicIP).sort();
}

Deno.test({
  name: "cleanup: removes weft's state on h1 and its lease, keeps the operator's and the peers'",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await withCluster({ hosts: 3, registry: "etcd" }, async (c) => {
      const [h1, h2, h3] = c.hosts;
      // Forward rules are on by default; --ip-masq adds the nat chain. Fine inside the netns.
      await c.startAll({ backend: "vxlan", extraArgs: ["--ip-masq"] });
      const reg = c.registryArgs();
      assert.deepEqual(await leaseIps(c, reg), [h1.ip, h2.ip, h3.ip]);

      // What an operator (or an old flannel) has on h1 besides weft's state.
      const ops: string[][] = [
        ["ip", "route", "add", "198.19.250.0/24", "dev", "eth0"],
        ["ip", "route", "add", "198.18.99.0/24", "via", "198.18.0.1", "dev", "eth0"],
        ["ip", "link", "add", "flannel.9", "type", "bridge"],
        ["iptables", "-N", "OPS-KEEP"],
        ["iptables", "-A", "FORWARD", "-j", "OPS-KEEP"],
        ["iptables", "-t", "nat", "-N", "OPS-NAT"],
        ["iptables", "-t", "nat", "-A", "POSTROUTING", "-j", "OPS-NAT"],
        // Left by weft itself: a stale host-gw route and a udp TUN from an earlier config.
        ["ip", "route", "add", "198.19.240.0/24", "via", h3.ip, "dev", "eth0"],
        ["ip", "tuntap", "add", "flannel0", "mode", "tun"],
      ];
      for (const cmd of ops) await c.exec(h1, cmd);

      const st = await h1.agent!.stop("SIGTERM");
      assert.equal(st.code, 0);
      const before = await state(c, h1);
      assert.ok(before.links.includes("flannel.1"), before.links.join(" "));
      assert.ok(before.save.includes(":FLANNEL-FWD") && before.save.includes(":FLANNEL-POSTRTG"));
      const peerRoutes = before.routes.filter((r) => r.endsWith("dev flannel.1"));
      assert.equal(peerRoutes.length, 2, before.routes.join("\n"));

      const cleanup = (extra: string[], registry = reg) =>
        c.weft(h1, [...c.cleanupArgs(h1, registry), ...extra], { timeoutMs: 60_000 });

      // Dry run: says what it would do, changes nothing.
      const t0 = performance.now();
      const dry = await cleanup(["--dry-run", "--release-lease"]);
      assert.equal(dry.code, 0, dry.stderr + dry.stdout);
      for (const want of ["would remove device flannel.1", "would remove lease", "FLANNEL-FWD"]) {
        assert.ok(dry.stdout.includes(want), `dry run lacks "${want}":\n${dry.stdout}`);
      }
      const same = await state(c, h1);
      assert.deepEqual(same.links, before.links);
      assert.deepEqual(same.routes, before.routes);
      assert.ok(same.subnetEnv);
      assert.deepEqual(await leaseIps(c, reg), [h1.ip, h2.ip, h3.ip]);

      // The real run.
      const r = await cleanup(["--release-lease"]);
      const ms = Math.round(performance.now() - t0);
      assert.equal(r.code, 0, r.stderr + r.stdout);
      const after = await state(c, h1);
      const out = r.stdout;
      assert.ok(!after.links.includes("flannel.1"), "flannel.1 still there");
      assert.ok(!after.links.includes("flannel0"), "flannel0 still there");
      assert.ok(after.links.includes("flannel.9"), "the operator's bridge flannel.9 was removed");
      assert.ok(out.includes("removed device flannel.1"), out);
      assert.ok(out.includes("removed route 198.19.240.0/24 via"), out);
      assert.deepEqual(after.routes.filter((r) => r.includes("flannel")), []);
      assert.ok(
        !after.routes.some((r) => r.startsWith("198.19.240.0/24")),
        after.routes.join("\n"),
      );
      assert.ok(after.routes.includes("198.19.250.0/24 dev eth0"), after.routes.join("\n"));
      assert.ok(after.routes.includes("198.18.99.0/24 via 198.18.0.1 dev eth0"));
      for (
        const gone of [":FLANNEL-FWD", ":FLANNEL-POSTRTG", "-j FLANNEL-FWD", "-j FLANNEL-POSTRTG"]
      ) {
        assert.ok(!after.save.includes(gone), `${gone} still in iptables-save:\n${after.save}`);
      }
      for (const kept of [":OPS-KEEP", "-A FORWARD -j OPS-KEEP", ":OPS-NAT", "-j OPS-NAT"]) {
        assert.ok(after.save.includes(kept), `operator's ${kept} was removed:\n${after.save}`);
      }
      assert.equal(after.subnetEnv, false, "subnet.env still there");
      assert.deepEqual(await leaseIps(c, reg), [h2.ip, h3.ip]);
      console.log(`cleanup on h1: dry run + real run ${ms} ms\n${out}`);

      // Again: nothing left to do.
      const again = await cleanup(["--release-lease"]);
      assert.equal(again.code, 0, again.stderr);
      assert.match(again.stdout, /no lease with public IP/);

      // Registry down (nothing listens on that port): the kernel is still cleaned, from
      // subnet.env and the devices present; the lease release fails at the end, exit 1.
      await h3.agent!.stop("SIGTERM");
      const down = [
        "--registry",
        "etcd",
        "--etcd-endpoints",
        `http://${c.registryHost.ip}:2999`,
        "--etcd-prefix",
        c.etcdPrefix,
      ];
      const r3 = await c.weft(h3, [
        ...c.cleanupArgs(h3, down),
        "--release-lease",
        "--registry-timeout",
        "3",
      ], { timeoutMs: 60_000 });
      assert.equal(r3.code, 1, r3.stdout + r3.stderr);
      assert.ok(r3.stdout.includes("removed device flannel.1"), r3.stdout);
      assert.match(r3.stderr, /lease not released: the registry cannot be reached/);
      const s3 = await state(c, h3);
      assert.ok(!s3.links.includes("flannel.1"));
      assert.ok(!s3.save.includes("FLANNEL-FWD"));
      assert.equal(s3.subnetEnv, false);
      assert.deepEqual(await leaseIps(c, reg), [h2.ip, h3.ip]);
      void h2;
    });
  },
});
