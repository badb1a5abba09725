/**
 * The pure parts of `weft doctor`: result shaping and exit code, the text and JSON printers, the
 * registry and kernel-vs-registry checks over synthetic facts, the ICMP packet layout, the
 * runner's bounds, and the command's usage errors (exit 2 before anything is opened).
 */
import assert from "node:assert/strict";
import { countByStatus, exitCodeOf, fail, ok, warn } from "../../src/doctor/check.ts";
import { renderJson, renderLine, renderText } from "../../src/doctor/print.ts";
import { runGroups } from "../../src/doctor/runner.ts";
import { mapLimit } from "../../src/health/parallel.ts";
import { type Facts, gatherFacts, peerSelected } from "../../src/doctor/facts.ts";
import { registryChecks } from "../../src/doctor/registry_checks.ts";
import { kernelChecks, type KernelSnapshot } from "../../src/doctor/kernel_checks.ts";
import { explanations, PARALLEL, probeBudgetMs } from "../../src/doctor/reach_checks.ts";
import { isAgentCommand } from "../../src/doctor/agent_checks.ts";
import { hostChecks, type HostSettings } from "../../src/doctor/host_checks.ts";
import { mtuChecks } from "../../src/doctor/mtu_checks.ts";
import { echoRequest, inetChecksum, parseIcmp } from "../../ffi/libc/icmp.ts";
import { parseNetworkConfig } from "../../src/config/network.ts";
import { parseCidr } from "../../src/base/ipv4.ts";
import type { KnownLease } from "../../src/lease/codec.ts";
import { main } from "../../src/cli/main.ts";
import { doctorFacts, ETH0 } from "../kit/doctor_facts.ts";

const MAC1 = "0e:00:00:00:00:01";
const MAC2 = "0e:00:00:00:00:02";

function lease(
  subnet: string,
  ip: string,
  mac: string,
  expiresAt: number | null = null,
): KnownLease {
  return {
    key: subnet.replace("/", "-"),
    subnet: parseCidr(subnet),
    attrs: { publicIP: ip, backendType: "vxlan", backendData: { VNI: 1, VtepMAC: mac } },
    expiresAt,
    revision: 1,
  };
}

const facts = doctorFacts;

const VTEP = 5;
function snapshot(over: Partial<KernelSnapshot> = {}): KernelSnapshot {
  return {
    links: [
      { ...ETH0 },
      {
        index: VTEP,
        name: "flannel.1",
        kind: "vxlan",
        mtu: 1450,
        up: true,
        mac: MAC1,
        master: null,
        vxlan: {
          id: 1,
          local: "198.18.0.11",
          port: 8472,
          learning: false,
          gbp: false,
          devIndex: 2,
        },
      },
      {
        index: 7,
        name: "cni0",
        kind: "bridge",
        mtu: 1450,
        up: true,
        mac: "0e:00:00:00:02:00",
        master: null,
      },
    ],
    routes: [{ dst: "198.19.2.0/24", gw: "198.19.2.0", dev: VTEP, onlink: true, protocol: 87 }],
    neigh: [{ dev: VTEP, ip: "198.19.2.0", mac: MAC2, state: 0x80, flags: 0, permanent: true }],
    fdb: [{
      dev: VTEP,
      mac: MAC2,
      dst: "198.18.0.12",
      state: 0x80,
      flags: 2,
      permanent: true,
      self: true,
    }],
    vtepAddrs: ["198.19.1.0/32"],
    ...over,
  };
}

const L1 = lease("198.19.1.0/24", "198.18.0.11", MAC1);
const L2 = lease("198.19.2.0/24", "198.18.0.12", MAC2);

Deno.test("doctor results: exit code 1 only with a fail, counts by status", () => {
  const rs = [ok("a.b", "fine"), warn("a.c", "meh", "do x")];
  assert.equal(exitCodeOf(rs), 0);
  assert.equal(exitCodeOf([...rs, fail("a.d", "broken", "do y", "198.19.2.0/24")]), 1);
  assert.deepEqual(countByStatus([...rs, fail("a.d", "x", "y")]), { ok: 1, warn: 1, fail: 1 });
  assert.deepEqual(fail("a.d", "broken", "do y", "198.19.2.0/24"), {
    status: "fail",
    check: "a.d",
    saw: "broken",
    fix: "do y",
    subnet: "198.19.2.0/24",
  });
});

