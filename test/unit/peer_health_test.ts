// The agent's continuous peer health, with a fake prober: round scheduling (cap, rotation,
// jitter bounds), change-only logging, metric series removed for peers that are gone; and the
// `weft status` table. No root, no namespaces.
import assert from "node:assert/strict";
import { configure, type LogRecord, reset } from "@logtape/logtape";
import { JITTER, jitteredInterval, nextBatch, PeerHealth } from "../../src/agent/peer_health.ts";
import type { ProbeOptions, Prober, ProbeResult } from "../../src/health/probe.ts";
import { metrics, MetricsRegistry } from "../../src/base/metrics.ts";
import { parseIp } from "../../src/base/ipv4.ts";
import type { Lease } from "../../src/lease/codec.ts";
import { type AgentStatus, leaseView, peerViews } from "../../src/agent/status.ts";
import { renderStatus, statusExitCode } from "../../src/cli/status.ts";
import { waitFor } from "../kit/proc.ts";

/** Peer i: subnet 198.19.<i>.0/24, public IP 198.18.0.<i>. */
function peer(i: number, publicIP = `198.18.0.${i}`): Lease {
  return {
    key: `198.19.${i}.0-24`,
    subnet: { ip: parseIp(`198.19.${i}.0`), prefix: 24 },
    attrs: { publicIP, backendType: "vxlan" },
    expiresAt: null,
    revision: 1,
  };
}

/** Answers for the addresses in `up` (RTT 2 ms), not for the others; records what it probed. */
class FakeProber implements Prober {
  probed: string[] = [];
  up = new Set<string>();
  probe(dst: string, o: ProbeOptions): Promise<ProbeResult> {
    this.probed.push(dst);
    const ok = this.up.has(dst);
    return Promise.resolve({
      dst,
      sent: o.count,
      received: ok ? o.count : 0,
      rttMs: ok ? Array(o.count).fill(2) : [],
      tooBig: false,
      fragNeededMtu: null,
    });
  }
  close() {}
}

/** Captures the peer-health log lines while `fn` runs. */
async function withLogs(fn: (lines: string[]) => Promise<void>): Promise<void> {
  const lines: string[] = [];
  await configure({
    reset: true,
    sinks: {
      mem: (r: LogRecord) =>
        lines.push(
          `${r.level} ${r.message.map((m) => typeof m === "string" ? m : String(m)).join("")}`,
        ),
    },
    loggers: [
      { category: ["weft", "peer-health"], lowestLevel: "debug", sinks: ["mem"] },
      { category: ["logtape", "meta"], lowestLevel: "error", sinks: [] },
    ],
  });
  try {
    await fn(lines);
  } finally {
    await reset();
  }
}

function series(name: string): string[] {
  return metrics.render().split("\n").filter((l) =>
    l.startsWith(name + "{") || l.startsWith(name + " ")
  );
}

/** A PeerHealth every second over `peers` (vxlan, 10 probes per round unless given). */
function health(
  peers: () => Lease[],
  o: { maxPerRound?: number; backend?: string } = {},
): PeerHealth {
  return new PeerHealth({
    intervalMs: 1000,
    maxPerRound: o.maxPerRound ?? 10,
    backend: o.backend ?? "vxlan",
    peers,
  });
}

Deno.test("peer health: each round probes at most the cap, in turn, so all peers are covered", async () => {
  const peers = Array.from({ length: 10 }, (_, i) => peer(101 + i));
  const h = health(() => peers, { maxPerRound: 4, backend: "vxlan" });
  const p = new FakeProber();
  const rounds: string[][] = [];
  for (let r = 0; r < 3; r++) {
    p.probed = [];
    await h.round(p);
    rounds.push(p.probed);
  }
  assert.deepEqual(rounds.map((r) => r.length), [4, 4, 4]);
  // Three rounds of 4 over 10 peers: every peer once in the first 10 probes, then round again.
  const all = rounds.flat();
  assert.equal(new Set(all.slice(0, 10)).size, 10, all.join(" "));
  assert.deepEqual(all.slice(10), all.slice(0, 2));
  // The vxlan overlay address is the peer's subnet address (its VTEP).
  assert.equal(all[0], "198.19.101.0");

  // nextBatch on its own: sorted by subnet, after the cursor, wrapping, never a peer twice.
  const xs = ["c", "a", "b"].map((subnet) => ({ subnet }));
  assert.deepEqual(nextBatch(xs, null, 2).map((x) => x.subnet), ["a", "b"]);
  assert.deepEqual(nextBatch(xs, "b", 2).map((x) => x.subnet), ["c", "a"]);
  assert.deepEqual(nextBatch(xs, "z", 5).map((x) => x.subnet), ["a", "b", "c"]);
  assert.deepEqual(nextBatch([], "a", 5), []);
});

