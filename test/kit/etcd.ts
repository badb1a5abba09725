/**
 * Runs a real single-member etcd (Debian etcd-server, v3.4) for tests: a fresh data dir in a unique
 * temp dir, free ports, optional TLS (certificates made with openssl) and username/password auth,
 * optionally inside a network namespace (the cluster's registry host uses this too: the kit has one
 * etcd launcher). Every etcd this module starts is killed and its temp dir removed at process exit
 * (the kit's exit hook) even if a test forgets `cleanup()`; dirs of crashed processes are swept.
 *
 * @example
 * ```ts
 * const etcd = await startEtcd();
 * try {
 *   // ... use etcd.endpoint ("http://127.0.0.1:<port>") ...
 *   await etcd.kill(); // crash it; the data dir stays
 *   await etcd.restart(); // same data dir and port, waits until healthy
 *   await compact(etcd, 42);
 * } finally {
 *   await etcd.cleanup(); // stop and remove the temp dir
 * }
 * ```
 */
import { atExit } from "./exit.ts";
import { newRunId } from "./names.ts";
import { sweepOnce } from "./netns.ts";
import { run, runOk, StopWaiting, waitFor } from "./proc.ts";
import { exitedWithin, type LoggedProcess, spawnLogged, stopProcess } from "./spawn.ts";

export interface EtcdTlsOptions {
  /** Require client certificates (etcd --client-cert-auth). Default false. */
  clientCertAuth?: boolean;
}

export interface EtcdStartOptions {
  /** Run etcd in this network namespace (`ip netns exec <ns>`). */
  netns?: string;
  /** Address etcd listens on and advertises. Default 127.0.0.1. */
  host?: string;
  /** Client port; default: a free port (2379 inside a netns, whose port space is the test's own). */
  clientPort?: number;
  /** Peer port; default: a free port (2380 inside a netns). */
  peerPort?: number;
  /** Serve clients over TLS with a throwaway CA made for this etcd. */
  tls?: boolean | EtcdTlsOptions;
  /** Enable etcd auth: creates `root` and, if different, this user with readwrite on "/"-keys. */
  auth?: { username: string; password: string };
  /** Directory for data, log and certificates; default a fresh temp dir. Removed by cleanup(). */
  dir?: string;
  /** Member name; default `weft-etcd-<pid>-<n>-<run id>`. */
  name?: string;
  /** Bound on waiting for health, ms. Default 10000. */
  readyTimeoutMs?: number;
}

/** Files a client needs to talk TLS to this etcd. */
export interface EtcdTlsFiles {
  caFile: string;
  certFile: string;
  keyFile: string;
}