Deno.test("doctor printer: one line per check starting with its status, fix after it; JSON the same", () => {
  assert.equal(
    renderLine(ok("registry.reachable", "etcd answered")),
    "ok   registry.reachable: etcd answered",
  );
  assert.equal(
    renderLine(fail("kernel.route", "route\nmissing", "ip route replace x")),
    "fail kernel.route: route missing -- fix: ip route replace x",
  );
  const text = renderText([ok("a.b", "x"), warn("a.c", "y", "z")]);
  assert.deepEqual(text.split("\n").filter((l) => /^(ok|warn|fail) /.test(l)).length, 2);
  assert.match(text, /\n1 ok, 1 warn, 0 fail\n$/);
  const j = JSON.parse(renderJson([ok("a.b", "x"), fail("a.c", "y", "z")]));
  assert.equal(j.exitCode, 1);
  assert.deepEqual(j.summary, { ok: 1, warn: 0, fail: 1 });
  assert.deepEqual(j.checks[1], { status: "fail", check: "a.c", saw: "y", fix: "z" });
});

Deno.test("doctor registry checks: duplicate PublicIP, overlap, outside the network, missing own lease", () => {
  const dup = lease("198.19.9.0/24", "198.18.0.12", MAC2);
  const over = lease("198.19.2.0/23", "198.18.0.14", MAC2);
  const outside = lease("198.20.0.0/24", "198.18.0.15", MAC2);
  const rs = registryChecks(facts([L1, L2, dup, over, outside]));
  const line = (check: string) => rs.filter((r) => r.check === check && r.status === "fail");
  assert.match(
    line("registry.duplicate-public-ip")[0].saw,
    /PublicIP 198\.18\.0\.12 is in 2 leases/,
  );
  assert.match(
    line("registry.duplicate-public-ip")[0].fix!,
    /etcdctl del \/coreos\.com\/network\/subnets\//,
  );
  assert.match(
    line("registry.lease-overlap")[0].saw,
    /198\.19\.2\.0-23 .* and 198\.19\.2\.0-24 .* overlap/,
  );
  assert.match(
    line("registry.lease-range")[0].saw,
    /198\.20\.0\.0-24 .* outside the Network 198\.19\.0\.0\/16/,
  );
  const none = registryChecks(facts([L2], { own: null }));
  assert.match(
    none.find((r) => r.check === "registry.own-lease")!.saw,
    /no lease for .* 198\.18\.0\.11/,
  );
  assert.equal(exitCodeOf(registryChecks(facts([L1, L2]))), 0);
  const down = registryChecks(facts([], { registryError: "connection refused" }));
  assert.deepEqual(down.map((r) => r.status), ["fail"]);
});

Deno.test("doctor kernel checks: exact per peer, each missing or wrong entry named", () => {
  const good = kernelChecks(facts([L1, L2]), snapshot());
  assert.deepEqual(good.filter((r) => r.status !== "ok"), [], JSON.stringify(good));
  const none = kernelChecks(facts([L1, L2]), snapshot({ routes: [], neigh: [], fdb: [] }));
  assert.deepEqual(
    none.filter((r) => r.status === "fail").map((r) => r.check),
    ["kernel.route", "kernel.neigh", "kernel.fdb"],
  );
  assert.match(
    none[1].fix!,
    /ip route replace 198\.19\.2\.0\/24 via 198\.19\.2\.0 dev flannel\.1 onlink/,
  );
  // A stale cni0 route for the peer's subnet (flannel issue 2554).
  const stale = kernelChecks(
    facts([L1, L2]),
    snapshot({ routes: [{ dst: "198.19.2.0/24", dev: 7 }] }),
  );
  const r = stale.find((x) => x.check === "kernel.route")!;
  assert.match(r.saw, /route is 198\.19\.2\.0\/24 dev cni0, not .* dev flannel\.1 onlink/);
  // The neighbour with another MAC; a route and an FDB entry for no lease.
  const wrong = kernelChecks(
    facts([L1, L2]),
    snapshot({
      neigh: [{ dev: VTEP, ip: "198.19.2.0", mac: MAC1, state: 0x80, flags: 0, permanent: true }],
      routes: [
        ...snapshot().routes,
        { dst: "198.19.44.0/24", gw: "198.19.44.0", dev: VTEP, onlink: true, protocol: 87 },
      ],
      fdb: [...snapshot().fdb, {
        dev: VTEP,
        mac: MAC1,
        dst: "198.18.0.99",
        state: 0x80,
        flags: 2,
        permanent: true,
        self: true,
      }],
    }),
  );
  assert.match(
    wrong.find((x) => x.check === "kernel.neigh")!.saw,
    /is 0e:00:00:00:00:01, the lease says/,
  );
  assert.match(
    wrong.find((x) => x.check === "kernel.stale-route")!.saw,
    /198\.19\.44\.0\/24 .*no lease/,
  );
  assert.match(
    wrong.find((x) => x.check === "kernel.stale-fdb")!.fix!,
    /bridge fdb del .* dst 198\.18\.0\.99/,
  );
  // DirectRouting: a route via the peer's public IP on eth0 is right, without neighbour or FDB.
  const directFacts = facts([L1, L2], {
    config: parseNetworkConfig(
      `{"Network":"198.19.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true}}`,
    ),
  });
  const directRoute = { dst: "198.19.2.0/24", gw: "198.18.0.12", dev: 2, protocol: 87 };
  const direct = kernelChecks(directFacts, snapshot({ routes: [directRoute], neigh: [], fdb: [] }));
  assert.deepEqual(direct.filter((r) => r.status !== "ok"), [], JSON.stringify(direct));
  assert.equal(
    kernelChecks(facts([L1, L2]), snapshot({ routes: [directRoute] })).find((r) =>
      r.check === "kernel.route"
    )?.status,
    "fail",
    "without DirectRouting that route is wrong",
  );
  const noDev = kernelChecks(facts([L1, L2]), snapshot({ links: [] }));
  assert.equal(noDev[0].status, "fail");
  assert.match(noDev[0].saw, /flannel\.1 does not exist/);
});

