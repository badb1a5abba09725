/**
 * Programming phase: in a scratch namespace (`wharn-<run>-prog`, a veth `ext0` with
 * 198.18.64.1/18), weft's backend code (`../lib/program_child.ts`, a child deno process inside
 * the namespace) installs and removes `--sizes` peers `--prog-reps` times, next to `ip -batch`
 * (+ `bridge -batch` for FDB) of the same entries. Kernel counts are verified after every step.
 * Family 6 (`--families`): the same with dual-stack leases (each peer programmed in IPv4 and
 * IPv6), next to `ip -batch` + `ip -6 -batch` + `bridge -batch` of both families' entries.
 *
 * @example
 * ```ts
 * const ns = await createScratchNs(c);
 * await programming(ctx, ns);
 * ```
 */
import { RTPROT_WEFT } from "../../src/backend/routes.ts";
import { type Cluster, HARNESS_PREFIX } from "../../test/kit/cluster.ts";
import { createNs, denoInNs } from "../../test/kit/netns.ts";
import { run, runOk } from "../../test/kit/proc.ts";
import { type Cell, median, ratio, round } from "../lib/report.ts";
import { leasePlan, NETWORK6, peerPlan6, type PlannedLease } from "../lib/leases.ts";
import type { DatapathCtx } from "./flags.ts";
import { ipBatch, REPO, VNI_DEV, VNI_DEV6 } from "./hosts.ts";

/** The scratch namespace's IPv6 address on `ext0` (the dual-stack peers' PublicIPv6 are on-link). */
const EXT6 = "2001:db8:64::1";

/**
 * The scratch namespace of the programming and end-to-end phases, named like the run's own so
 * the harness's teardown removes it.
 */
export async function createScratchNs(c: Pick<Cluster, "runId">): Promise<string> {
  const ns = `${HARNESS_PREFIX}${c.runId}-prog`;
  await createNs(ns);
  await runOk(["ip", "-n", ns, "link", "add", "ext0", "type", "veth", "peer", "name", "ext0p"]);
  await runOk(["ip", "-n", ns, "addr", "add", "198.18.64.1/18", "dev", "ext0"]);
  // nodad: usable at once (a tentative address is no interface address to weft).
  await runOk(["ip", "-n", ns, "addr", "add", `${EXT6}/64`, "dev", "ext0", "nodad"]);
  await runOk(["ip", "-n", ns, "link", "set", "ext0", "up"]);
  await runOk(["ip", "-n", ns, "link", "set", "ext0p", "up"]);
  return ns;
}

interface ChildRep {
  reconcileAdd: number;
  reconcileDel: number;
  applyAdd: number;
  applyDel: number;
  counts: Record<string, Counts>;
}

/** Entries in the kernel; the IPv6 ones for family 6 only. */
interface Counts {
  routes: number;
  neigh: number;
  fdb: number;
  routes6?: number;
  neigh6?: number;
  fdb6?: number;
}

async function kernelCounts(ns: string, vxlan: boolean, family: 4 | 6): Promise<Counts> {
  const lines = async (cmd: string[], keep: (l: string) => boolean) =>
    (await runOk(cmd, { timeoutMs: 30_000 })).split("\n").filter(keep).length;
  const routes = await lines(
    ["ip", "-n", ns, "route", "show", "root", "198.19.0.0/16"],
    (l) => l.startsWith("198.19."),
  );
  const neighOf = (dev: string, f: string) =>
    lines(["ip", f, "-n", ns, "neigh", "show", "dev", dev, "nud", "permanent"], Boolean);
  const fdbOf = (dev: string) =>
    lines(["bridge", "-n", ns, "fdb", "show", "dev", dev], (l) => / dst /.test(l));
  const out: Counts = vxlan
    ? { routes, neigh: await neighOf(VNI_DEV, "-4"), fdb: await fdbOf(VNI_DEV) }
    : { routes, neigh: 0, fdb: 0 };
  if (family === 4) return out;
  out.routes6 = await lines(
    ["ip", "-6", "-n", ns, "route", "show", "root", NETWORK6],
    // Peers' routes only: not the kernel's route to the VTEP's own /128.
    (l) => l.startsWith("2001:db8:100:") && l.includes(" via "),
  );
  out.neigh6 = vxlan ? await neighOf(VNI_DEV6, "-6") : 0;
  out.fdb6 = vxlan ? await fdbOf(VNI_DEV6) : 0;
  return out;
}

/** Whether `k` holds all `n` peers (`n` 0: none) in the families and entries measured. */
function countsAre(k: Counts, n: number, vxlan: boolean, family: 4 | 6): boolean {
  const m = vxlan ? n : 0;
  return k.routes === n && k.neigh === m && k.fdb === m &&
    (family === 4 || (k.routes6 === n && k.neigh6 === m && k.fdb6 === m));
}

