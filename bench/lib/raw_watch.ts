/**
 * Baseline observers of a registry: how soon the storage itself tells a watcher about a lease
 * write, without weft in between. etcd: `etcdctl watch --prefix` (etcd's own Go client), timed
 * as its lines arrive. Deno KV: {@link ./kv_poll_child.ts}, a bare poller of weft's revision
 * counter at the agents' interval. Both can run inside a network namespace.
 *
 * @example
 * ```ts
 * const w = await startRawWatch({ kind: "etcd", endpoint, prefix: "/weft-x", netns: "wharn-x-h3" });
 * // ... write leases ...
 * w.puts.get("198.19.128.0-24"); // epoch ms when the watcher saw it
 * await w.stop();
 * ```
 */
import { denoInNs } from "../../test/kit/netns.ts";
import { nowMs, sleep } from "./sys.ts";

export type RawWatchTarget =
  | { kind: "etcd"; endpoint: string; prefix: string; netns?: string }
  | { kind: "kv"; path: string; prefix: string; pollMs?: number; netns?: string };

export interface RawWatch {
  /** First time each lease key (relative to `<prefix>/subnets/`) was seen written. */
  puts: Map<string, number>;
  /** First time each lease key was seen deleted. */
  deletes: Map<string, number>;
  /** Kills the watcher process and waits for it. */
  stop(): Promise<void>;
}

const REPO = new URL("../../", import.meta.url).pathname;

/** Watchers still running, stopped at process exit whatever path the benchmark took. */
const live = new Set<Deno.ChildProcess>();
globalThis.addEventListener("unload", () => {
  for (const c of live) {
    try {
      c.kill("SIGTERM"); // `timeout` passes it on to etcdctl
    } catch { /* gone */ }
  }
});
const KV_CHILD = new URL("./kv_poll_child.ts", import.meta.url).pathname;

function inNs(netns: string | undefined, cmd: string[]): string[] {
  return netns ? ["ip", "netns", "exec", netns, ...cmd] : cmd;
}

/** `deno run -A <args>`, inside `netns` when given (the kit's one spelling of it). */
function denoIn(netns: string | undefined, args: string[]): string[] {
  return netns ? denoInNs(netns, args) : [Deno.execPath(), "run", "-A", ...args];
}

async function* lines(s: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const dec = new TextDecoder();
  let buf = "";
  for await (const chunk of s) {
    buf += dec.decode(chunk, { stream: true });
    let i;
    while ((i = buf.indexOf("\n")) >= 0) {
      yield buf.slice(0, i);
      buf = buf.slice(i + 1);
    }
  }
}

/** Starts a baseline watcher and returns once it is known to be watching (bounded, 15 s). */
export async function startRawWatch(t: RawWatchTarget, maxSeconds = 600): Promise<RawWatch> {
  const puts = new Map<string, number>();
  const deletes = new Map<string, number>();
  const subnets = `${t.prefix.replace(/\/+$/, "")}/subnets/`;
  let ready = false;
  let probe = "";
  const cmd = t.kind === "etcd"
    ? inNs(t.netns, [
      "timeout",
      String(maxSeconds),
      "etcdctl",
      `--endpoints=${t.endpoint}`,
      "watch",
      "--prefix",
      `${t.prefix.replace(/\/+$/, "")}/`,
    ])
    : denoIn(t.netns, [
      "--unstable-kv",
      KV_CHILD,
      "--path",
      t.path,
      "--prefix",
      t.prefix,
      "--poll-ms",
      String(t.pollMs ?? 50),
      "--max-seconds",
      String(maxSeconds),
    ]);
  const child = new Deno.Command(cmd[0], {
    args: cmd.slice(1),
    stdin: "null",
    stdout: "piped",
    stderr: "null",
    cwd: REPO,
    env: { ETCDCTL_API: "3" },
  }).spawn();
  live.add(child);
  child.status.then(() => live.delete(child));
  const reader = (async () => {
    let op = "";
    for await (const line of lines(child.stdout)) {
      if (t.kind === "kv") {
        if (line.startsWith("ready ")) {
          ready = true;
          continue;
        }
        const [at, type, key] = line.split(" ");
        const m = type === "put" ? puts : deletes;
        if (key && !m.has(key)) m.set(key, Number(at));
        continue;
      }
      // etcdctl prints "PUT|DELETE", then the key, then the value (empty for DELETE).
      if (line === "PUT" || line === "DELETE") {
        op = line;
        continue;
      }
      if (!op) continue;
      const at = nowMs();
      if (probe && line === probe) ready = true;
      else if (line.startsWith(subnets)) {
        const key = line.slice(subnets.length);
        const m = op === "PUT" ? puts : deletes;
        if (!m.has(key)) m.set(key, at);
      }
      op = "";
    }
  })();
  // SIGTERM, not SIGKILL: `timeout` passes it on to etcdctl, which SIGKILL would orphan.
  const stop = async () => {
    const kill = (sig: Deno.Signal) => {
      try {
        child.kill(sig);
      } catch { /* already gone */ }
    };
    kill("SIGTERM");
    const t = setTimeout(() => kill("SIGKILL"), 2000);
    await child.status;
    clearTimeout(t);
    await reader.catch(() => {});
  };
  // etcdctl says nothing when its watch is established: write a probe key outside subnets/
  // until it shows up. The KV child prints "ready" after its first read.
  const deadline = Date.now() + 15_000;
  while (!ready && Date.now() < deadline) {
    if (t.kind === "etcd") {
      probe = `${t.prefix.replace(/\/+$/, "")}/bench-probe`;
      await new Deno.Command(inNs(t.netns, ["etcdctl"])[0], {
        args: [
          ...inNs(t.netns, ["etcdctl"]).slice(1),
          `--endpoints=${t.endpoint}`,
          "put",
          probe,
          "x",
        ],
        env: { ETCDCTL_API: "3" },
        stdout: "null",
        stderr: "null",
      }).output();
    }
    await sleep(200);
  }
  if (!ready) {
    await stop();
    throw new Error(
      `baseline ${t.kind} watcher did not become ready within 15 s (${cmd.join(" ")})`,
    );
  }
  return { puts, deletes, stop };
}
