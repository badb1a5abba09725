/**
 * The agent's whole periodic round with many peers, run inside a scratch network namespace (the
 * libnl socket and etcd's loopback are the namespace's): `--peers` vxlan/host-gw leases are
 * written to the registry (untimed), the backend is prepared on `--iface` and programmed with
 * them by a first relist + reconcile; after a 0.5 s pause (an agent's first periodic round
 * comes an interval after its start, when V8 has compiled what the start made hot), `--rounds`
 * rounds of exactly what the agent's
 * periodic reconciliation runs (PeerWatcher.relist, takePeers, backend.reconcile, with every
 * peer already in the kernel) are timed in CPU (process.cpuUsage: user + system of this
 * process). Separate loops time the registry list alone and the kernel reads alone (the floor of
 * the reconcile). `--event-rounds N` then times N more rounds, each after one peer event applied
 * to the backend (a peer added, then removed again, alternately; the registry is not written:
 * the round's peer list carries the added peer): what a round costs in a cluster with churn.
 * `--gc-between`: V8's memory-reducing full GC (the agent's heap trim, src/agent/heap_trim.ts)
 * before each measured round: V8 then drops much of the code it compiled, as it does in an agent
 * between rounds minutes apart, so the round pays to run cold again (the agent's worst case).
 * Last, three periodic full diffs (`fullCpuMs`: the round after a narrowed repair of a route
 * removed by hand, every entry present) and three first reconciles of a new backend on the same
 * kernel (`restartCpuMs`, as after an agent's restart). Prints one JSON object.
 *
 * @example
 * ```sh
 * ip netns exec wharn-x-round deno run -A bench/scale/round_child.ts --registry kv \
 *   --kv-path /tmp/r.kv --backend vxlan --peers 5000 --rounds 10
 * # {"registry":"kv","backend":"vxlan","peers":5000,"cpuMsPerRound":…,"parts":{…},…}
 * ```
 */
import { parseArgs } from "node:util";
import { cpuUsage } from "node:process";
import { parseNetworkConfig } from "../../src/config/network.ts";
import { selectExternalInterface } from "../../src/net/iface.ts";
import type { Backend } from "../../src/backend/backend.ts";
import { VxlanBackend } from "../../src/backend/vxlan/backend.ts";
import { HostGwBackend } from "../../src/backend/hostgw/backend.ts";
import { netlink, RT_TABLE_MAIN } from "../../ffi/libnl/mod.ts";
import type { Registry } from "../../src/registry/contract/registry.ts";
import { openEtcdRegistry } from "../../src/registry/etcd/mod.ts";
import { openKvRegistry } from "../../src/registry/kv/mod.ts";
import { PeerWatcher } from "../../src/lease/watch.ts";
import { leaseMatches } from "../../src/lease/codec.ts";
import { formatCidr } from "../../src/base/ipv4.ts";
import { collectGarbage } from "../../src/agent/heap_trim.ts";
import { leasePlan } from "../lib/leases.ts";
import { writeLeases } from "../lib/lease_writer.ts";

const { values: v } = parseArgs({
  args: Deno.args,
  options: {
    registry: { type: "string", default: "kv" },
    "kv-path": { type: "string" },
    "etcd-endpoint": { type: "string" },
    prefix: { type: "string", default: "/weft-round" },
    backend: { type: "string", default: "vxlan" },
    peers: { type: "string", default: "5000" },
    rounds: { type: "string", default: "10" },
    iface: { type: "string", default: "ext0" },
    "event-rounds": { type: "string", default: "0" },
    "gc-between": { type: "boolean", default: false },
  },
});
const n = Number(v.peers);
/** A memory-reducing full GC before each measured round, as the agent's heap trim runs between. */
const gcBetween = v["gc-between"];
const rounds = Number(v.rounds);
const cpuMs = () => {
  const u = cpuUsage();
  return (u.user + u.system) / 1000;
};

