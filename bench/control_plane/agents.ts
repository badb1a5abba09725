/**
 * The control-plane benchmark's agents and registries: a {@link Target} says how agents, CLI
 * commands, in-process clients and the raw baseline watcher reach one registry (a Deno KV file
 * per tag; a key prefix per tag in the run's etcd); {@link agentArgs} is the `weft run` command
 * line of agent `i` (alloc backend on loopback, public IP 198.18.1.<i+1>); {@link waitFiles}
 * waits (bounded) for the agents' subnet.env files.
 *
 * @example
 * ```ts
 * const t = target("kv", s);
 * const a = startBenchAgent(agentArgs(t, dir, "conv50", 0));
 * const [mtime] = await waitFiles([`${dir}/conv50-0.env`], [a], 60_000);
 * ```
 */
import { type AgentProc, startAgent } from "../../test/kit/agent.ts";
import { V8_FLAGS } from "../../src/base/v8_flags.ts";
import type { Registry } from "../../src/registry/contract/registry.ts";
import { openEtcdRegistry } from "../../src/registry/etcd/mod.ts";
import { openKvRegistry } from "../../src/registry/kv/mod.ts";
import { sleep } from "../lib/sys.ts";
import type { RawWatchTarget } from "../lib/raw_watch.ts";
import type { Session } from "./session.ts";

export interface Target {
  name: "kv" | "etcd";
  /** Registry flags for agents and CLI commands. */
  args(dir: string, tag: string): string[];
  open(dir: string, tag: string): Promise<Registry>;
  raw(dir: string, tag: string): RawWatchTarget;
}

/** The registry `name` of this run (etcd: the session's etcd, started before). */
export function target(name: "kv" | "etcd", s: Session): Target {
  const prefix = (tag: string) => `/weft-bench-${s.runId}-${tag}`;
  if (name === "kv") {
    return {
      name,
      args: (dir, tag) => ["--registry", "kv", "--kv-path", `${dir}/${tag}.kv`],
      open: (dir, tag) => openKvRegistry({ path: `${dir}/${tag}.kv` }),
      raw: (dir, tag) => ({ kind: "kv", path: `${dir}/${tag}.kv`, prefix: "/coreos.com/network" }),
    };
  }
  return {
    name,
    args: (_dir, tag) => [
      "--registry",
      "etcd",
      "--etcd-endpoints",
      s.etcd!.endpoint,
      "--etcd-prefix",
      prefix(tag),
    ],
    open: (_dir, tag) => openEtcdRegistry({ endpoints: [s.etcd!.endpoint], prefix: prefix(tag) }),
    raw: (_dir, tag) => ({ kind: "etcd", endpoint: s.etcd!.endpoint, prefix: prefix(tag) }),
  };
}

/** The network config every agent of the benchmark reads (`${dir}/net.json`). */
export async function writeNetConfig(dir: string): Promise<void> {
  await Deno.writeTextFile(
    `${dir}/net.json`,
    `{"Network":"198.19.0.0/16","Backend":{"Type":"alloc"}}`,
  );
}

export function agentArgs(t: Target, dir: string, tag: string, i: number, extra: string[] = []) {
  return [
    ...t.args(dir, tag),
    "--net-config-path",
    `${dir}/net.json`,
    "--backend",
    "alloc",
    "--iface",
    "lo",
    "--public-ip",
    `198.18.1.${i + 1}`,
    "--subnet-file",
    `${dir}/${tag}-${i}.env`,
    "--iptables-forward-rules=false", // these agents share the test machine's namespace
    ...extra,
  ];
}

/**
 * `weft run <args>` as the product runs: with weft's V8 flags (the compiled executable has them
 * built in; `deno run` takes them from DENO_V8_FLAGS), or the comma-separated `v8Flags` a
 * benchmark compares them with.
 */
export function startBenchAgent(args: string[], v8Flags = V8_FLAGS.join(",")): AgentProc {
  return startAgent(args, { DENO_V8_FLAGS: v8Flags });
}

export async function stopAll(agents: AgentProc[]): Promise<void> {
  await Promise.all(agents.map((a) => a.stop("SIGTERM", 3000)));
}

/** mtime (epoch ms) of each file once all exist; throws naming the missing ones at the deadline. */
export async function waitFiles(
  paths: string[],
  agents: AgentProc[],
  ms: number,
): Promise<number[]> {
  const seen: (number | null)[] = paths.map(() => null);
  const exited = new Set<number>();
  agents.forEach((a, i) => a.exited.then(() => exited.add(i)));
  const end = Date.now() + ms;
  while (true) {
    await Promise.all(paths.map(async (p, i) => {
      if (seen[i] !== null) return;
      const st = await Deno.stat(p).catch(() => null);
      if (st?.mtime && st.size > 0) seen[i] = st.mtime.getTime();
    }));
    const missing = seen.flatMap((s, i) => s === null ? [i] : []);
    if (missing.length === 0) return seen as number[];
    const dead = missing.filter((i) => exited.has(i));
    if (dead.length) {
      throw new Error(
        `agent ${dead[0]} exited before writing ${paths[dead[0]]}:\n${
          agents[dead[0]].log().slice(-2000)
        }`,
      );
    }
    if (Date.now() >= end) {
      throw new Error(
        `${missing.length} of ${paths.length} agents had no subnet.env after ${ms} ms ` +
          `(first: ${paths[missing[0]]}); log tail:\n${agents[missing[0]].log().slice(-1500)}`,
      );
    }
    await sleep(100);
  }
}
