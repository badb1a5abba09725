/**
 * Starts weft agents and CLI commands as real processes of the real deno binary (never a
 * wrapper), so signals reach the agent. Every agent started here is killed at process exit.
 */
const MAIN = new URL("../../main.ts", import.meta.url).pathname;
const live = new Set<Deno.ChildProcess>();
globalThis.addEventListener("unload", () => {
  for (const c of live) {
    try {
      c.kill("SIGKILL");
    } catch { /* gone */ }
  }
});

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `weft <args>` to completion (bounded by `timeoutMs`). */
export async function weft(
  args: string[],
  opts: { stdin?: string; env?: Record<string, string>; timeoutMs?: number } = {},
): Promise<CliResult> {
  const cmd = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, ...args],
    stdin: opts.stdin !== undefined ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", ...opts.env },
  });
  const child = cmd.spawn();
  live.add(child);
  const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 30_000);
  if (opts.stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(opts.stdin));
    await w.close();
  }
  const out = await child.output();
  clearTimeout(timer);
  live.delete(child);
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

export interface AgentProc {
  child: Deno.ChildProcess;
  /** Everything the agent logged so far. */
  log(): string;
  /** Sends a signal and waits for exit (bounded); returns the exit code and how long it took. */
  stop(signal?: Deno.Signal, timeoutMs?: number): Promise<{ code: number; ms: number }>;
  exited: Promise<Deno.CommandStatus>;
}

/** Starts `weft run <args>` in the background, collecting its stderr. */
export function startAgent(args: string[], env: Record<string, string> = {}): AgentProc {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, "run", ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", ...env },
  }).spawn();
  live.add(child);
  let text = "";
  const dec = new TextDecoder();
  const pump = async (s: ReadableStream<Uint8Array>) => {
    for await (const chunk of s) text += dec.decode(chunk, { stream: true });
  };
  const pumps = Promise.all([pump(child.stdout), pump(child.stderr)]);
  const exited = child.status.then(async (st) => {
    await pumps;
    live.delete(child);
    return st;
  });
  return {
    child,
    log: () => text,
    exited,
    async stop(signal: Deno.Signal = "SIGTERM", timeoutMs = 5000) {
      const t0 = performance.now();
      try {
        child.kill(signal);
      } catch { /* already exited */ }
      const timer = setTimeout(() => {
        try {
          child.kill("SIGKILL");
        } catch { /* gone */ }
      }, timeoutMs);
      const st = await exited;
      clearTimeout(timer);
      return { code: st.code, ms: performance.now() - t0 };
    },
  };
}

/** Waits until `path` exists (bounded). */
export async function waitForFile(path: string, ms: number): Promise<string> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    try {
      return await Deno.readTextFile(path);
    } catch { /* not yet */ }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${path} did not appear within ${ms} ms`);
}
