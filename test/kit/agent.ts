/**
 * The kit's one model of a weft agent process, and `weft` CLI runs. The command is the real deno
 * binary (`Deno.execPath()`), under `ip netns exec` for a cluster host (which execs in place): the
 * pid held here is deno's, so SIGTERM/SIGKILL reach the agent itself. Output is kept in memory
 * (`log()`) and, for cluster hosts, appended to the host's log file in the run dir. An agent
 * still running at process exit is killed by the kit's exit hook.
 *
 * @example
 * ```ts
 * const a = new AgentProc({ host: "h1", netns, cmd, logFile, subnetFile });  // in a cluster
 * const b = startAgent(["--kv-path", kv, "--subnet-file", env]);              // `weft run` here
 * await a.waitReady();            // subnet.env written by this start (and /readyz 200 if a port was given)
 * await a.restart();              // SIGTERM, wait, start again with the same command line
 * const { code, ms } = await b.stop("SIGTERM");
 * const v = await weft(["version"]);                                          // CLI, to completion
 * ```
 */
import { readSubnetEnvFile, type SubnetEnv } from "./pods.ts";
import { run, type RunResult, StopWaiting, waitFor } from "./proc.ts";
import { exitedWithin, type LoggedProcess, spawnLogged, stopProcess } from "./spawn.ts";
import { V8_FLAGS } from "../../src/base/v8_flags.ts";

const MAIN = decodeURIComponent(new URL("../../main.ts", import.meta.url).pathname);

export interface AgentSpec {
  /** Logical host name ("h1"); "local" for agents in the test's own namespace. */
  host: string;
  /** The namespace the agent runs in (only needed for {@link AgentProc.readyz}). */
  netns?: string;
  /** Full command line, e.g. "ip netns exec <ns> <deno> run -A main.ts run …". */
  cmd: string[];
  /** Log file the output is appended to; none: kept in memory only. */
  logFile?: string;
  /** subnet.env the agent writes; needed by {@link AgentProc.waitReady}. */
  subnetFile?: string;
  /** When set, readiness also requires GET /readyz on 127.0.0.1:<port> in the netns to be 200. */
  healthzPort?: number;
  env?: Record<string, string>;
  cwd?: string;
}

/** Default bound on {@link AgentProc.waitReady}. */
export const READY_TIMEOUT_MS = 20_000;

export class AgentProc {
  #proc: LoggedProcess;
  #startedAt = 0;
  #starts = 0;
  /** Output of earlier starts (restarts). */
  #earlier = "";

  constructor(readonly spec: AgentSpec) {
    this.#proc = this.#spawn();
  }

  get host(): string {
    return this.spec.host;
  }

  /** Pid of the current agent process (deno itself). */
  get pid(): number {
    return this.#proc.pid;
  }

  /** The current child process. */
  get child(): Deno.ChildProcess {
    return this.#proc.child;
  }

  /** Resolves when the current process exited and its output is fully logged. */
  get exited(): Promise<Deno.CommandStatus> {
    return this.#proc.exited;
  }

  /** Everything the agent printed, over all its starts. */
  log(): string {
    return this.#earlier + this.#proc.output();
  }

  /** Exit status of the current process, or null while it runs. */
  get status(): Deno.CommandStatus | null {
    return this.#proc.status;
  }

  /** How many times this agent was started (1 + restarts). */
  get starts(): number {
    return this.#starts;
  }