export interface EtcdProc {
  /** "http://host:port" or "https://host:port". */
  readonly endpoint: string;
  readonly name: string;
  readonly dataDir: string;
  /** Client certificate, key and CA when started with `tls`. */
  readonly tls?: EtcdTlsFiles;
  /** True while the process runs. */
  readonly running: boolean;
  /**
   * Graceful stop (SIGTERM, SIGKILL after 5 s). Keeps the data dir so `restart()` works. Beware:
   * etcd then sends HTTP/2 GOAWAY, which now and then crashes a Deno 2.9.6 process holding a
   * grpc-js connection to it (a node:http2 bug); tests that only need etcd gone should `kill()`.
   */
  stop(): Promise<void>;
  /** SIGKILL, as a crash. Keeps the data dir. */
  kill(): Promise<void>;
  /**
   * Stops it (gracefully) if running, starts it again on the same data dir and ports, waits until
   * healthy. `kill()` first for a crash-restart.
   */
  restart(): Promise<void>;
  /** Runs etcdctl (v3 API) against this etcd, with its TLS, auth and netns; returns stdout. */
  etcdctl(...args: string[]): Promise<string>;
  /** Stops etcd and removes its temp dir. Safe to call twice. */
  cleanup(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

let seq = 0;
/** A port that was free on `host` a moment ago (the kernel picks it). */
function freePort(host: string): number {
  const l = Deno.listen({ hostname: host, port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** A throwaway CA, a server cert for `host` and a client cert, all EC P-256 (fast to make). */
async function makeCerts(
  dir: string,
  host: string,
): Promise<EtcdTlsFiles & { srvCert: string; srvKey: string }> {
  const p = (f: string) => `${dir}/${f}`;
  const ossl = (...a: string[]) => runOk(["openssl", ...a]);
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  await ossl(
    "req",
    "-x509",
    ...ec,
    "-keyout",
    p("ca.key"),
    "-out",
    p("ca.crt"),
    "-days",
    "2",
    "-subj",
    "/CN=weft-test-ca",
  );
  for (
    const [n, cn, ext] of [
      [
        "server",
        "weft-test-etcd",
        `subjectAltName=IP:${host},IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth`,
      ],
      ["client", "weft-test-client", "extendedKeyUsage=clientAuth"],
    ]
  ) {
    await Deno.writeTextFile(p(`${n}.ext`), ext + "\n");
    await ossl("req", ...ec, "-keyout", p(`${n}.key`), "-out", p(`${n}.csr`), "-subj", `/CN=${cn}`);
    await ossl(
      "x509",
      "-req",
      "-in",
      p(`${n}.csr`),
      "-CA",
      p("ca.crt"),
      "-CAkey",
      p("ca.key"),
      "-CAcreateserial",
      "-out",
      p(`${n}.crt`),
      "-days",
      "2",
      "-extfile",
      p(`${n}.ext`),
    );
  }
  return {
    caFile: p("ca.crt"),
    certFile: p("client.crt"),
    keyFile: p("client.key"),
    srvCert: p("server.crt"),
    srvKey: p("server.key"),
  };
}

/** Starts a fresh etcd and waits until it is healthy; throws with the tail of its log if not. */
export async function startEtcd(opts: EtcdStartOptions = {}): Promise<EtcdProc> {
  const host = opts.host ?? "127.0.0.1";
  await sweepOnce();
  // The pid in the name lets the sweeper find temp dirs of dead processes.
  const name = opts.name ?? `weft-etcd-${Deno.pid}-${++seq}-${newRunId()}`;
  let dir: string;
  if (opts.dir) {
    dir = opts.dir;
    await Deno.mkdir(dir, { recursive: true });
  } else {
    dir = await Deno.makeTempDir({ prefix: `${name}-` });
  }
  const undoDir = atExit(() => {
    try {
      Deno.removeSync(dir, { recursive: true });
    } catch { /* already gone */ }
  });
  try {
    const tlsOpt = opts.tls === true ? {} : opts.tls || undefined;
    const certs = tlsOpt ? await makeCerts(dir, host) : undefined;
    const scheme = certs ? "https" : "http";
    // Picking a free port races with other processes; a clash shows up as a failed start, retried.
    for (let attempt = 1;; attempt++) {
      const clientPort = opts.clientPort ?? (opts.netns ? 2379 : freePort(host));
      const peerPort = opts.peerPort ?? (opts.netns ? 2380 : freePort(host));
      const proc = new EtcdProcess(
        name,
        dir,
        host,
        clientPort,
        peerPort,
        scheme,
        opts,
        undoDir,
        certs,
        tlsOpt?.clientCertAuth ?? false,
      );
      try {
        await proc.start();
        if (opts.auth) await proc.enableAuth(opts.auth);
        return proc;
      } catch (e) {
        await proc.kill();
        const clash = /address already in use/.test(await proc.logTail());
        if (!clash || attempt >= 3 || opts.clientPort || opts.netns) throw e;
      }
    }
  } catch (e) {
    undoDir();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw e;
  }
}

class EtcdProcess implements EtcdProc {
  readonly endpoint: string;
  readonly dataDir: string;
  readonly tls?: EtcdTlsFiles;
  #proc?: LoggedProcess;
  #logFile: string;
  #auth?: { username: string; password: string };

  constructor(
    readonly name: string,
    readonly dir: string,
    readonly host: string,
    readonly clientPort: number,
    readonly peerPort: number,
    readonly scheme: string,
    readonly opts: EtcdStartOptions,
    readonly undoDir: () => void,
    readonly certs: (EtcdTlsFiles & { srvCert: string; srvKey: string }) | undefined,
    readonly clientCertAuth: boolean,
  ) {
    this.endpoint = `${scheme}://${host}:${clientPort}`;
    this.dataDir = `${dir}/data`;
    this.#logFile = `${dir}/etcd.log`;
    if (certs) {
      this.tls = { caFile: certs.caFile, certFile: certs.certFile, keyFile: certs.keyFile };
    }
  }

  get running(): boolean {
    return this.#proc !== undefined;
  }

  #args(): string[] {
    const peer = `http://${this.host}:${this.peerPort}`;
    const a = [
      "--name",
      this.name,
      "--data-dir",
      this.dataDir,
      "--listen-client-urls",
      this.endpoint,
      "--advertise-client-urls",
      this.endpoint,
      "--listen-peer-urls",
      peer,
      "--initial-advertise-peer-urls",
      peer,
      "--initial-cluster",
      `${this.name}=${peer}`,
      "--initial-cluster-token",
      this.name,
      "--logger",
      "zap",
      "--log-outputs",
      "stderr",
      "--log-level",
      "warn",
      // A shorter election makes the single member leader sooner after each (re)start.
      "--heartbeat-interval",
      "50",
      "--election-timeout",
      "300",
    ];
    if (this.certs) {
      a.push("--cert-file", this.certs.srvCert, "--key-file", this.certs.srvKey);
      a.push("--trusted-ca-file", this.certs.caFile);
      if (this.clientCertAuth) a.push("--client-cert-auth");
    }
    return a;
  }

  async start(): Promise<void> {
    if (this.#proc) throw new Error(`etcd ${this.name} is already running`);
    const cmd = this.opts.netns
      ? ["ip", "netns", "exec", this.opts.netns, "etcd", ...this.#args()]
      : ["etcd", ...this.#args()];
    const proc = spawnLogged(cmd, this.#logFile);
    this.#proc = proc;
    const timeoutMs = this.opts.readyTimeoutMs ?? 10_000;
    try {
      await waitFor(`etcd ${this.name} to be healthy at ${this.endpoint}`, async () => {
        if (proc.status) {
          throw new StopWaiting(
            `etcd ${this.name} exited (code ${proc.status.code}) while starting`,
          );
        }
        await this.etcdctl("endpoint", "health", "--command-timeout", "1s");
        return true;
      }, { timeoutMs, intervalMs: 100 });
    } catch (e) {
      if (proc.status) this.#proc = undefined;
      await exitedWithin(proc, 200); // let the last lines reach the log
      throw new Error(`${(e as Error).message}; log tail:\n${await this.logTail()}`);
    }
  }

  async logTail(lines = 15): Promise<string> {
    const t = await Deno.readTextFile(this.#logFile).catch(() => "");
    return t.trimEnd().split("\n").slice(-lines).join("\n");
  }

  async enableAuth(auth: { username: string; password: string }): Promise<void> {
    const ctl = (...a: string[]) => this.etcdctl(...a);
    await ctl("user", "add", `root:${auth.password}`);
    await ctl("user", "grant-role", "root", "root");
    if (auth.username !== "root") {
      await ctl("user", "add", `${auth.username}:${auth.password}`);
      await ctl("role", "add", "weft");
      await ctl("role", "grant-permission", "weft", "--prefix=true", "readwrite", "/");
      await ctl("user", "grant-role", auth.username, "weft");
    }
    await ctl("auth", "enable");
    this.#auth = { username: "root", password: auth.password };
  }

  async etcdctl(...args: string[]): Promise<string> {
    const flags = [`--endpoints=${this.endpoint}`];
    if (this.certs) {
      flags.push(`--cacert=${this.certs.caFile}`);
      flags.push(`--cert=${this.certs.certFile}`, `--key=${this.certs.keyFile}`);
    }
    if (this.#auth) flags.push(`--user=${this.#auth.username}:${this.#auth.password}`);
    const full = ["etcdctl", ...flags, ...args];
    const cmd = this.opts.netns ? ["ip", "netns", "exec", this.opts.netns, ...full] : full;
    const r = await run(cmd, { env: { ETCDCTL_API: "3" }, timeoutMs: 15_000 });
    if (r.code !== 0 || r.timedOut) {
      const err = r.timedOut ? "timed out after 15 s" : r.stderr.trim();
      throw new Error(`etcdctl ${args.join(" ")} against ${this.endpoint} failed: ${err}`);
    }
    return r.stdout;
  }

  async #end(signal: Deno.Signal, graceMs: number): Promise<void> {
    const proc = this.#proc;
    if (!proc) return;
    this.#proc = undefined;
    await stopProcess(proc, signal, graceMs);
  }

  stop(): Promise<void> {
    return this.#end("SIGTERM", 5000);
  }

  kill(): Promise<void> {
    return this.#end("SIGKILL", 5000);
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  async cleanup(): Promise<void> {
    await this.kill();
    this.undoDir();
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.cleanup();
  }
}

/** Compacts the etcd history up to `revision` (`etcdctl compact`); `target` is an EtcdProc or an
 * http endpoint of a plain etcd. */
export async function compact(target: EtcdProc | string, revision: number): Promise<void> {
  if (typeof target !== "string") {
    await target.etcdctl("compact", String(revision));
    return;
  }
  await runOk(["etcdctl", `--endpoints=${target}`, "compact", String(revision)], {
    env: { ETCDCTL_API: "3" },
  });
}
