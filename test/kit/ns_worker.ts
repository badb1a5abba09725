/**
 * Runs test code inside a throwaway network namespace. A netlink socket belongs to the namespace
 * of the thread that opens it, so code under test runs in a child `deno` process started with
 * `ip netns exec`; the test calls that child's exported functions over JSON lines (stdin/stdout)
 * and checks the kernel state from outside with `ip -n <ns> ...`.
 *
 * Everything is bounded: every call has a deadline, and {@link TestNetns.destroy} kills the
 * processes inside the namespace (only ours: the namespace is unique to this run) and deletes it.
 *
 * @example
 * ```ts
 * const ns = await TestNetns.create("wlnl");
 * try {
 *   const w = await ns.spawn(import.meta.url, "rpc"); // this module's `export const rpc = {...}`
 *   await w.call("linkSetUp", 1);
 *   await ns.ipJson(["link", "show", "lo"]);
 * } finally {
 *   await ns.destroy();
 * }
 * ```
 */
import { newRunId } from "./names.ts";
import { createNs, deleteNs, denoInNs } from "./netns.ts";
import { run, runOk, type RunResult } from "./proc.ts";

/** An error thrown inside the worker, rebuilt on the test side with the error's own fields. */
export class RemoteError extends Error {
  /** Every own field of the remote error (op, code, codeName, errno, ...), plus exists/notFound. */
  readonly fields: Record<string, unknown>;
  constructor(remoteName: string, message: string, fields: Record<string, unknown>) {
    super(message);
    this.name = remoteName;
    this.fields = fields;
  }
}

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

/** A child `deno` process inside a namespace that serves calls to one exported object. */
export class NsWorker {
  #child: Deno.ChildProcess;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #pending = new Map<number, Pending>();
  #nextId = 1;
  #done: Promise<void>;
  #closed = false;

  constructor(child: Deno.ChildProcess) {
    this.#child = child;
    this.#writer = child.stdin.getWriter();
    this.#done = this.#readLoop();
  }

  /** The worker's pid (the deno process itself: `ip netns exec` execs it). */
  get pid(): number {
    return this.#child.pid;
  }

  async #readLoop(): Promise<void> {
    const dec = new TextDecoder();
    let buf = "";
    for await (const chunk of this.#child.stdout) {
      buf += dec.decode(chunk, { stream: true });
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.trim()) this.#deliver(line);
      }
    }
    const gone = new Error("netns worker exited (see its stderr above)");
    for (const p of this.#pending.values()) {
      clearTimeout(p.timer);
      p.reject(gone);
    }
    this.#pending.clear();
  }

  #deliver(line: string): void {
    let msg: { id: number; ok: boolean; value?: unknown; error?: Record<string, unknown> };
    try {
      msg = JSON.parse(line);
    } catch {
      console.error(`netns worker printed a non-JSON line: ${line}`);
      return;
    }
    const p = this.#pending.get(msg.id);
    if (!p) return;
    this.#pending.delete(msg.id);
    clearTimeout(p.timer);
    if (msg.ok) p.resolve(msg.value);
    else {
      const e = msg.error ?? {};
      p.reject(new RemoteError(String(e.name), String(e.message), e));
    }
  }

  /** Calls `method` on the worker's object; rejects with {@link RemoteError} when it throws. */
  call<T = unknown>(method: string, ...args: unknown[]): Promise<T> {
    return this.callWithin<T>(30_000, method, ...args);
  }

  /** {@link call} with an explicit deadline; on expiry the worker is killed. */
  callWithin<T = unknown>(timeoutMs: number, method: string, ...args: unknown[]): Promise<T> {
    if (this.#closed) return Promise.reject(new Error("netns worker is closed"));
    const id = this.#nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        this.kill();
        reject(new Error(`netns worker call ${method} took longer than ${timeoutMs} ms; killed`));
      }, timeoutMs);
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer });
      const line = JSON.stringify({ id, method, args }) + "\n";
      this.#writer.write(new TextEncoder().encode(line)).catch((e) => {
        this.#pending.delete(id);
        clearTimeout(timer);
        reject(e);
      });
    });
  }

  kill(): void {
    try {
      this.#child.kill("SIGKILL");
    } catch { /* already gone */ }
  }

  /** Ends the worker (stdin closed, then SIGKILL if it lingers) and waits for it. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    try {
      await this.#writer.close();
    } catch { /* already broken */ }
    const timer = setTimeout(() => this.kill(), 5_000);
    try {
      await this.#child.status;
      await this.#done;
    } finally {
      clearTimeout(timer);
    }
  }
}