const reg: Registry = v.registry === "kv"
  ? await openKvRegistry({ path: v["kv-path"]! })
  : await openEtcdRegistry({ endpoints: [v["etcd-endpoint"]!], prefix: v.prefix });
const nl = netlink();
try {
  // Peers' public IPs from 198.18.64.2, on-link on ext0 (198.18.64.1/18) for host-gw.
  const plan = leasePlan({
    count: n,
    firstSubnet: 2,
    subnetLen: 29,
    publicBase: "198.18.64.2",
    backend: v.backend,
  });
  const w = await writeLeases(reg, plan, { intervalMs: 0, ttlSeconds: 600, concurrency: 8 });
  const bad = w.filter((x) => !x.ok);
  if (bad.length) throw new Error(`${bad.length} lease writes failed: ${bad[0].error}`);

  const cfg = parseNetworkConfig(
    JSON.stringify({ Network: "198.19.0.0/16", SubnetLen: 29, Backend: { Type: v.backend } }),
  );
  const ext = await selectExternalInterface({ iface: [v.iface], ipv6: false });
  const backend: Backend = v.backend === "vxlan" ? new VxlanBackend(nl) : new HostGwBackend(nl);
  const own = leasePlan({
    count: 1,
    firstSubnet: 1,
    subnetLen: 29,
    publicBase: ext.ifaceAddr,
    backend: v.backend,
  })[0].lease;
  await backend.prepare({ config: cfg, ext, previous: null });
  await backend.start(own);
  const watcher = new PeerWatcher(reg, {
    ownKey: () => own.key,
    accept: (l) => leaseMatches(backend.name, l),
  });

  // The first round programs every peer (the agent's start); not part of the periodic cost.
  let c = cpuMs();
  await watcher.relist();
  await backend.reconcile(watcher.takePeers());
  const firstCpuMs = cpuMs() - c;
  // An agent's first periodic round comes a reconcile interval after its start: by then V8 has
  // finished compiling (on its own threads, counted in this process's CPU) what the start made
  // hot. A short idle pause gives it that time, so the first round is not charged for it.
  await new Promise((r) => setTimeout(r, 500));

  const parts = { relist: 0, takePeers: 0, reconcile: 0 };
  /** Per round: the first after the start, later ones find the tables unchanged. */
  const reconcileCpuMs: number[] = [];
  let roundCpu = 0;
  let roundWall = 0;
  let peers = 0;
  for (let i = 0; i < rounds; i++) {
    if (gcBetween) collectGarbage();
    const t0 = performance.now();
    const c0 = cpuMs();
    c = c0;
    if (!await watcher.relist()) throw new Error("relist older than the watch (no watch runs)");
    parts.relist += cpuMs() - c;
    c = cpuMs();
    const p = watcher.takePeers();
    peers = p.length;
    parts.takePeers += cpuMs() - c;
    c = cpuMs();
    await backend.reconcile(p);
    reconcileCpuMs.push(cpuMs() - c);
    parts.reconcile += reconcileCpuMs[i];
    roundCpu += cpuMs() - c0;
    roundWall += performance.now() - t0;
  }
  const cpuMsPerRound = roundCpu / rounds;
  const wallMsPerRound = roundWall / rounds;
  // The next lease of the plan: its own subnet, public IP and VTEP MAC.
  const extra = leasePlan({
    count: n + 1,
    firstSubnet: 2,
    subnetLen: 29,
    publicBase: "198.18.64.2",
    backend: v.backend,
  })[n].lease;
  const event = { roundCpuMs: [] as number[], reconcileCpuMs: [] as number[] };
  for (let i = 0; i < Number(v["event-rounds"]); i++) {
    const added = i % 2 === 0;
    await backend.apply([{ type: added ? "added" : "removed", lease: extra }]);
    if (gcBetween) collectGarbage();
    const r0 = cpuMs();
    if (!await watcher.relist()) throw new Error("relist older than the watch (no watch runs)");
    const p = watcher.takePeers();
    c = cpuMs();
    await backend.reconcile(added ? [...p, extra] : p);
    event.reconcileCpuMs.push(cpuMs() - c);
    event.roundCpuMs.push(cpuMs() - r0);
  }
  // Periodic full diffs: a route removed by hand is repaired by a narrowed round, which cannot
  // settle, so the round after it diffs every entry (all present, nothing to write): timed,
  // three times, each with another peer's route removed.
  const held = Number(v["event-rounds"]) % 2
    ? [...watcher.takePeers(), extra]
    : watcher.takePeers();
  const fullCpuMs: number[] = [];
  for (let i = 0; i < 3; i++) {
    const dst = formatCidr(plan[Math.floor(((i + 1) * n) / 4)].lease.subnet);
    const r = nl.routeList({ table: RT_TABLE_MAIN }).find((x) => x.dst === dst);
    if (!r) throw new Error(`no route ${dst} to remove`);
    nl.routeDel(r);
    await backend.reconcile(held); // the repair
    if (gcBetween) collectGarbage();
    c = cpuMs();
    await backend.reconcile(held); // the full diff
    fullCpuMs.push(cpuMs() - c);
  }
  // A new backend on the same kernel, as after an agent's restart: its first reconcile builds
  // every peer's entries and diffs in full (code warm here, unlike a new process), three times.
  const restartCpuMs: number[] = [];
  for (let i = 0; i < 3; i++) {
    const b2: Backend = v.backend === "vxlan" ? new VxlanBackend(nl) : new HostGwBackend(nl);
    await b2.prepare({ config: cfg, ext, previous: null });
    await b2.start(own);
    c = cpuMs();
    await b2.reconcile(held);
    restartCpuMs.push(cpuMs() - c);
  }
  const mean = (xs: number[]) => xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null;
  const tenth = (x: number) => Math.round(x * 10) / 10;
  c = cpuMs();
  for (let i = 0; i < rounds; i++) await reg.listPeerLeases();
  const listCpuMs = (cpuMs() - c) / rounds;
  // The kernel tables the reconcile reads (routes; vxlan: FDB and neighbours of the VTEP), alone.
  const vtep = nl.linkByName("flannel.1")?.index;
  c = cpuMs();
  for (let i = 0; i < rounds; i++) {
    nl.routeList({ table: RT_TABLE_MAIN });
    if (vtep !== undefined) nl.fdbList(vtep), nl.neighList(vtep);
  }
  const kernelReadCpuMs = (cpuMs() - c) / rounds;

  // The first reconcile programmed every peer (checked last: listing 5000 routes makes V8
  // compile the listing, which would land in the rounds measured).
  const routes = nl.routeList({ table: RT_TABLE_MAIN }).filter((r) =>
    r.dst.startsWith("198.19.")
  ).length;
  const want = n + Number(v["event-rounds"]) % 2; // an odd count of events ends with one added
  if (routes !== want) throw new Error(`after the reconciles ${routes} routes, want ${want}`);
  // The namespace goes with everything in it (the caller deletes it).
  await backend.close();
  console.log(JSON.stringify({
    registry: v.registry,
    gcBetween,
    backend: v.backend,
    peers,
    rounds,
    firstCpuMs,
    cpuMsPerRound,
    wallMsPerRound,
    parts: {
      relist: parts.relist / rounds,
      takePeers: parts.takePeers / rounds,
      reconcile: parts.reconcile / rounds,
    },
    listCpuMs,
    kernelReadCpuMs,
    reconcileCpuMs: reconcileCpuMs.map(tenth),
    fullCpuMs: fullCpuMs.map(tenth),
    restartCpuMs: restartCpuMs.map(tenth),
    event: {
      cpuMsPerRound: mean(event.roundCpuMs),
      reconcileCpuMsPerRound: mean(event.reconcileCpuMs),
      reconcileCpuMs: event.reconcileCpuMs.map(tenth),
    },
  }));
} finally {
  nl.close();
  await reg.close();
}
