/**
 * One control-plane benchmark run: its flags, report, deadline, run id and temp dirs. Temp dirs
 * are removed on every exit path, Ctrl-C included; agents, etcd and child processes are the
 * kit's (test/kit/exit.ts kills whatever is still running at exit).
 *
 * @example
 * ```ts
 * const s = new Session(parseFlags(Deno.args));
 * const dir = await s.tempDir("kv-lat");
 * // ... measure, s.report.section(...) ...
 * await s.removeDir(dir);
 * ```
 */
import { type EtcdProc } from "../../test/kit/etcd.ts";
import { Report } from "../lib/report.ts";
import { Deadline } from "../lib/sys.ts";
import type { Flags } from "./flags.ts";

export class Session {
  readonly registries: ("kv" | "etcd")[];
  readonly sizes: number[];
  readonly wave: number;
  readonly skip: Set<string>;
  readonly deadline: Deadline;
  readonly runId = Math.random().toString(36).slice(2, 8);
  readonly report: Report;
  /** The run's etcd, started by the entry point when a registry needs it. */
  etcd: EtcdProc | null = null;
  readonly #tempDirs = new Set<string>();

  constructor(readonly opt: Flags) {
    this.registries = opt.registries.split(",").filter(Boolean) as ("kv" | "etcd")[];
    for (const r of this.registries) {
      if (r !== "kv" && r !== "etcd") throw new Error(`--registries: "${r}" is not kv or etcd`);
    }
    this.sizes = opt.sizes.split(",").filter(Boolean).map(Number);
    this.wave = Number(opt.wave);
    this.skip = new Set(opt.skip.split(",").filter(Boolean));
    this.deadline = new Deadline(Number(opt["deadline-min"]) * 60_000);
    this.report = new Report("control_plane", { ...opt, runId: this.runId });
    globalThis.addEventListener("unload", () => {
      for (const d of this.#tempDirs) {
        try {
          Deno.removeSync(d, { recursive: true });
        } catch { /* gone */ }
      }
    });
    for (const sig of ["SIGINT", "SIGTERM"] as const) {
      Deno.addSignalListener(sig, () => {
        console.error(`\n${sig}: stopping agents and removing temp dirs`);
        Deno.exit(130); // runs the unload handlers here and in test/kit (exit.ts: agents, etcd)
      });
    }
  }

  async tempDir(tag: string): Promise<string> {
    const d = await Deno.makeTempDir({ prefix: `weft-bench-${this.runId}-${tag}-` });
    this.#tempDirs.add(d);
    return d;
  }

  async removeDir(d: string): Promise<void> {
    await Deno.remove(d, { recursive: true }).catch(() => {});
    this.#tempDirs.delete(d);
  }

  /** Removes every temp dir still there (end of the run). */
  async removeAll(): Promise<void> {
    for (const d of [...this.#tempDirs]) await this.removeDir(d);
  }
}