/** A network namespace named `<prefix>-<runId>`, with `lo` up. */
export class TestNetns {
  readonly workers: NsWorker[] = [];

  private constructor(readonly name: string, readonly runId: string) {}

  static async create(prefix: string): Promise<TestNetns> {
    const runId = newRunId();
    const ns = new TestNetns(`${prefix}-${runId}`, runId);
    await createNs(ns.name, { bare: true });
    try {
      await ns.ip(["link", "set", "lo", "up"]);
    } catch (e) {
      await ns.destroy();
      throw e;
    }
    return ns;
  }

  /** `ip -n <ns> ...args`; returns stdout, throws with stderr on failure. */
  ip(args: string[]): Promise<string> {
    return runOk(["ip", "-n", this.name, ...args]);
  }

  /** `ip -j -n <ns> ...args`, parsed. */
  async ipJson<T = Record<string, unknown>[]>(args: string[]): Promise<T> {
    const out = await runOk(["ip", "-j", "-n", this.name, ...args]);
    return JSON.parse(out.trim() || "[]") as T;
  }

  /** Runs a command inside the namespace; never throws on a non-zero exit. */
  exec(cmd: string[], timeoutMs?: number): Promise<RunResult> {
    return run(["ip", "netns", "exec", this.name, ...cmd], { timeoutMs });
  }

  /**
   * Starts `deno run` of this file as a worker inside the namespace, serving the object exported
   * as `exportName` by `moduleUrl`. V8's `gc()` is exposed so workers can measure heap honestly.
   */
  spawn(moduleUrl: string, exportName: string): Promise<NsWorker> {
    const [cmd, ...args] = denoInNs(
      this.name,
      [new URL(import.meta.url).pathname, moduleUrl, exportName],
      { flags: ["--v8-flags=--expose-gc"] },
    );
    const child = new Deno.Command(cmd, {
      args,
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const w = new NsWorker(child);
    this.workers.push(w);
    return Promise.resolve(w);
  }

  /** Stops our workers, kills anything left inside (all of it ours), and deletes the namespace. */
  async destroy(): Promise<void> {
    for (const w of this.workers) await w.close().catch(() => w.kill());
    // Kills whatever is left inside (all of it ours: the namespace is unique to this run).
    await deleteNs(this.name);
  }
}

/** Fields of an error worth sending back: its own properties plus the exists/notFound getters. */
function serializeError(e: unknown): Record<string, unknown> {
  if (!(e instanceof Error)) return { name: "Error", message: String(e) };
  const out: Record<string, unknown> = { name: e.name, message: e.message };
  for (const [k, v] of Object.entries(e)) {
    try {
      JSON.stringify(v);
      out[k] = v;
    } catch { /* not serializable: skip */ }
  }
  for (const k of ["exists", "notFound"]) {
    if (k in e) out[k] = (e as unknown as Record<string, unknown>)[k];
  }
  return out;
}

/** Worker side: serve `obj[method](...args)` for each JSON line on stdin until it closes. */
async function serve(moduleUrl: string, exportName: string): Promise<void> {
  const mod = await import(moduleUrl);
  const obj = mod[exportName] as Record<string, (...a: unknown[]) => unknown>;
  if (!obj) throw new Error(`${moduleUrl} has no export "${exportName}"`);
  const enc = new TextEncoder();
  const dec = new TextDecoder();
  const reply = (m: unknown) => {
    const bytes = enc.encode(JSON.stringify(m) + "\n");
    // writeSync may write less than asked on a pipe; loop until the whole line is out.
    for (let off = 0; off < bytes.length;) off += Deno.stdout.writeSync(bytes.subarray(off));
  };
  let buf = "";
  for await (const chunk of Deno.stdin.readable) {
    buf += dec.decode(chunk, { stream: true });
    let nl: number;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (!line.trim()) continue;
      const { id, method, args } = JSON.parse(line);
      try {
        if (typeof obj[method] !== "function") throw new Error(`no method "${method}"`);
        const value = await obj[method](...args);
        reply({ id, ok: true, value: value ?? null });
      } catch (e) {
        reply({ id, ok: false, error: serializeError(e) });
      }
    }
  }
}

if (import.meta.main) {
  const [moduleUrl, exportName] = Deno.args;
  // No top-level await: the served module usually imports this file, and awaiting here would
  // leave this module unevaluated while that import waits for it (a deadlock).
  serve(moduleUrl, exportName).catch((e) => {
    console.error(`netns worker: ${e?.stack ?? e}`);
    Deno.exit(1);
  });
}