Deno.test("doctor: a lost probe is explained by an earlier failure about that peer", () => {
  const f = facts([L1, L2, lease("198.19.9.0/24", "198.18.0.12", MAC2)]);
  const ex = explanations(f, [fail("kernel.fdb", "x", "y", "198.19.2.0/24")]);
  assert.equal(ex.get("198.19.9.0/24"), "registry.duplicate-public-ip");
  assert.equal(ex.get("198.19.2.0/24"), "registry.duplicate-public-ip");
  assert.equal(
    explanations(facts([L1, L2]), [fail("kernel.fdb", "x", "y", "198.19.2.0/24")]).get(
      "198.19.2.0/24",
    ),
    "kernel.fdb",
  );
});

Deno.test("doctor --peer selects by subnet, address inside it, or public IP", () => {
  assert.ok(peerSelected(L2, "198.19.2.0/24"));
  assert.ok(peerSelected(L2, "198.19.2.7"));
  assert.ok(peerSelected(L2, "198.18.0.12"));
  assert.ok(!peerSelected(L2, "198.19.3.0/24"));
  assert.ok(peerSelected(L2, undefined));
});

Deno.test("doctor ICMP: echo request checksum and size, replies and frag-needed parsed", () => {
  const req = echoRequest(0x1234, 7, 84);
  assert.equal(req.length, 64);
  assert.equal(inetChecksum(req), 0, "a packet with its checksum sums to zero");
  // An echo reply as a raw socket delivers it: IP header, then ICMP.
  const reply = new Uint8Array(20 + 64);
  reply[0] = 0x45;
  reply.set([198, 19, 2, 0], 12);
  reply.set(req, 20);
  reply[20] = 0;
  assert.deepEqual(parseIcmp(reply, reply.length), {
    kind: "reply",
    from: 0xc6130200,
    id: 0x1234,
    seq: 7,
    bytes: 84,
  });
  // Fragmentation needed (3/4), next-hop MTU 1400, quoting our echo to 198.19.2.0.
  const err = new Uint8Array(20 + 8 + 20 + 8);
  err[0] = 0x45;
  err.set([198, 18, 0, 1], 12);
  err.set([3, 4, 0, 0, 0, 0, 0x05, 0x78], 20);
  err[28] = 0x45;
  err[28 + 9] = 1;
  err.set([198, 19, 2, 0], 28 + 16);
  err.set(req.subarray(0, 8), 48);
  assert.deepEqual(parseIcmp(err, err.length), {
    kind: "unreachable",
    from: 0xc6120001,
    code: 4,
    mtu: 1400,
    dst: 0xc6130200,
    id: 0x1234,
    seq: 7,
  });
  assert.equal(parseIcmp(reply, 10), null);
});

Deno.test("doctor runner: a group that hangs or throws is one fail; mapLimit keeps its bound", async () => {
  const rs = await runGroups([
    { name: "slow", run: () => new Promise(() => {}) },
    {
      name: "broken",
      run: () => {
        throw new Error("boom");
      },
    },
    { name: "fine", run: (before) => [ok("fine.x", `after ${before.length}`)] },
  ], 50);
  assert.deepEqual(rs.map((r) => `${r.status} ${r.check}`), [
    "fail slow.error",
    "fail broken.error",
    "ok fine.x",
  ]);
  assert.match(rs[0].saw, /no answer within/);
  assert.equal(rs[2].saw, "after 2");
  let running = 0, peak = 0;
  const out = await mapLimit([1, 2, 3, 4, 5, 6, 7], 3, async (x) => {
    peak = Math.max(peak, ++running);
    await new Promise((r) => setTimeout(r, 5));
    running--;
    return x * 2;
  });
  assert.deepEqual(out, [2, 4, 6, 8, 10, 12, 14]);
  assert.equal(peak, 3);
});

