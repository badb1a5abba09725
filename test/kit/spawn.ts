/**
 * Long-running children (agents, etcd, iperf3 servers) whose stdout and stderr are kept in
 * memory and, when a log file is given, appended to it, so a failed test can print what the
 * process said. The child is spawned directly (no shell): with `ip netns exec`, iproute2 execs
 * the program in place, so the pid we hold is the program's own and signals reach it. A child
 * still running at process exit is killed by the kit's exit hook.
 *
 * @example
 * ```ts
 * const p = spawnLogged(["ip", "netns", "exec", ns, "etcd"], `${dir}/etcd.log`);
 * p.child.kill("SIGTERM");
 * const status = await p.exited;   // logs are flushed when this resolves
 * ```
 */
import { atExit, killNow } from "./exit.ts";

export interface LoggedProcess {
  child: Deno.ChildProcess;
  pid: number;
  /** Resolves once the process exited and its output is fully written to the log. */
  exited: Promise<Deno.CommandStatus>;
  /** Set once the process exited. */
  status: Deno.CommandStatus | null;
  /** Everything the process wrote to stdout and stderr so far. */
  output(): string;
}

export interface SpawnOptions {
  env?: Record<string, string>;
  cwd?: string;
  /** A header line written to the log before the process starts (e.g. the command line). */
  banner?: string;
}

/** Spawns `cmd` with output kept in memory and appended to `logFile` (created if missing). */
export function spawnLogged(
  cmd: string[],
  logFile: string | null,
  opts: SpawnOptions = {},
): LoggedProcess {
  const file = logFile === null ? null : Deno.openSync(logFile, { append: true, create: true });
  const enc = new TextEncoder();
  if (opts.banner) file?.writeSync(enc.encode(`${opts.banner}\n`));
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
    file?.close();
    throw new Error(`could not start \`${cmd.join(" ")}\`: ${(e as Error).message}`);
  }
  const undo = atExit(() => killNow(child.pid));
  // Both streams write through one chain so chunks never interleave mid-write.
  let chain: Promise<unknown> = Promise.resolve();
  let text = "";
  const dec = new TextDecoder();
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream) {
      text += dec.decode(chunk, { stream: true });
      if (file) chain = chain.then(() => writeAll(file, chunk)).catch(() => {});
    }
  };
  const proc = { child, pid: child.pid, status: null, output: () => text } as LoggedProcess;
  proc.exited = (async () => {
    const [status] = await Promise.all([child.status, pump(child.stdout), pump(child.stderr)]);
    undo();
    await chain;
    const how = status.signal ? `signal ${status.signal}` : `code ${status.code}`;
    try {
      if (file) await writeAll(file, enc.encode(`--- pid ${child.pid} exited with ${how}\n`));
    } finally {
      file?.close();
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