Deno.test("peer health: the delay between rounds stays within the jitter bounds", () => {
  for (const r of [0, 0.25, 0.5, 0.999999]) {
    const d = jitteredInterval(30_000, r);
    assert.ok(d >= 30_000 * (1 - JITTER) && d < 30_000 * (1 + JITTER), `r=${r}: ${d}`);
  }
  assert.equal(jitteredInterval(30_000, 0), 27_000);
  assert.equal(jitteredInterval(30_000, 0.5), 30_000);
  assert.throws(
    () => new PeerHealth({ intervalMs: 0, maxPerRound: 1, backend: "vxlan", peers: () => [] }),
    RangeError,
  );
});

Deno.test("peer health: a peer is logged once per change, never every round", async () => {
  await withLogs(async (lines) => {
    const peers = [peer(121), peer(122)];
    const h = health(() => peers, { maxPerRound: 10, backend: "vxlan" });
    const p = new FakeProber();
    p.up.add("198.19.121.0").add("198.19.122.0");
    await h.round(p);
    await h.round(p);
    assert.deepEqual(lines, [], "reachable peers are not logged");
    p.up.delete("198.19.122.0");
    for (let i = 0; i < 3; i++) await h.round(p);
    assert.equal(lines.length, 1, lines.join("\n"));
    assert.match(lines[0], /^warning peer 198\.19\.122\.0\/24 \(198\.18\.0\.122\) unreachable/);
    assert.match(lines[0], /weft doctor --peer 198\.19\.122\.0\/24/);
    p.up.add("198.19.122.0");
    for (let i = 0; i < 3; i++) await h.round(p);
    assert.equal(lines.length, 2, lines.join("\n"));
    assert.match(lines[1], /^info peer 198\.19\.122\.0\/24 \(198\.18\.0\.122\) reachable again/);
    const st = h.status().find((s) => s.subnet === "198.19.122.0/24")!;
    assert.equal(st.reachable, true);
    assert.equal(st.rttMs, 2);
    assert.ok(st.lastProbe !== null && st.since !== null);
  });
});

Deno.test("peer health: metrics per peer; the series of a peer that is gone are removed", async () => {
  let peers = [peer(131), peer(132)];
  const h = health(() => peers, { maxPerRound: 10, backend: "vxlan" });
  const p = new FakeProber();
  p.up.add("198.19.131.0");
  await h.round(p);
  const mine = (name: string) => series(name).filter((l) => /198\.19\.13[12]\./.test(l));
  assert.deepEqual(mine("weft_peer_reachable").sort(), [
    'weft_peer_reachable{public_ip="198.18.0.131",subnet="198.19.131.0/24"} 1',
    'weft_peer_reachable{public_ip="198.18.0.132",subnet="198.19.132.0/24"} 0',
  ]);
  assert.deepEqual(mine("weft_peer_rtt_seconds"), [
    'weft_peer_rtt_seconds{public_ip="198.18.0.131",subnet="198.19.131.0/24"} 0.002',
  ]);
  assert.ok(series("weft_peers_unreachable").includes("weft_peers_unreachable 1"));

  // 132 is gone; 131 moved to another public IP: both old series go, 131 is probed anew.
  peers = [peer(131, "198.18.1.131")];
  await h.round(p);
  assert.deepEqual(mine("weft_peer_reachable"), [
    'weft_peer_reachable{public_ip="198.18.1.131",subnet="198.19.131.0/24"} 1',
  ]);
  assert.equal(mine("weft_peer_rtt_seconds").length, 1);
  assert.ok(series("weft_peers_unreachable").includes("weft_peers_unreachable 0"));
  peers = [];
  await h.round(p);
  assert.deepEqual(mine("weft_peer_reachable"), []);
  assert.deepEqual(mine("weft_peer_rtt_seconds"), []);
  assert.deepEqual(h.status(), []);
});

Deno.test("metrics: a labelled gauge's series can be deleted; none left renders no series", () => {
  const m = new MetricsRegistry();
  const g = m.gauge("weft_test_peer", "Test.");
  g.set(1, { subnet: "198.19.1.0/24" });
  assert.equal(g.delete({ subnet: "198.19.1.0/24" }), true);
  assert.equal(g.delete({ subnet: "198.19.1.0/24" }), false);
  assert.equal(m.render(), "# HELP weft_test_peer Test.\n# TYPE weft_test_peer gauge\n");
  // An unlabelled gauge that was never set still renders 0, as before.
  m.gauge("weft_test_plain", "Plain.");
  assert.match(m.render(), /^weft_test_plain 0$/m);
});