Deno.test("doctor finds the agent by its command line", () => {
  assert.ok(isAgentCommand(["/usr/local/bin/weft"]));
  assert.ok(isAgentCommand(["/usr/local/bin/weft", "--iface", "eth0"]));
  assert.ok(isAgentCommand(["deno", "run", "-A", "/src/weft/main.ts", "run", "--iface", "eth0"]));
  assert.ok(!isAgentCommand(["deno", "run", "-A", "/src/weft/main.ts", "doctor"]));
  assert.ok(!isAgentCommand(["weft", "leases"]));
  assert.ok(!isAgentCommand(["bash"]));
});

Deno.test("weft doctor: usage errors exit 2 before anything is opened", async () => {
  const err = console.error;
  const seen: string[] = [];
  console.error = (m: string) => seen.push(m);
  try {
    assert.equal(await main(["doctor", "--peer", "nonsense"], {}), 2);
    assert.equal(await main(["doctor", "extra"], {}), 2);
    assert.equal(await main(["doctor", "--no-such-flag"], {}), 2);
  } finally {
    console.error = err;
  }
  assert.match(seen[0], /--peer: "nonsense" is neither a subnet/);
});

Deno.test("doctor never creates a KV registry: a missing --kv-path is a registry failure", async () => {
  const dir = await Deno.makeTempDir({ prefix: "weft-doctor-" });
  try {
    const kvPath = `${dir}/registry.kv`;
    const f = await gatherFacts({
      ...facts([]).opts,
      registry: { kind: "kv", prefix: "/coreos.com/network", kvPath },
      subnetFile: `${dir}/subnet.env`,
    });
    assert.match(f.registryError ?? "", /no Deno KV registry file at .*registry\.kv/);
    assert.equal([...Deno.readDirSync(dir)].length, 0, "nothing was created");
    assert.match(registryChecks(f)[0].fix!, /--kv-path/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("doctor probe budget grows with the peers, in rounds of PARALLEL", () => {
  assert.equal(probeBudgetMs(0), 15_000);
  assert.equal(probeBudgetMs(PARALLEL), 19_000);
  assert.equal(probeBudgetMs(1000), 15_000 + 2 * 4_000);
});

Deno.test("doctor host checks: FORWARD DROP without rules fails, flannel's rules make it ok", () => {
  const settings = (filterRules: string[]): HostSettings => ({
    ipForward: "1",
    rpFilter: 0,
    bridgeNfCallIptables: "1",
    filterRules,
    natRules: [],
    iptablesError: null,
    txChecksum: true,
  });
  const fwd = (f: Facts, rules: string[]) =>
    hostChecks(f, snapshot(), settings(rules)).find((r) => r.check === "host.forward")!;
  const noRules = facts([L1, L2]);
  noRules.opts.forwardRules = false;
  const drop = fwd(noRules, ["-P FORWARD DROP"]);
  assert.equal(drop.status, "fail");
  assert.match(
    drop.fix!,
    /--iptables-forward-rules .* iptables -A FORWARD -s 198\.19\.0\.0\/16 -j ACCEPT/,
  );
  const flannel = [
    "-P FORWARD DROP",
    '-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD',
    '-A FLANNEL-FWD -s 198.19.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT',
    '-A FLANNEL-FWD -d 198.19.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT',
  ];
  assert.equal(fwd(facts([L1, L2]), flannel).status, "ok");
  assert.equal(fwd(noRules, ["-P FORWARD ACCEPT"]).status, "ok");
  assert.equal(
    fwd(facts([L1, L2]), ["-P FORWARD ACCEPT"]).status,
    "warn",
    "the agent's rules are missing",
  );
  const off = hostChecks(noRules, snapshot(), { ...settings([]), ipForward: "0" });
  assert.match(
    off.find((r) => r.check === "host.ip-forward")!.fix!,
    /sysctl -w net\.ipv4\.ip_forward=1/,
  );
});

Deno.test("doctor MTU checks: a device bigger than the underlay allows, pods told too much", () => {
  const small = snapshot();
  small.links = small.links.map((l) => l.name === "eth0" ? { ...l, mtu: 1400 } : l);
  const dev = mtuChecks(facts([L1, L2]), small).find((r) => r.check === "mtu.device")!;
  assert.equal(dev.status, "fail");
  assert.match(dev.saw, /flannel\.1 MTU 1450 > eth0 MTU 1400 - 50/);
  const env = {
    network: parseCidr("198.19.0.0/16"),
    subnet: parseCidr("198.19.1.0/24"),
    mtu: 1500,
    ipMasq: false,
  };
  const told = mtuChecks(facts([L1, L2], { subnetEnv: env }), snapshot());
  assert.equal(told.find((r) => r.check === "mtu.subnet-env")!.status, "fail");
  assert.equal(told.find((r) => r.check === "mtu.bridge"), undefined, "cni0 1450 < 1500 is fine");
});