/** The `ip -batch`, `ip -6 -batch` and `bridge -batch` lines of a plan's entries. */
function batchLines(backend: string, plan: PlannedLease[], del: boolean) {
  const v4 = batchLines4(backend, plan, del);
  const v6 = plan.flatMap((p) => p.v6 ? [p.v6] : []);
  if (backend === "host-gw") {
    return {
      ...v4,
      ip6: v6.map((p) =>
        `route ${del ? "del" : "replace"} ${p.cidr} via ${p.publicIP} dev ext0 proto ${RTPROT_WEFT}`
      ),
    };
  }
  const ip6 = del
    ? [
      ...v6.map((p) =>
        `route del ${p.cidr} via ${p.subnetAddr} dev ${VNI_DEV6} proto ${RTPROT_WEFT} onlink`
      ),
      ...v6.map((p) => `neigh del ${p.subnetAddr} dev ${VNI_DEV6}`),
    ]
    : [
      ...v6.map((p) =>
        `neigh replace ${p.subnetAddr} lladdr ${p.mac} dev ${VNI_DEV6} nud permanent`
      ),
      ...v6.map((p) =>
        `route replace ${p.cidr} via ${p.subnetAddr} dev ${VNI_DEV6} proto ${RTPROT_WEFT} onlink`
      ),
    ];
  const fdb6 = v6.map((p) =>
    del
      ? `fdb del ${p.mac} dev ${VNI_DEV6} dst ${p.publicIP} self`
      : `fdb replace ${p.mac} dev ${VNI_DEV6} dst ${p.publicIP} self permanent`
  );
  return { ip: v4.ip, ip6, bridge: [...v4.bridge, ...fdb6] };
}

function batchLines4(backend: string, plan: PlannedLease[], del: boolean) {
  if (backend === "host-gw") {
    return {
      ip: plan.map((p) =>
        `route ${del ? "del" : "replace"} ${p.cidr} via ${p.publicIP} dev ext0 proto ${RTPROT_WEFT}`
      ),
      bridge: [] as string[],
    };
  }
  if (del) {
    return {
      ip: [
        ...plan.map((p) =>
          `route del ${p.cidr} via ${p.subnetAddr} dev ${VNI_DEV} proto ${RTPROT_WEFT} onlink`
        ),
        ...plan.map((p) => `neigh del ${p.subnetAddr} dev ${VNI_DEV}`),
      ],
      bridge: plan.map((p) => `fdb del ${p.mac} dev ${VNI_DEV} dst ${p.publicIP} self`),
    };
  }
  return {
    ip: [
      ...plan.map((p) =>
        `neigh replace ${p.subnetAddr} lladdr ${p.mac} dev ${VNI_DEV} nud permanent`
      ),
      ...plan.map((p) =>
        `route replace ${p.cidr} via ${p.subnetAddr} dev ${VNI_DEV} proto ${RTPROT_WEFT} onlink`
      ),
    ],
    bridge: plan.map((p) => `fdb replace ${p.mac} dev ${VNI_DEV} dst ${p.publicIP} self permanent`),
  };
}