Deno.test("peer health: host-gw probes the peer's bridge address; a failing prober start is not fatal", async () => {
  const h = health(() => [peer(141)], { maxPerRound: 10, backend: "host-gw" });
  const p = new FakeProber();
  await h.round(p);
  assert.deepEqual(p.probed, ["198.19.141.1"]);
  await withLogs(async (lines) => {
    let attempts = 0;
    const bad = new PeerHealth({
      intervalMs: 20,
      maxPerRound: 10,
      backend: "vxlan",
      peers: () => [],
      random: () => 0,
      prober: () => {
        attempts++;
        throw new Error("socket: EPERM");
      },
    });
    const ctl = new AbortController();
    const done = bad.run(ctl.signal); // never throws: probing is diagnostics
    await waitFor("three rounds", () => attempts >= 3, { timeoutMs: 5000, intervalMs: 10 });
    ctl.abort();
    await done;
    assert.equal(lines.length, 1, `logged once, not every round:\n${lines.join("\n")}`);
    assert.match(lines[0], /peer probes off: socket: EPERM/);
  });
});

const STATUS: AgentStatus = {
  registry: "etcd",
  backend: "vxlan",
  lease: {
    key: "198.19.5.0-24",
    subnet: "198.19.5.0/24",
    publicIP: "198.18.0.11",
    expiresAt: "2026-01-01T01:00:00.000Z",
  },
  readiness: { ok: true },
  peerProbes: { intervalSeconds: 30, maxPerRound: 256 },
  peers: [
    {
      subnet: "198.19.7.0/24",
      publicIP: "198.18.0.12",
      reachable: true,
      rttMs: 0.314,
      lastProbe: "2026-01-01T00:00:56.000Z",
      since: null,
      error: null,
    },
    {
      subnet: "198.19.9.0/24",
      publicIP: "198.18.0.13",
      reachable: false,
      rttMs: null,
      lastProbe: "2026-01-01T00:00:58.000Z",
      since: "2026-01-01T00:00:00.000Z",
      error: null,
    },
    {
      subnet: "198.19.11.0/24",
      publicIP: "198.18.0.14",
      reachable: null,
      rttMs: null,
      lastProbe: null,
      since: null,
      error: null,
    },
  ],
  datapathRepairs: 2,
  lastErrors: [{
    at: "2026-01-01T00:00:00.000Z",
    level: "warning",
    logger: "weft.peer-health",
    msg: "peer 198.19.9.0/24 (198.18.0.13) unreachable\u001b[31m",
  }],
};

