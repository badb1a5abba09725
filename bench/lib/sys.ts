/**
 * What the benchmarks read from the kernel about processes and the machine: resident memory of
 * a pid (VmRSS, and PSS, which splits pages shared between many deno processes fairly), CPU time,
 * free memory; plus small timing helpers.
 *
 * @example
 * ```ts
 * const m = procMemory(child.pid);   // { rssKiB, hwmKiB, anonKiB, fileKiB, pssKiB } or null
 * const cpu = procCpuSeconds(child.pid);
 * if (memAvailableMiB() < 2048) throw new Error("not enough memory for another wave");
 * ```
 */
import { Deadline as BaseDeadline, sleep, withTimeout } from "../../src/base/async.ts";

export { sleep };

export interface ProcMemory {
  /** VmRSS: resident set, counting shared pages in full. */
  rssKiB: number;
  /** VmHWM: peak resident set. */
  hwmKiB: number;
  /** RssAnon: private heap/stack pages (the part that grows per process). */
  anonKiB: number;
  /** RssFile: mapped files (the deno binary's text, shared between processes). */
  fileKiB: number;
  /** Pss from smaps_rollup: shared pages divided among their users (sums to real usage). */
  pssKiB: number | null;
}

function kib(text: string, field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(text);
  return m ? Number(m[1]) : 0;
}

/** Memory of a live process, or null when it is gone. */
export function procMemory(pid: number): ProcMemory | null {
  let status: string;
  try {
    status = Deno.readTextFileSync(`/proc/${pid}/status`);
  } catch {
    return null;
  }
  let pss: number | null = null;
  try {
    pss = kib(Deno.readTextFileSync(`/proc/${pid}/smaps_rollup`), "Pss");
  } catch { /* older kernels: no smaps_rollup */ }
  return {
    rssKiB: kib(status, "VmRSS"),
    hwmKiB: kib(status, "VmHWM"),
    anonKiB: kib(status, "RssAnon"),
    fileKiB: kib(status, "RssFile"),
    pssKiB: pss,
  };
}

/** USER_HZ on Linux: /proc times are in these ticks. */
export const CLK_TCK = 100;

/** utime + stime ticks of a /proc/<pid>/stat (or task/<tid>/stat) text. */
export function statCpuTicks(stat: string): number {
  // Fields after "(comm) ": state is f[0], utime f[11], stime f[12] (stat fields 14 and 15).
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(f[11]) + Number(f[12]);
}

/** User + system CPU seconds a live process has used, or null when it is gone. */
export function procCpuSeconds(pid: number): number | null {
  try {
    return statCpuTicks(Deno.readTextFileSync(`/proc/${pid}/stat`)) / CLK_TCK;
  } catch {
    return null;
  }
}

/** MemAvailable in MiB. */
export function memAvailableMiB(): number {
  const m = /MemAvailable:\s+(\d+) kB/.exec(Deno.readTextFileSync("/proc/meminfo"));
  return m ? Number(m[1]) / 1024 : 0;
}

/** The 1-minute load average. */
export function load1(): number {
  return Number(Deno.readTextFileSync("/proc/loadavg").split(" ")[0]);
}

/** Wall-clock epoch ms with sub-millisecond resolution (comparable across processes). */
export function nowMs(): number {
  return performance.timeOrigin + performance.now();
}

/** Rejects with `what: no answer within N s` when `p` takes longer than `ms`. */
export const within = withTimeout;

/**
 * A whole-run deadline: `left()` says how much time remains, `check(what)` throws once it is
 * spent, so every phase of a benchmark stops instead of overrunning.
 */
export class Deadline extends BaseDeadline {
  constructor(readonly totalMs: number) {
    super(totalMs);
  }
  left(): number {
    return this.remaining();
  }
  check(what: string): void {
    if (this.expired()) {
      throw new Error(
        `run deadline of ${Math.round(this.totalMs / 1000)} s reached before ${what}; ` +
          `raise --deadline or run fewer sizes`,
      );
    }
  }
}