/** One backend × N × family: weft in the child, then the batches; rows and JSON into `rows`. */
async function programOne(
  ctx: DatapathCtx,
  ns: string,
  backend: string,
  n: number,
  family: 4 | 6,
  rows: Cell[][],
): Promise<void> {
  const { opt, deadline, report } = ctx;
  const reps = Number(opt["prog-reps"]);
  const fam = family === 6 ? "4+6" : "4";
  const what = `${backend} ${n} (family ${fam})`;
  deadline.check(`programming ${what}`);
  console.log(`\n# programming ${n} ${backend} peers, family ${fam}`);
  const r = await run(
    denoInNs(ns, [
      `${REPO}bench/lib/program_child.ts`,
      "--backend",
      backend,
      "--n",
      String(n),
      "--reps",
      String(reps),
      "--iface",
      "ext0",
      ...(family === 6 ? ["--ipv6"] : []),
    ]),
    { timeoutMs: Math.min(600_000, deadline.left()), cwd: REPO },
  );
  if (r.code !== 0) {
    report.problem(`program_child ${what}: ${r.stderr.trim().slice(-1500)}`);
    return;
  }
  const child = JSON.parse(r.stdout) as { reps: ChildRep[] };
  const vx = backend === "vxlan";
  for (const [i, rep] of child.reps.entries()) {
    const c = rep.counts;
    const ok = countsAre(c.afterAdd, n, vx, family) && countsAre(c.afterDel, 0, vx, family) &&
      countsAre(c.afterApply, n, vx, family) && countsAre(c.afterApplyDel, 0, vx, family);
    if (!ok) {
      report.problem(`weft ${what} rep ${i + 1}: wrong kernel counts ${JSON.stringify(c)}`);
    }
  }
  // Baseline: the same entries with ip -batch (and ip -6 -batch, bridge -batch), same namespace.
  const plan = leasePlan({
    count: n,
    firstSubnet: 2,
    subnetLen: 29,
    publicBase: "198.18.64.2",
    backend,
    ipv6: family === 6 ? peerPlan6 : undefined,
  });
  const add: number[] = [];
  const del: number[] = [];
  if (vx) {
    await ipBatch(ns, "ip", [
      `link add ${VNI_DEV} type vxlan id 1 local 198.18.64.1 dev ext0 dstport 8472 nolearning`,
      `link set ${VNI_DEV} up`,
      `addr add 198.19.0.8/32 dev ${VNI_DEV}`,
      ...(family === 6
        ? [
          `link add ${VNI_DEV6} type vxlan id 1 local ${EXT6} dev ext0 dstport 8472 nolearning`,
          `link set ${VNI_DEV6} up`,
          `addr add 2001:db8:100:1::/128 dev ${VNI_DEV6}`,
        ]
        : []),
    ]);
  }
  try {
    for (let i = 0; i < reps; i++) {
      const a = batchLines(backend, plan, false);
      add.push(
        await ipBatch(ns, "bridge", a.bridge) + await ipBatch(ns, "ip", a.ip) +
          await ipBatch(ns, "ip", a.ip6, 6),
      );
      const k = await kernelCounts(ns, vx, family);
      if (!countsAre(k, n, vx, family)) {
        report.problem(`ip -batch ${what}: wrong kernel counts ${JSON.stringify(k)}`);
      }
      const d = batchLines(backend, plan, true);
      del.push(
        await ipBatch(ns, "ip", d.ip) + await ipBatch(ns, "ip", d.ip6, 6) +
          await ipBatch(ns, "bridge", d.bridge),
      );
      const z = await kernelCounts(ns, vx, family);
      if (!countsAre(z, 0, vx, family)) {
        report.problem(`ip -batch ${what} delete left ${JSON.stringify(z)}`);
      }
    }
  } finally {
    if (vx) await run(["ip", "-n", ns, "link", "del", VNI_DEV]);
    if (vx && family === 6) await run(["ip", "-n", ns, "link", "del", VNI_DEV6]);
    await run(["ip", "-n", ns, "route", "flush", "root", "198.19.0.0/16"]);
    if (family === 6) await run(["ip", "-6", "-n", ns, "route", "flush", "root", NETWORK6]);
  }
  const m = (f: (x: ChildRep) => number) => median(child.reps.map(f));
  const row = (op: string, rc: number | null, ap: number | null, ip: number | null) =>
    rows.push([
      backend,
      fam,
      n,
      op,
      rc,
      ap,
      ip,
      round(ratio(rc, ip)),
      round(ratio(ap, ip)),
      (ratio(Math.max(rc ?? Infinity, ap ?? Infinity), ip) ?? Infinity) <= 2 ? "met" : "MISSED",
    ]);
  row("install", m((x) => x.reconcileAdd), m((x) => x.applyAdd), median(add));
  row("remove", m((x) => x.reconcileDel), m((x) => x.applyDel), median(del));
  // IPv4 keeps its key of earlier runs; dual stack has its own.
  report.data[`programming${family === 6 ? "6" : ""}_${backend}_${n}`] = {
    weft: child.reps,
    ipBatchAdd: add,
    ipBatchDel: del,
  };
}

export async function programming(ctx: DatapathCtx, ns: string): Promise<void> {
  const rows: Cell[][] = [];
  for (const family of ctx.families) {
    for (const backend of ctx.backends) {
      for (const n of ctx.sizes) await programOne(ctx, ns, backend, n, family, rows);
    }
  }
  ctx.report.section(
    "programming N peers in one namespace, ms (median of reps)",
    [
      "backend",
      "family",
      "N",
      "op",
      "weft reconcile",
      "weft apply",
      "ip -batch",
      "ratio reconcile",
      "ratio apply",
      "goal ≤ 2",
    ],
    rows,
    [
      "weft: VxlanBackend/HostGwBackend in a child deno process (libnl over FFI), timed around reconcile()/apply() only",
      "install = reconcile(N peers) from empty / apply(N added); remove = reconcile([]) / apply(N removed)",
      "vxlan = neighbour + FDB + onlink route per peer; host-gw = one route per peer; kernel counts verified after every step",
      ...(ctx.families.includes(6)
        ? [
          "family 4+6: dual-stack config and leases, each peer's IPv4 and IPv6 entries (vxlan: also flannel-v6.1's); ip -batch = ip -batch + ip -6 -batch + bridge -batch of both",
        ]
        : []),
      "ip -batch: wall time of `ip -n <ns> -batch -` (+ `bridge -batch` for FDB), process start included",
    ],
  );
}