Deno.test("weft status: the table names readiness, lease, and each peer's reachability and RTT", () => {
  const now = Date.parse("2026-01-01T00:01:00.000Z");
  const text = renderStatus(STATUS, now);
  const lines = text.split("\n");
  assert.equal(lines[0], "ready     yes");
  assert.equal(
    lines[1],
    "lease     198.19.5.0/24 (key 198.19.5.0-24), public IP 198.18.0.11, expires " +
      "2026-01-01T01:00:00.000Z (in 59m00s)",
  );
  assert.equal(lines[2], "agent     backend vxlan, registry etcd, datapath repairs 2");
  assert.equal(lines[3], "probes    every 30 s, at most 256 peers a round");
  const head = lines.findIndex((l) => l.startsWith("SUBNET"));
  assert.match(lines[head], /^SUBNET\s+PUBLIC IP\s+REACHABLE\s+RTT MS\s+LAST PROBE\s+SINCE$/);
  assert.match(lines[head + 1], /^198\.19\.7\.0\/24\s+198\.18\.0\.12\s+yes\s+0\.31\s+4s ago\s+-$/);
  assert.match(lines[head + 2], /^198\.19\.9\.0\/24\s+198\.18\.0\.13\s+NO\s+-\s+2s ago\s+1m00s$/);
  assert.match(lines[head + 3], /^198\.19\.11\.0\/24\s+198\.18\.0\.14\s+not yet\s+-\s+-\s+-$/);
  assert.match(text, /3 peer\(s\): 1 reachable, 1 unreachable, 1 not probed yet/);
  assert.match(text, /weft doctor --peer SUBNET/);
  // The logged message is shown escaped, never raw to the terminal.
  assert.match(text, /unreachable\\u001b\[31m/);
  assert.equal(statusExitCode(STATUS), 1, "an unreachable peer is unhealthy");
  const healthy = { ...STATUS, peers: STATUS.peers.filter((p) => p.reachable !== false) };
  assert.equal(statusExitCode(healthy), 0);
  assert.equal(statusExitCode({ ...healthy, readiness: { ok: false, reason: "x" } }), 1);
  const notReady = renderStatus({
    ...healthy,
    lease: null,
    peerProbes: null,
    readiness: { ok: false, reason: "no subnet lease yet" },
  }, now);
  assert.match(notReady, /^ready {5}NO: no subnet lease yet\nlease {5}none yet\n/);
  assert.match(notReady, /probes {4}off/);
});

Deno.test("status: every peer lease is listed by address; a probe state for another public IP is not its", () => {
  const at = Date.parse("2026-01-01T00:00:00.000Z");
  const state = (i: number, publicIP: string) => ({
    subnet: `198.19.${i}.0/24`,
    publicIP,
    address: `198.19.${i}.0`,
    reachable: true,
    rttMs: 0.12345,
    lastProbe: at,
    since: null,
    error: null,
  });
  const views = peerViews(
    [peer(152), peer(153, "198.18.1.153"), peer(16), peer(151)],
    [state(151, "198.18.0.151"), state(153, "198.18.0.153")],
  );
  assert.deepEqual(views.map((v) => [v.subnet, v.reachable, v.rttMs, v.lastProbe]), [
    ["198.19.16.0/24", null, null, null],
    ["198.19.151.0/24", true, 0.123, "2026-01-01T00:00:00.000Z"],
    ["198.19.152.0/24", null, null, null],
    ["198.19.153.0/24", null, null, null],
  ]);
});

Deno.test("peer health: a host-gw peer without pods is 'no pod address', not unreachable", async () => {
  const h = new PeerHealth({
    intervalMs: 1000,
    maxPerRound: 10,
    backend: "host-gw",
    underlayCheck: true,
    peers: () => [peer(142), peer(143)],
  });
  const p = new FakeProber();
  p.up.add("198.18.0.142"); // 142's host answers, its bridge address does not; 143 is down
  await h.round(p);
  assert.deepEqual(p.probed, ["198.19.142.1", "198.19.143.1", "198.18.0.142", "198.18.0.143"]);
  const [s142, s143] = h.status();
  assert.deepEqual([s142.reachable, s142.noPodAddress], [null, true]);
  assert.deepEqual([s143.reachable, s143.noPodAddress], [false, false]);
  assert.deepEqual(series("weft_peers_unreachable"), ["weft_peers_unreachable 1"]);
  assert.deepEqual(series("weft_peers_without_pod_address"), [
    "weft_peers_without_pod_address 1",
  ]);
  assert.ok(
    !series("weft_peer_reachable").some((l) => l.includes('subnet="198.19.142.0/24"')),
    "no reachability series for a peer without a pod address",
  );
  const view = peerViews([peer(142), peer(143)], h.status());
  assert.equal(view[0].noPodAddress, true);
  const table = renderStatus({ ...STATUS, peers: view }, Date.parse("2026-01-01T00:01:00Z"));
  assert.match(table, /^198\.19\.142\.0\/24\s+198\.18\.0\.142\s+no pods\s/m);
  assert.match(table, /0 reachable, 1 unreachable, 0 not probed yet, 1 with no pod address/);
  // A pod arrives: its bridge answers, the peer is reachable.
  p.up.add("198.19.142.1");
  await h.round(p);
  assert.deepEqual([h.status()[0].reachable, h.status()[0].noPodAddress], [true, false]);
  assert.deepEqual(series("weft_peers_without_pod_address"), [
    "weft_peers_without_pod_address 0",
  ]);
});

Deno.test("peer health: an IPv6-only peer is probed on its IPv6 overlay address, keyed by it", async () => {
  const v6 = (i: number): Lease => ({
    key: `0.0.0.0-0&2001:db8:1:${i}::-64`,
    subnet: { ip: 0, prefix: 0 },
    subnet6: { ip: (0x20010db8_0001n << 80n) | (BigInt(i) << 64n), prefix: 64 },
    attrs: { publicIP: "0.0.0.0", publicIPv6: `2001:db8:ff::${i}`, backendType: "vxlan" },
    expiresAt: null,
    revision: 1,
  });
  const h = health(() => [v6(5), v6(6)]);
  const p = new FakeProber();
  p.up.add("2001:db8:1:5::");
  await h.round(p);
  assert.deepEqual(p.probed, ["2001:db8:1:5::", "2001:db8:1:6::"]);
  assert.deepEqual(
    h.status().map((s) => [s.subnet, s.publicIP, s.reachable]),
    [["2001:db8:1:5::/64", "2001:db8:ff::5", true], [
      "2001:db8:1:6::/64",
      "2001:db8:ff::6",
      false,
    ]],
  );
  assert.deepEqual(
    peerViews([v6(6), v6(5)], h.status()).map((v) => v.subnet),
    ["2001:db8:1:5::/64", "2001:db8:1:6::/64"],
  );
  assert.deepEqual(
    [leaseView(v6(5)).subnet, leaseView(v6(5)).publicIP],
    ["2001:db8:1:5::/64", "2001:db8:ff::5"],
    "the own IPv6-only lease by its IPv6 half, not 0.0.0.0/0",
  );
});