  #spawn(): LoggedProcess {
    this.#starts++;
    this.#startedAt = Date.now();
    return spawnLogged(this.spec.cmd, this.spec.logFile ?? null, {
      banner: `=== start #${this.#starts} ${new Date().toISOString()}: ${this.spec.cmd.join(" ")}`,
      env: { NO_COLOR: "1", ...this.spec.env },
      cwd: this.spec.cwd,
    });
  }

  /**
   * Waits until this start of the agent wrote subnet.env (mtime at or after the spawn, so a file
   * left by an earlier start does not count) and, with a healthz port, /readyz answers 200.
   * Fails at once, with the log tail, if the agent exits first.
   */
  async waitReady(timeoutMs = READY_TIMEOUT_MS): Promise<SubnetEnv> {
    const proc = this.#proc;
    const subnetFile = this.spec.subnetFile;
    if (!subnetFile) throw new Error(`agent on ${this.host} has no subnetFile to wait for`);
    const since = this.#startedAt - 1000; // mtime vs Date.now(): allow clock-granularity skew
    try {
      return await waitFor(`agent on ${this.host} to become ready`, async () => {
        if (proc.status) {
          throw new StopWaiting(
            `agent on ${this.host} exited (code ${proc.status.code}, signal ${proc.status.signal}) before it was ready`,
          );
        }
        const st = await Deno.stat(subnetFile).catch(() => null);
        if (!st || (st.mtime?.getTime() ?? 0) < since) {
          throw new Error(`${subnetFile} not written yet`);
        }
        const env = await readSubnetEnvFile(subnetFile);
        if (!env) return undefined;
        if (this.spec.healthzPort !== undefined) {
          const code = await this.readyz();
          if (code !== 200) throw new Error(`/readyz answered ${code ?? "nothing"}`);
        }
        return env;
      }, { timeoutMs, intervalMs: 100 });
    } catch (e) {
      // Let the output reach the log before reading its tail.
      await exitedWithin(proc, 200);
      throw new Error(
        `${(e as Error).message}\n--- ${
          this.spec.logFile ?? "agent output"
        } (tail) ---\n${await this.logTail()}`,
      );
    }
  }

  /**
   * GET /readyz inside the netns; returns the HTTP status, or null when nothing answered. Uses
   * bash's /dev/tcp so the probe needs no extra tool and starts in milliseconds.
   */
  async readyz(path = "/readyz"): Promise<number | null> {
    return (await this.#get(path, "head -n1")).code;
  }

  /** Like {@link readyz}, with the body too (the reason a node is not ready). */
  readyzText(path = "/readyz"): Promise<{ code: number | null; body: string }> {
    return this.#get(path, "cat");
  }

  /**
   * `reader` replaces bash (exec), so the deadline's SIGKILL reaches it: a frozen agent (SIGSTOP)
   * accepts the connection in the kernel but never answers, and an orphaned reader would hang.
   */
  async #get(path: string, reader: string): Promise<{ code: number | null; body: string }> {
    if (this.spec.healthzPort === undefined || this.spec.netns === undefined) {
      throw new Error(`agent on ${this.host} has no healthz port in a namespace`);
    }
    const script = `exec 3<>/dev/tcp/127.0.0.1/${this.spec.healthzPort} || exit 7
printf 'GET ${path} HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3
exec ${reader} <&3`;
    const r = await run(["ip", "netns", "exec", this.spec.netns, "bash", "-c", script], {
      timeoutMs: 3000,
    });
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(r.stdout);
    const body = r.stdout.split(/\r?\n\r?\n/).slice(1).join("\n\n").trim();
    return { code: m ? Number(m[1]) : null, body };
  }

  /**
   * Sends `signal` and waits for exit (SIGKILL after `graceMs`). Returns the exit status and how
   * long the exit took after the signal, in ms.
   */
  async stop(
    signal: Deno.Signal = "SIGTERM",
    graceMs = 10_000,
  ): Promise<Deno.CommandStatus & { ms: number }> {
    const t0 = performance.now();
    const st = await stopProcess(this.#proc, signal, graceMs);
    return { ...st, ms: performance.now() - t0 };
  }

  /** SIGKILL and wait. */
  kill(): Promise<Deno.CommandStatus> {
    return stopProcess(this.#proc, "SIGKILL", 5_000);
  }

  /** Sends a signal without waiting (e.g. SIGHUP, or SIGSTOP to freeze the agent). */
  signal(sig: Deno.Signal): void {
    if (!this.#proc.status) this.#proc.child.kill(sig);
  }

  /** Waits up to `timeoutMs` for the agent to exit on its own; throws if it is still running. */
  async waitExit(timeoutMs = 10_000): Promise<Deno.CommandStatus> {
    if (await exitedWithin(this.#proc, timeoutMs)) return this.#proc.status!;
    throw new Error(`agent on ${this.host} (pid ${this.pid}) still running after ${timeoutMs} ms`);
  }

  /** Stops the agent (if running) with `signal`, then starts it again with the same command line. */
  async restart(signal: Deno.Signal = "SIGTERM"): Promise<void> {
    if (!this.#proc.status) await this.stop(signal);
    await this.#proc.exited;
    this.#earlier += this.#proc.output();
    this.#proc = this.#spawn();
  }

  /** The last `chars` characters of the log. */
  async logTail(chars = 4000): Promise<string> {
    const text = this.spec.logFile
      ? await Deno.readTextFile(this.spec.logFile).catch(() => "(no log)")
      : this.log();
    return text.length > chars ? "…" + text.slice(-chars) : text;
  }
}

/**
 * Starts `weft run <args>` in the test's own namespace (returns at once). Agents that need a
 * network of their own run in a cluster instead: `Cluster.startAgent`.
 */
/**
 * `--node-id-file` beside the `--subnet-file` of `weft run` args that name none: one host
 * identity per subnet.env (a host), kept across restarts, never the test machine's own
 * /var/lib/weft/node-id.
 */
function withNodeIdFile(args: string[]): string[] {
  const sf = args.indexOf("--subnet-file");
  if (sf < 0 || args.includes("--node-id-file")) return args;
  return [...args, "--node-id-file", `${args[sf + 1]}.node-id`];
}

export function startAgent(args: string[], env: Record<string, string> = {}): AgentProc {
  return new AgentProc({
    host: "local",
    // The V8 flags weft runs with in production (deno task weft, the compiled binary).
    cmd: [
      Deno.execPath(),
      "run",
      "-A",
      `--v8-flags=${V8_FLAGS.join(",")}`,
      MAIN,
      "run",
      ...withNodeIdFile(args),
    ],
    env,
  });
}

/** A finished `weft` command: exit code and output. */
export type CliResult = Pick<RunResult, "code" | "stdout" | "stderr">;

/** Runs `weft <args>` to completion (bounded by `timeoutMs`, default 30 s). */
export async function weft(
  args: string[],
  opts: { stdin?: string; env?: Record<string, string>; timeoutMs?: number } = {},
): Promise<CliResult> {
  const cli = args[0] === "run" ? withNodeIdFile(args) : args;
  const r = await run([Deno.execPath(), "run", "-A", MAIN, ...cli], {
    stdin: opts.stdin,
    env: { NO_COLOR: "1", ...opts.env },
    timeoutMs: opts.timeoutMs ?? 30_000,
  });
  return { code: r.code, stdout: r.stdout, stderr: r.stderr };
}
