/**
 * Pod-to-pod TCP throughput phase: iperf3 from the h1 pod to the h2 pod (`--iperf-seconds`
 * after a 1 s omitted warm-up), `--rounds` rounds, each first through weft (agents running),
 * then with agents stopped, weft's entries flushed and the same entries made by hand. Rounds
 * alternate so load drift hits both sides; ratio = median weft / median hand-made, goal ≥ 0.97.
 *
 * @example
 * ```ts
 * await throughput(ctx, c, "vxlan", podA, podB, facts); // weft's agents running, routes in place
 * ```
 */
import type { Cluster, Pod } from "../../test/kit/cluster.ts";
import { waitFor } from "../../test/kit/proc.ts";
import { spawnLogged, stopProcess } from "../../test/kit/spawn.ts";
import { median, ratio, round } from "../lib/report.ts";
import { load1 } from "../lib/sys.ts";
import type { DatapathCtx } from "./flags.ts";
import {
  flush,
  handMade,
  type HostFacts,
  hostFacts,
  kernelState,
  startAgents,
  stateDiff,
  stopAgents,
  waitPeerRoutes,
} from "./hosts.ts";

interface IperfSample {
  bps: number;
  retransmits: number | null;
  load: number;
}

async function iperf(
  ctx: DatapathCtx,
  c: Cluster,
  from: Pod,
  to: Pod,
): Promise<IperfSample> {
  const secs = Number(ctx.opt["iperf-seconds"]);
  const load = load1();
  const r = await c.run(from, [
    "iperf3",
    "-c",
    to.ip,
    "-p",
    "5201",
    "-t",
    String(secs),
    "-O",
    "1",
    "-J",
  ], { timeoutMs: (secs + 15) * 1000 });
  let j: {
    error?: string;
    end?: { sum_received?: { bits_per_second: number }; sum_sent?: { retransmits?: number } };
  };
  try {
    j = JSON.parse(r.stdout);
  } catch {
    throw new Error(`iperf3 from ${from.name} to ${to.ip}: ${r.stderr || r.stdout || "no output"}`);
  }
  if (j.error || !j.end?.sum_received) throw new Error(`iperf3: ${j.error ?? "no result"}`);
  return {
    bps: j.end.sum_received.bits_per_second,
    retransmits: j.end.sum_sent?.retransmits ?? null,
    load,
  };
}

async function waitIperfServer(c: Cluster, from: Pod, to: Pod) {
  await waitFor("iperf3 server", async () => {
    const r = await c.run(from, ["bash", "-c", `exec 3<>/dev/tcp/${to.ip}/5201`], {
      timeoutMs: 2000,
    });
    return r.code === 0;
  }, { timeoutMs: 10_000 });
}

/** The throughput rounds of `backend` and their table; the agents run when it is called. */
export async function throughput(
  ctx: DatapathCtx,
  c: Cluster,
  backend: "vxlan" | "host-gw",
  a: Pod,
  b: Pod,
  facts: HostFacts[],
): Promise<void> {
  const { opt, deadline, report } = ctx;
  const server = spawnLogged(
    ["ip", "netns", "exec", b.netns, "iperf3", "-s", "-p", "5201"],
    `${c.dir}/iperf3-${backend}.log`,
  );
  const weftS: IperfSample[] = [];
  const handS: IperfSample[] = [];
  let weftState: string[] | null = null;
  let handState: string[] | null = null;
  try {
    await waitIperfServer(c, a, b);
    const rounds = Number(opt.rounds);
    for (let r = 0; r < rounds; r++) {
      deadline.check(`throughput round ${r + 1} (${backend})`);
      if (r > 0) {
        await flush(c, backend); // hand-made entries of the previous round
        await startAgents(c, backend);
        facts = await hostFacts(c, backend === "vxlan");
        await waitPeerRoutes(c, facts);
      }
      weftS.push(await iperf(ctx, c, a, b));
      weftState ??= await kernelState(c, "h1", backend);
      await stopAgents(c);
      await flush(c, backend);
      await handMade(c, backend, facts);
      if ((await c.ping(a, b.ip, { count: 1 })).received === 0) {
        throw new Error(`hand-made ${backend} entries do not carry traffic`);
      }
      handS.push(await iperf(ctx, c, a, b));
      handState ??= await kernelState(c, "h1", backend);
      console.log(
        `  round ${r + 1}: weft ${(weftS[r].bps / 1e9).toFixed(2)} Gbit/s, hand-made ${
          (handS[r].bps / 1e9).toFixed(2)
        } Gbit/s (load ${weftS[r].load}/${handS[r].load})`,
      );
    }
    await flush(c, backend);
  } finally {
    await stopProcess(server, "SIGTERM", 3000).catch(() => {});
  }
  const mw = median(weftS.map((s) => s.bps));
  const mh = median(handS.map((s) => s.bps));
  const diff = stateDiff(weftState ?? [], handState ?? []);
  report.data[`throughput_${backend}`] = {
    weft: weftS,
    hand: handS,
    kernelDiff: diff,
    weftState,
    handState,
  };
  const gbit = (x: number | null) => x === null ? null : x / 1e9;
  const r = ratio(mw, mh);
  // With 2 shared cores the spread between samples is often larger than the 3 % goal: a miss
  // whose sample ranges overlap is reported as inconclusive, not as a real difference.
  const overlap = Math.max(...weftS.map((s) => s.bps)) >= Math.min(...handS.map((s) => s.bps));
  const verdict = r === null
    ? "no data"
    : r >= 0.97
    ? "≥ 0.97 met"
    : overlap
    ? "inconclusive (ranges overlap)"
    : "≥ 0.97 MISSED";
  report.section(
    `pod-to-pod TCP throughput (${backend})`,
    ["backend", "datapath", "median Gbit/s", "min", "max", "retransmits", "ratio", "goal"],
    [
      [
        backend,
        "weft",
        gbit(mw),
        gbit(Math.min(...weftS.map((s) => s.bps))),
        gbit(Math.max(...weftS.map((s) => s.bps))),
        weftS.reduce((x, s) => x + (s.retransmits ?? 0), 0),
        round(r),
        verdict,
      ],
      [
        backend,
        "hand-made (ip)",
        gbit(mh),
        gbit(Math.min(...handS.map((s) => s.bps))),
        gbit(Math.max(...handS.map((s) => s.bps))),
        handS.reduce((x, s) => x + (s.retransmits ?? 0), 0),
        1,
        "",
      ],
    ],
    [
      `${weftS.length} alternating rounds of iperf3 -t ${
        opt["iperf-seconds"]
      } -O 1, pod on h1 → pod on h2`,
      `kernel state on h1, weft vs hand-made (device, routes, neighbours, FDB): ${
        diff.length ? `${diff.length} differences: ${diff.slice(0, 4).join("; ")}` : "identical"
      }`,
      `load average during the samples: ${
        [...weftS, ...handS].map((s) => s.load).join(", ")
      } (2 shared cores: other work on the machine moves these numbers)`,
    ],
  );
}
