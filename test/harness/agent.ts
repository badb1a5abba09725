/**
 * One weft agent process inside a host namespace. The command is the real deno binary
 * (`Deno.execPath()`) under `ip netns exec`, which execs in place: the pid held here is deno's,
 * so SIGTERM/SIGKILL reach the agent itself. Output goes to the host's log file in the run dir.
 *
 * @example
 * ```ts
 * const a = new AgentProc({ host: "h1", netns, cmd, logFile, subnetFile });
 * await a.waitReady();            // subnet.env written by this start (and /readyz 200 if a port was given)
 * await a.restart();              // SIGTERM, wait, start again with the same command line
 * await a.kill();                 // SIGKILL
 * ```
 */
import { readSubnetEnvFile, type SubnetEnv } from "./pods.ts";
import { run, StopWaiting, waitFor } from "./proc.ts";
import { exitedWithin, type LoggedProcess, spawnLogged, stopProcess } from "./spawn.ts";

export interface AgentSpec {
  /** Logical host name ("h1"). */
  host: string;
  netns: string;
  /** Full command line, starting with "ip netns exec <ns> <deno>". */
  cmd: string[];
  logFile: string;
  subnetFile: string;
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
    return spawnLogged(this.spec.cmd, this.spec.logFile, {
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
    const since = this.#startedAt - 1000; // mtime vs Date.now(): allow clock-granularity skew
    try {
      return await waitFor(`agent on ${this.host} to become ready`, async () => {
        if (proc.status) {
          throw new StopWaiting(
            `agent on ${this.host} exited (code ${proc.status.code}, signal ${proc.status.signal}) before it was ready`,
          );
        }
        const st = await Deno.stat(this.spec.subnetFile).catch(() => null);
        if (!st || (st.mtime?.getTime() ?? 0) < since) {
          throw new Error(`${this.spec.subnetFile} not written yet`);
        }
        const env = await readSubnetEnvFile(this.spec.subnetFile);
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
        `${(e as Error).message}\n--- ${this.spec.logFile} (tail) ---\n${await this.logTail()}`,
      );
    }
  }

  /**
   * GET /readyz inside the netns; returns the HTTP status, or null when nothing answered. Uses
   * bash's /dev/tcp so the probe needs no extra tool and starts in milliseconds.
   */
  async readyz(path = "/readyz"): Promise<number | null> {
    if (this.spec.healthzPort === undefined) {
      throw new Error(`agent on ${this.host} has no healthz port`);
    }
    const script = `exec 3<>/dev/tcp/127.0.0.1/${this.spec.healthzPort} || exit 7
printf 'GET ${path} HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3
head -n1 <&3`;
    const r = await run(["ip", "netns", "exec", this.spec.netns, "bash", "-c", script], {
      timeoutMs: 3000,
    });
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(r.stdout);
    return m ? Number(m[1]) : null;
  }

  /** Sends `signal` and waits for exit (SIGKILL after `graceMs`). Returns the exit status. */
  stop(signal: Deno.Signal = "SIGTERM", graceMs = 10_000): Promise<Deno.CommandStatus> {
    return stopProcess(this.#proc, signal, graceMs);
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
    this.#proc = this.#spawn();
  }

  /** The last `chars` characters of the log. */
  async logTail(chars = 4000): Promise<string> {
    const text = await Deno.readTextFile(this.spec.logFile).catch(() => "(no log)");
    return text.length > chars ? "…" + text.slice(-chars) : text;
  }
}
