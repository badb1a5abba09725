/**
 * Runs a real single-member etcd (Debian etcd-server, v3.4) for tests: a fresh data dir in a unique
 * temp dir, free ports, optional TLS (certificates made with openssl) and username/password auth,
 * optionally inside a network namespace. Every etcd this module starts is killed and its temp dir
 * removed at process exit even if a test forgets `cleanup()`.
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
/** Every live etcd of this process, killed synchronously at exit as a safety net. */
const live = new Set<{ child?: Deno.ChildProcess; dir: string }>();
globalThis.addEventListener("unload", () => {
  for (const p of live) {
    try {
      p.child?.kill("SIGKILL");
    } catch { /* already gone */ }
    try {
      Deno.removeSync(p.dir, { recursive: true });
    } catch { /* already gone */ }
  }
});

/**
 * Removes temp dirs left by test processes that died without running their exit handler (an
 * uncaught error in a test module skips it). Only dirs whose creating process is gone.
 */
let swept = false;
async function sweepStale(): Promise<void> {
  if (swept) return;
  swept = true;
  const tmp = Deno.env.get("TMPDIR") ?? "/tmp";
  try {
    for await (const d of Deno.readDir(tmp)) {
      const m = /^weft-etcd-(\d+)-/.exec(d.name);
      if (!d.isDirectory || !m || Number(m[1]) === Deno.pid) continue;
      const alive = await Deno.stat(`/proc/${m[1]}`).then(() => true, () => false);
      if (!alive) await Deno.remove(`${tmp}/${d.name}`, { recursive: true }).catch(() => {});
    }
  } catch { /* best effort */ }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A port that was free on `host` a moment ago (the kernel picks it). */
function freePort(host: string): number {
  const l = Deno.listen({ hostname: host, port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

async function run(cmd: string, args: string[], what: string): Promise<string> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) {
    const err = new TextDecoder().decode(out.stderr).trim();
    throw new Error(`${what} failed (exit ${out.code}): ${cmd} ${args.join(" ")}: ${err}`);
  }
  return new TextDecoder().decode(out.stdout);
}

/** A throwaway CA, a server cert for `host` and a client cert, all EC P-256 (fast to make). */
async function makeCerts(
  dir: string,
  host: string,
): Promise<EtcdTlsFiles & { srvCert: string; srvKey: string }> {
  const p = (f: string) => `${dir}/${f}`;
  const ossl = (...a: string[]) => run("openssl", a, "making test certificates");
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
  await sweepStale();
  const runId = `${Deno.pid}-${++seq}-${Math.random().toString(36).slice(2, 7)}`;
  const name = `weft-etcd-${runId}`;
  const dir = await Deno.makeTempDir({ prefix: `${name}-` });
  const entry: { child?: Deno.ChildProcess; dir: string } = { dir };
  live.add(entry);
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
        entry,
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
    live.delete(entry);
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw e;
  }
}

class EtcdProcess implements EtcdProc {
  readonly endpoint: string;
  readonly dataDir: string;
  readonly tls?: EtcdTlsFiles;
  #child?: Deno.ChildProcess;
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
    readonly entry: { child?: Deno.ChildProcess; dir: string },
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
    return this.#child !== undefined;
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
    if (this.#child) throw new Error(`etcd ${this.name} is already running`);
    const [cmd, args] = this.opts.netns
      ? ["ip", ["netns", "exec", this.opts.netns, "etcd", ...this.#args()]]
      : ["etcd", this.#args()];
    const log = await Deno.open(this.#logFile, { create: true, append: true });
    const child = new Deno.Command(cmd, { args, stdin: "null", stdout: "piped", stderr: "piped" })
      .spawn();
    this.#child = child;
    this.entry.child = child;
    // Both streams go to one log file; the pipes must be drained or etcd blocks on a full pipe.
    const enc = new TextEncoder();
    const w = log.writable.getWriter();
    const pump = async (s: ReadableStream<Uint8Array>) => {
      for await (const chunk of s) await w.write(chunk).catch(() => {});
    };
    Promise.all([pump(child.stdout), pump(child.stderr)]).then(
      () => w.write(enc.encode(`--- exited\n`)).catch(() => {}),
    ).finally(() => w.close().catch(() => {}));
    await this.#waitHealthy();
  }

  async #waitHealthy(): Promise<void> {
    const timeout = this.opts.readyTimeoutMs ?? 10_000;
    const deadline = Date.now() + timeout;
    let last = "";
    while (Date.now() < deadline) {
      const st = await Promise.race([this.#child!.status, sleep(0).then(() => null)]);
      if (st) {
        this.#child = undefined;
        throw new Error(
          `etcd ${this.name} exited (code ${st.code}) while starting; log tail:\n${await this
            .logTail()}`,
        );
      }
      try {
        await this.etcdctl("endpoint", "health", "--command-timeout", "1s");
        return;
      } catch (e) {
        last = (e as Error).message;
      }
      await sleep(100);
    }
    throw new Error(
      `etcd ${this.name} not healthy at ${this.endpoint} after ${timeout} ms (${last}); log tail:\n${await this
        .logTail()}`,
    );
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
    const out = await new Deno.Command(this.opts.netns ? "ip" : full[0], {
      args: this.opts.netns ? ["netns", "exec", this.opts.netns, ...full] : full.slice(1),
      env: { ETCDCTL_API: "3" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) {
      const err = new TextDecoder().decode(out.stderr).trim();
      throw new Error(`etcdctl ${args.join(" ")} against ${this.endpoint} failed: ${err}`);
    }
    return new TextDecoder().decode(out.stdout);
  }

  async #end(signal: Deno.Signal, graceMs: number): Promise<void> {
    const child = this.#child;
    if (!child) return;
    this.#child = undefined;
    try {
      child.kill(signal);
    } catch { /* already exited */ }
    const t = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch { /* already exited */ }
    }, graceMs);
    await child.status;
    clearTimeout(t);
  }

  stop(): Promise<void> {
    return this.#end("SIGTERM", 5000);
  }

  kill(): Promise<void> {
    return this.#end("SIGKILL", 0);
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  async cleanup(): Promise<void> {
    await this.kill();
    live.delete(this.entry);
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
  const out = await new Deno.Command("etcdctl", {
    args: [`--endpoints=${target}`, "compact", String(revision)],
    env: { ETCDCTL_API: "3" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(
      `etcdctl compact ${revision} against ${target} failed: ${
        new TextDecoder().decode(out.stderr)
      }`,
    );
  }
}
