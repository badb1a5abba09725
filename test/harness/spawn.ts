/**
 * Long-running children (agents, etcd) whose stdout and stderr are appended to one log file, so
 * a failed test can print what the process said. The child is spawned directly (no shell): with
 * `ip netns exec`, iproute2 execs the program in place, so the pid we hold is the program's own
 * and signals reach it.
 *
 * @example
 * ```ts
 * const p = spawnLogged(["ip", "netns", "exec", ns, "etcd"], `${dir}/etcd.log`);
 * p.child.kill("SIGTERM");
 * const status = await p.exited;   // logs are flushed when this resolves
 * ```
 */

export interface LoggedProcess {
  child: Deno.ChildProcess;
  pid: number;
  /** Resolves once the process exited and its output is fully written to the log. */
  exited: Promise<Deno.CommandStatus>;
  /** Set once the process exited. */
  status: Deno.CommandStatus | null;
}

export interface SpawnOptions {
  env?: Record<string, string>;
  cwd?: string;
  /** A header line written to the log before the process starts (e.g. the command line). */
  banner?: string;
}

/** Spawns `cmd` with output appended to `logFile` (created if missing). */
export function spawnLogged(
  cmd: string[],
  logFile: string,
  opts: SpawnOptions = {},
): LoggedProcess {
  const file = Deno.openSync(logFile, { append: true, create: true });
  const enc = new TextEncoder();
  if (opts.banner) file.writeSync(enc.encode(`${opts.banner}\n`));
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(cmd[0], {
      args: cmd.slice(1),
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: opts.env,
      cwd: opts.cwd,
    }).spawn();
  } catch (e) {
    file.close();
    throw new Error(`could not start \`${cmd.join(" ")}\`: ${(e as Error).message}`);
  }
  // Both streams write through one chain so chunks never interleave mid-write.
  let chain: Promise<unknown> = Promise.resolve();
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream) {
      chain = chain.then(() => writeAll(file, chunk)).catch(() => {});
    }
  };
  const proc = { child, pid: child.pid, status: null } as LoggedProcess;
  proc.exited = (async () => {
    const [status] = await Promise.all([child.status, pump(child.stdout), pump(child.stderr)]);
    await chain;
    const how = status.signal ? `signal ${status.signal}` : `code ${status.code}`;
    try {
      await writeAll(file, enc.encode(`--- pid ${child.pid} exited with ${how}\n`));
    } finally {
      file.close();
    }
    proc.status = status;
    return status;
  })();
  return proc;
}

async function writeAll(file: Deno.FsFile, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await file.write(data.subarray(off));
}

/** Sends `signal` to the process unless it already exited. */
export function signal(p: LoggedProcess, sig: Deno.Signal): void {
  if (p.status) return;
  try {
    p.child.kill(sig);
  } catch { /* exited between the check and the kill */ }
}

/**
 * Signals the process and waits for it to exit; after `graceMs` it is killed with SIGKILL.
 * Bounded: SIGKILL cannot be ignored, and the final wait is capped too.
 */
export async function stopProcess(
  p: LoggedProcess,
  sig: Deno.Signal = "SIGTERM",
  graceMs = 10_000,
): Promise<Deno.CommandStatus> {
  signal(p, sig);
  if (await exitedWithin(p, graceMs)) return p.status!;
  signal(p, "SIGKILL");
  if (await exitedWithin(p, 5_000)) return p.status!;
  throw new Error(`pid ${p.pid} did not exit 5 s after SIGKILL (stuck in the kernel?)`);
}

/** True when the process exits within `ms`. */
export async function exitedWithin(p: LoggedProcess, ms: number): Promise<boolean> {
  if (p.status) return true;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<false>((resolve) => timer = setTimeout(() => resolve(false), ms));
  try {
    return await Promise.race([p.exited.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}
