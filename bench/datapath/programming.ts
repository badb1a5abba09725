/**
 * Programming phase: in a scratch namespace (`wharn-<run>-prog`, a veth `ext0` with
 * 198.18.64.1/18), weft's backend code (`../lib/program_child.ts`, a child deno process inside
 * the namespace) installs and removes `--sizes` peers `--prog-reps` times, next to `ip -batch`
 * (+ `bridge -batch` for FDB) of the same entries. Kernel counts are verified after every step.
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
import { leasePlan, type PlannedLease } from "../lib/leases.ts";
import type { DatapathCtx } from "./flags.ts";
import { ipBatch, REPO, VNI_DEV } from "./hosts.ts";

/**
 * The scratch namespace of the programming and end-to-end phases, named like the run's own so
 * the harness's teardown removes it.
 */
export async function createScratchNs(c: Cluster): Promise<string> {
  const ns = `${HARNESS_PREFIX}${c.runId}-prog`;
  await createNs(ns);
  await runOk(["ip", "-n", ns, "link", "add", "ext0", "type", "veth", "peer", "name", "ext0p"]);
  await runOk(["ip", "-n", ns, "addr", "add", "198.18.64.1/18", "dev", "ext0"]);
  await runOk(["ip", "-n", ns, "link", "set", "ext0", "up"]);
  await runOk(["ip", "-n", ns, "link", "set", "ext0p", "up"]);
  return ns;
}

interface ChildRep {
  reconcileAdd: number;
  reconcileDel: number;
  applyAdd: number;
  applyDel: number;
  counts: Record<string, { routes: number; neigh: number; fdb: number }>;
}

async function kernelCounts(ns: string, vxlan: boolean) {
  const routes =
    (await runOk(["ip", "-n", ns, "route", "show", "root", "198.19.0.0/16"], { timeoutMs: 30_000 }))
      .split("\n").filter((l) => l.startsWith("198.19.")).length;
  if (!vxlan) return { routes, neigh: 0, fdb: 0 };
  const neigh =
    (await runOk(["ip", "-n", ns, "neigh", "show", "dev", VNI_DEV, "nud", "permanent"], {
      timeoutMs: 30_000,
    }))
      .split("\n").filter((l) => l.startsWith("198.19.")).length;
  const fdb =
    (await runOk(["bridge", "-n", ns, "fdb", "show", "dev", VNI_DEV], { timeoutMs: 30_000 }))
      .split("\n").filter((l) => / dst /.test(l)).length;
  return { routes, neigh, fdb };
}

function batchLines(backend: string, plan: PlannedLease[], del: boolean) {
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

export async function programming(ctx: DatapathCtx, ns: string): Promise<void> {
  const { opt, backends, sizes, deadline, report } = ctx;
  const reps = Number(opt["prog-reps"]);
  const rows: Cell[][] = [];
  for (const backend of backends) {
    for (const n of sizes) {
      deadline.check(`programming ${backend} ${n}`);
      console.log(`\n# programming ${n} ${backend} peers`);
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
        ]),
        { timeoutMs: Math.min(600_000, deadline.left()), cwd: REPO },
      );
      if (r.code !== 0) {
        report.problem(`program_child ${backend} ${n}: ${r.stderr.trim().slice(-1500)}`);
        continue;
      }
      const child = JSON.parse(r.stdout) as { reps: ChildRep[] };
      const vx = backend === "vxlan";
      for (const [i, rep] of child.reps.entries()) {
        const full = rep.counts.afterAdd;
        const ok = full.routes === n && (!vx || (full.neigh === n && full.fdb === n)) &&
          rep.counts.afterDel.routes === 0 && rep.counts.afterApply.routes === n &&
          rep.counts.afterApplyDel.routes === 0;
        if (!ok) {
          report.problem(
            `weft ${backend} ${n} rep ${i + 1}: wrong kernel counts ${JSON.stringify(rep.counts)}`,
          );
        }
      }
      // Baseline: the same entries with ip -batch (and bridge -batch), same namespace.
      const plan = leasePlan({
        count: n,
        firstSubnet: 2,
        subnetLen: 29,
        publicBase: "198.18.64.2",
        backend,
      });
      const add: number[] = [];
      const del: number[] = [];
      if (vx) {
        await ipBatch(ns, "ip", [
          `link add ${VNI_DEV} type vxlan id 1 local 198.18.64.1 dev ext0 dstport 8472 nolearning`,
          `link set ${VNI_DEV} up`,
          `addr add 198.19.0.8/32 dev ${VNI_DEV}`,
        ]);
      }
      try {
        for (let i = 0; i < reps; i++) {
          const a = batchLines(backend, plan, false);
          add.push(await ipBatch(ns, "bridge", a.bridge) + await ipBatch(ns, "ip", a.ip));
          const k = await kernelCounts(ns, vx);
          if (k.routes !== n || (vx && (k.neigh !== n || k.fdb !== n))) {
            report.problem(`ip -batch ${backend} ${n}: wrong kernel counts ${JSON.stringify(k)}`);
          }
          const d = batchLines(backend, plan, true);
          del.push(await ipBatch(ns, "ip", d.ip) + await ipBatch(ns, "bridge", d.bridge));
          const z = await kernelCounts(ns, vx);
          if (z.routes !== 0 || z.neigh !== 0 || z.fdb !== 0) {
            report.problem(`ip -batch ${backend} ${n} delete left ${JSON.stringify(z)}`);
          }
        }
      } finally {
        if (vx) await run(["ip", "-n", ns, "link", "del", VNI_DEV]);
        await run(["ip", "-n", ns, "route", "flush", "root", "198.19.0.0/16"]);
      }
      const m = (f: (x: ChildRep) => number) => median(child.reps.map(f));
      const row = (what: string, rc: number | null, ap: number | null, ip: number | null) =>
        rows.push([
          backend,
          n,
          what,
          rc,
          ap,
          ip,
          round(ratio(rc, ip)),
          round(ratio(ap, ip)),
          (ratio(Math.max(rc ?? Infinity, ap ?? Infinity), ip) ?? Infinity) <= 2 ? "met" : "MISSED",
        ]);
      row("install", m((x) => x.reconcileAdd), m((x) => x.applyAdd), median(add));
      row("remove", m((x) => x.reconcileDel), m((x) => x.applyDel), median(del));
      report.data[`programming_${backend}_${n}`] = {
        weft: child.reps,
        ipBatchAdd: add,
        ipBatchDel: del,
      };
    }
  }
  report.section(
    "programming N peers in one namespace, ms (median of reps)",
    [
      "backend",
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
      "ip -batch: wall time of `ip -n <ns> -batch -` (+ `bridge -batch` for FDB), process start included",
    ],
  );
}
