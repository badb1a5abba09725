/**
 * Idle-memory phase: agents that hold their lease and have been idle for `--idle-seconds`, next
 * to two baseline processes started at the same moment (so both idle for the same time): a bare
 * idle deno, and deno with weft's CLI modules loaded but not run (`../lib/idle_child.ts`).
 *
 * @example
 * ```ts
 * const kids = startIdleBaselines(idleSeconds);   // before the agents
 * // ... start agents, wait for their leases ...
 * await measureIdle(s, t, agents, kids, idleSeconds);
 * await stopIdleBaselines(kids);
 * ```
 */
import type { AgentProc } from "../../test/kit/agent.ts";
import { type LoggedProcess, spawnLogged, stopProcess } from "../../test/kit/spawn.ts";
import { type Cell, ratio, round } from "../lib/report.ts";
import { procCpuSeconds, procMemory, sleep } from "../lib/sys.ts";
import type { Target } from "./agents.ts";
import type { Session } from "./session.ts";

const IDLE_CHILD = new URL("../lib/idle_child.ts", import.meta.url).pathname;

/** [bare deno, deno + weft modules], idle for the window and 2 minutes more. */
export function startIdleBaselines(idleSeconds: number): LoggedProcess[] {
  return [[], ["--load-weft"]].map((extra) =>
    spawnLogged([
      Deno.execPath(),
      "run",
      "-A",
      IDLE_CHILD,
      "--seconds",
      String(idleSeconds + 120),
      ...extra,
    ], null)
  );
}

export async function stopIdleBaselines(kids: LoggedProcess[]): Promise<void> {
  await Promise.all(kids.map((k) => stopProcess(k, "SIGKILL", 3000).catch(() => {})));
}

/** Waits the idle window, then reports memory and idle CPU of agent 0 and both baselines. */
export async function measureIdle(
  s: Session,
  t: Target,
  agents: AgentProc[],
  kids: LoggedProcess[],
  idleSeconds: number,
): Promise<void> {
  const k = agents.length;
  const pids = [...agents.map((a) => a.child.pid), ...kids.map((c) => c.pid)];
  const cpu0 = pids.map(procCpuSeconds);
  await sleep(idleSeconds * 1000);
  const cpuPct = pids.map((pid, i) => {
    const now = procCpuSeconds(pid);
    return now === null || cpu0[i] === null ? null : (now - cpu0[i]!) / idleSeconds * 100;
  });
  const mem = agents.map((a) => procMemory(a.child.pid));
  const bare = procMemory(kids[0].pid);
  const loaded = procMemory(kids[1].pid);
  const rssMiB = (m: ReturnType<typeof procMemory>) => m ? m.rssKiB / 1024 : null;
  const pssMiB = (m: ReturnType<typeof procMemory>) => m?.pssKiB ? m.pssKiB / 1024 : null;
  const idleRows: Cell[][] = [
    [
      t.name,
      "weft agent (alloc)",
      rssMiB(mem[0]),
      pssMiB(mem[0]),
      mem[0] ? mem[0].anonKiB / 1024 : null,
      round(ratio(rssMiB(mem[0]), rssMiB(bare))),
      cpuPct[0],
    ],
    [
      t.name,
      "deno + weft modules, idle",
      rssMiB(loaded),
      pssMiB(loaded),
      loaded ? loaded.anonKiB / 1024 : null,
      round(ratio(rssMiB(loaded), rssMiB(bare))),
      cpuPct[k + 1],
    ],
    [
      t.name,
      "bare deno, idle",
      rssMiB(bare),
      pssMiB(bare),
      bare ? bare.anonKiB / 1024 : null,
      1,
      cpuPct[k],
    ],
  ];
  s.report.data[`idle_${t.name}`] = { agents: mem, bare, loaded, idleSeconds, cpuPct };
  s.report.section(
    `idle memory after ${idleSeconds} s (${t.name})`,
    ["registry", "process", "RSS MiB", "PSS MiB", "anon MiB", "RSS ratio", "idle CPU %"],
    idleRows,
    [
      "RSS counts shared pages (the deno binary) in full; PSS divides them among sharers",
      "ratio = RSS / RSS of a bare idle deno process measured at the same time",
      "idle CPU % = user+sys CPU over the idle window / its length (one core = 100 %)",
    ],
  );
}
