/**
 * End-to-end phase: a real agent started in the scratch namespace against a Deno KV registry
 * that already holds N leases (the restart case), timed until `ip route` shows all N routes,
 * and split by the agent's own log (start-up; leased → reconciled), next to the programming
 * table's `ip -batch` install of the same entries.
 *
 * @example
 * ```ts
 * await endToEnd(ctx, c, ns); // after programming(): its ip -batch times are the baseline
 * ```
 */
import type { Cluster } from "../../test/kit/cluster.ts";
import { denoInNs } from "../../test/kit/netns.ts";
import { run, runOk, StopWaiting, waitFor } from "../../test/kit/proc.ts";
import { spawnLogged, stopProcess } from "../../test/kit/spawn.ts";
import { openKvRegistry } from "../../src/registry/kv/mod.ts";
import { type Cell, median, ratio, round } from "../lib/report.ts";
import { leasePlan } from "../lib/leases.ts";
import { writeLeases } from "../lib/lease_writer.ts";
import type { DatapathCtx } from "./flags.ts";
import { MAIN, REPO, VNI_DEV } from "./hosts.ts";

/** A real agent started against a registry that already holds N leases: spawn → N routes. */
export async function endToEnd(ctx: DatapathCtx, c: Cluster, ns: string): Promise<void> {
  const { backends, sizes, deadline, report } = ctx;
  const rows: Cell[][] = [];
  for (const backend of backends) {
    for (const n of sizes) {
      deadline.check(`end-to-end ${backend} ${n}`);
      console.log(`\n# end to end: agent start with ${n} ${backend} leases in the registry`);
      const kvPath = `${c.dir}/prog-${backend}-${n}.kv`;
      const plan = leasePlan({
        count: n,
        firstSubnet: 2,
        subnetLen: 29,
        publicBase: "198.18.64.2",
        backend,
      });
      const reg = await openKvRegistry({ path: kvPath });
      let writeMs: number;
      try {
        await reg.putConfig(
          JSON.stringify({ Network: "198.19.0.0/16", SubnetLen: 29, Backend: { Type: backend } }),
        );
        const t = performance.now();
        const w = await writeLeases(reg, plan, { intervalMs: 0, ttlSeconds: 3600 });
        writeMs = performance.now() - t;
        if (w.some((x) => !x.ok)) throw new Error(`writing leases: ${w.find((x) => !x.ok)!.error}`);
      } finally {
        await reg.close();
      }
      const logFile = `${c.dir}/prog-agent-${backend}-${n}.log`;
      const t0 = Date.now();
      const agent = spawnLogged(
        denoInNs(ns, [
          MAIN,
          "run",
          "--registry",
          "kv",
          "--kv-path",
          kvPath,
          "--iface",
          "ext0",
          "--subnet-file",
          `${c.dir}/prog-${backend}-${n}.env`,
          "--node-id-file",
          `${c.dir}/prog-node-id`, // not the machine's /var/lib/weft
          "--iptables-forward-rules=false",
        ]),
        logFile,
        { env: { NO_COLOR: "1" }, cwd: REPO },
      );
      let routesAt: number | null = null;
      try {
        await waitFor(`${n} routes from the agent`, async () => {
          if (agent.status) {
            throw new StopWaiting(`agent exited: ${await Deno.readTextFile(logFile)}`);
          }
          const out = await runOk(["ip", "-n", ns, "route", "show", "root", "198.19.0.0/16"], {
            timeoutMs: 30_000,
          });
          const k = out.split("\n").filter((l) =>
            l.startsWith("198.19.") && / via /.test(l)
          ).length;
          if (k >= n) routesAt = Date.now();
          return k >= n;
        }, { timeoutMs: Math.min(180_000, deadline.left()) });
      } catch (e) {
        report.problem(`end to end ${backend} ${n}: ${(e as Error).message.slice(0, 1500)}`);
      } finally {
        await stopProcess(agent, "SIGKILL", 5000).catch(() => {});
        if (backend === "vxlan") await run(["ip", "-n", ns, "link", "del", VNI_DEV]);
        await run(["ip", "-n", ns, "route", "flush", "root", "198.19.0.0/16"]);
      }
      const log = await Deno.readTextFile(logFile).catch(() => "");
      const ts = (re: RegExp) => {
        const m = re.exec(log);
        return m ? Date.parse(m[1]) : null;
      };
      const start = ts(/^(\S+Z) INFO\s+main: weft .* starting/m);
      const leased = ts(/^(\S+Z) INFO\s+agent: subnet .* leased/m);
      const reconciled = ts(/^(\S+Z) INFO\s+agent: datapath reconciled with/m);
      const progMs = leased !== null && reconciled !== null ? reconciled - leased : null;
      const ipb =
        (report.data[`programming_${backend}_${n}`] as { ipBatchAdd?: number[] } | undefined)
          ?.ipBatchAdd;
      const base = ipb ? median(ipb) : null;
      rows.push([
        backend,
        n,
        writeMs / 1000,
        routesAt !== null ? (routesAt - t0) / 1000 : null,
        start !== null ? (start - t0) / 1000 : null,
        progMs !== null ? progMs / 1000 : null,
        base !== null ? base / 1000 : null,
        round(ratio(progMs, base)),
      ]);
    }
  }
  report.section(
    "end to end: agent start with N leases already in the registry (Deno KV), seconds",
    [
      "backend",
      "N",
      "registry write s",
      "spawn → N routes s",
      "spawn → first log s",
      "leased → reconciled s",
      "ip -batch s",
      "ratio",
    ],
    rows,
    [
      "spawn → N routes: polled with `ip route show root 198.19.0.0/16` every 100 ms",
      "leased → reconciled: from the agent's own log (list N leases, decode, program the kernel)",
      "ratio = (leased → reconciled) / ip -batch install of the same entries (from the programming table)",
      "registry write s: N sequential createLease calls into the KV file (not part of the agent's time)",
    ],
  );
}
