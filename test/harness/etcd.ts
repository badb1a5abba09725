/**
 * A real etcd on the cluster's registry host (198.18.0.2 inside the run's `-reg` namespace).
 * Uses the project's shared launcher `test/support/etcd.ts` (`startEtcd({ netns, host })`) when
 * that file exists, else a built-in one. `WEFT_HARNESS_ETCD=builtin|support` forces a choice.
 * If the shared launcher exists but fails, the built-in one is used and a warning is printed, so
 * a broken shared helper shows up loudly without stopping every multi-host test.
 *
 * @example
 * ```ts
 * const etcd = await startRegistryEtcd({ netns: "wharn-w3k9z1-reg", host: "198.18.0.2",
 *   dir: "/tmp/weft-harness/w3k9z1", name: "w3k9z1" });
 * etcd.endpoint;        // "http://198.18.0.2:2379"
 * await etcd.restart(); // same data dir and port
 * await etcd.stop();
 * ```
 */
import { nsExec } from "./netns.ts";
import { exitedWithin, type LoggedProcess, spawnLogged, stopProcess } from "./spawn.ts";
import { StopWaiting, waitFor } from "./proc.ts";

export interface EtcdHandle {
  /** Client URL, reachable from every namespace on the underlay. */
  endpoint: string;
  /** Which launcher started it. */
  source: "support" | "builtin";
  /** Graceful stop (SIGTERM, then SIGKILL after a grace period). */
  stop(): Promise<void>;
  /** SIGKILL. */
  kill(): Promise<void>;
  /** Start again with the same data dir and port (after stop/kill, or stops it first). */
  restart(): Promise<void>;
  /** Final teardown: kill it and remove whatever the launcher keeps outside the run dir. */
  cleanup(): Promise<void>;
}

export interface EtcdOptions {
  netns: string;
  host: string;
  /** The run dir; the built-in launcher keeps data and log under it. */
  dir: string;
  /** etcd member name; carries the run id so the process is recognisable. */
  name: string;
  launcher?: "auto" | "support" | "builtin";
}

const SUPPORT_URL = new URL("../support/etcd.ts", import.meta.url);
const CLIENT_PORT = 2379;
const PEER_PORT = 2380;
const READY_TIMEOUT_MS = 15_000;

export async function startRegistryEtcd(opts: EtcdOptions): Promise<EtcdHandle> {
  const forced = Deno.env.get("WEFT_HARNESS_ETCD");
  const launcher = opts.launcher ??
    (forced === "builtin" || forced === "support" ? forced : "auto");
  if (launcher === "builtin") return await startBuiltin(opts);
  const hasSupport = await Deno.stat(SUPPORT_URL).then(() => true, () => false);
  if (!hasSupport) {
    if (launcher === "support") throw new Error(`${SUPPORT_URL.pathname} does not exist`);
    return await startBuiltin(opts);
  }
  try {
    return await startSupport(opts);
  } catch (e) {
    if (launcher === "support") throw e;
    console.warn(
      `harness: test/support/etcd.ts startEtcd({netns, host}) failed (${(e as Error).message}); ` +
        `using the harness's built-in etcd launcher instead`,
    );
    return await startBuiltin(opts);
  }
}

interface SupportEtcd {
  endpoint: string;
  stop(): Promise<void>;
  kill(): Promise<void>;
  restart(): Promise<void>;
  cleanup?(): Promise<void>;
}

async function startSupport(opts: EtcdOptions): Promise<EtcdHandle> {
  // Non-literal specifier: the file is another helper's and may not exist when this is checked.
  const mod = await import(SUPPORT_URL.href) as {
    startEtcd?: (o: { netns: string; host: string }) => Promise<SupportEtcd>;
  };
  if (typeof mod.startEtcd !== "function") {
    throw new Error(`${SUPPORT_URL.pathname} does not export startEtcd()`);
  }
  const e = await mod.startEtcd({ netns: opts.netns, host: opts.host });
  for (const f of ["stop", "kill", "restart"] as const) {
    if (typeof e?.[f] !== "function" || typeof e?.endpoint !== "string") {
      throw new Error(`startEtcd() returned ${JSON.stringify(e)}, missing endpoint or ${f}()`);
    }
  }
  // Make sure it answers from inside the netns before handing it out.
  await waitHealthy(opts.netns, e.endpoint, () => false);
  return {
    endpoint: e.endpoint,
    source: "support",
    stop: () => e.stop(),
    kill: () => e.kill(),
    restart: () => e.restart(),
    cleanup: () => e.cleanup ? e.cleanup() : e.kill(),
  };
}

async function startBuiltin(opts: EtcdOptions): Promise<EtcdHandle> {
  const endpoint = `http://${opts.host}:${CLIENT_PORT}`;
  const peer = `http://${opts.host}:${PEER_PORT}`;
  const cmd = [
    "ip",
    "netns",
    "exec",
    opts.netns,
    "etcd",
    "--name",
    opts.name,
    "--data-dir",
    `${opts.dir}/etcd-data`,
    "--listen-client-urls",
    endpoint,
    "--advertise-client-urls",
    endpoint,
    "--listen-peer-urls",
    peer,
    "--initial-advertise-peer-urls",
    peer,
    "--initial-cluster",
    `${opts.name}=${peer}`,
    "--logger",
    "zap",
  ];
  const logFile = `${opts.dir}/etcd.log`;
  let proc: LoggedProcess | null = null;
  const start = async () => {
    const p = spawnLogged(cmd, logFile, {
      banner: `=== ${new Date().toISOString()} ${cmd.join(" ")}`,
    });
    proc = p;
    try {
      await waitHealthy(opts.netns, endpoint, () => p.status !== null);
    } catch (e) {
      await stopProcess(p, "SIGKILL", 1_000);
      const log = await Deno.readTextFile(logFile).catch(() => "");
      throw new Error(`${(e as Error).message}\n--- ${logFile} (tail) ---\n${log.slice(-3000)}`);
    }
  };
  await start();
  const stop = async (sig: Deno.Signal) => {
    if (proc) await stopProcess(proc, sig, 10_000);
  };
  return {
    endpoint,
    source: "builtin",
    stop: () => stop("SIGTERM"),
    kill: () => stop("SIGKILL"),
    // Data and log live in the run dir, which the cluster removes.
    cleanup: () => stop("SIGKILL"),
    restart: async () => {
      if (proc && !(await exitedWithin(proc, 0))) await stop("SIGTERM");
      await start();
    },
  };
}

/** Waits (bounded) until `etcdctl endpoint health`, run inside `netns`, succeeds. */
async function waitHealthy(netns: string, endpoint: string, died: () => boolean): Promise<void> {
  await waitFor(`etcd at ${endpoint} in netns ${netns} to become healthy`, async () => {
    if (died()) throw new StopWaiting(`etcd in netns ${netns} exited before becoming healthy`);
    await nsExec(netns, [
      "etcdctl",
      "--endpoints",
      endpoint,
      "--dial-timeout=1s",
      "--command-timeout=2s",
      "endpoint",
      "health",
    ], { timeoutMs: 4_000, env: { ETCDCTL_API: "3" } });
    return true;
  }, { timeoutMs: READY_TIMEOUT_MS, intervalMs: 200 });
}
