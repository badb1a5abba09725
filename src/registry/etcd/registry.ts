/**
 * The etcd v3 registry, in flannel's layout: config at `<prefix>/config`, leases at
 * `<prefix>/subnets/<key>` with an etcd lease carrying the TTL (none for reservations). Built on
 * npm:etcd3's raw gRPC clients (KV, Lease, Watch) so that writes are never retried behind our back
 * and the watch resumes from exactly the revision we last delivered.
 *
 * @example
 * ```ts
 * const reg = await openEtcdRegistry({ endpoints: ["http://198.18.0.1:2379"] });
 * const mine = await reg.createLease("198.19.5.0-24", value, 86400); // null if taken
 * const { leases, revision } = await reg.listLeases();
 * for await (const msg of reg.watchLeases(revision, signal)) apply(msg);
 * await reg.close();
 * ```
 */
import { Buffer } from "node:buffer";
import { isIP } from "node:net";
import tls from "node:tls";
import {
  ClientClosedError,
  Etcd3,
  EtcdAuthenticationFailedError,
  EtcdPermissionDeniedError,
  GRPCUnauthenticatedError,
  type IDuplexStream,
  type IKeyValue,
  type IOptions,
  type IWatchRequest,
  type IWatchResponse,
} from "etcd3";
import { getLogger } from "@logtape/logtape";
import {
  type LeaseChange,
  type Registry,
  RegistryError,
  type RegistryLease,
  type WatchMessage,
} from "./registry.ts";
import { metrics } from "../base/metrics.ts";

const log = getLogger(["weft", "registry"]);

const watchRestarts = metrics.counter(
  "weft_etcd_watch_restarts_total",
  "etcd lease watch streams re-opened after an error.",
);
const watchResyncs = metrics.counter(
  "weft_etcd_watch_resyncs_total",
  "Full lease re-lists after etcd compacted the history the watch needed.",
);

export interface EtcdRegistryOptions {
  /** Client URLs, "http(s)://host[:port]" (port defaults to 2379). */
  endpoints: string[];
  /** Key prefix; default "/coreos.com/network". */
  prefix?: string;
  /** Client certificate (PEM) for TLS client auth; needs keyFile. */
  certFile?: string;
  keyFile?: string;
  /** CA bundle (PEM) to verify etcd's certificate. */
  caFile?: string;
  username?: string;
  password?: string;
  /** Deadline of one unary call in ms; default 10000. Streams have none. */
  callTimeoutMs?: number;
}

export const DEFAULT_ETCD_PREFIX = "/coreos.com/network";

const MIN_BACKOFF_MS = 100;
const MAX_BACKOFF_MS = 5000;
/** How long a looked-up lease expiry is trusted (a foreign writer may keep a lease alive). */
const EXPIRY_CACHE_MS = 30_000;
/** Parallel LeaseTimeToLive calls per lookup batch. */
const LOOKUP_PARALLEL = 16;

type Policy = NonNullable<NonNullable<IOptions["faultHandling"]>["global"]>;

/**
 * Runs each call exactly once. etcd3's defaults retry failed calls (a txn whose reply was lost
 * would be re-run and then report "already exists") and trip a 5 s circuit breaker after an etcd
 * restart; the callers of a Registry retry on their own terms instead.
 */
const once = {
  execute: <T>(fn: (ctx: { signal: AbortSignal }) => PromiseLike<T> | T, signal?: AbortSignal) =>
    Promise.resolve().then(() => fn({ signal: signal ?? new AbortController().signal })),
  onSuccess: () => ({ dispose() {} }),
  onFailure: () => ({ dispose() {} }),
} as unknown as Policy;

/**
 * grpc-js passes the endpoint host as the TLS SNI server name even when it is an IP address. Node
 * only warns about that (RFC 6066 forbids IP literals in SNI), but Deno's node:tls throws, so TLS
 * to `https://<ip>:2379` would never connect. Dropping an IP server name is what Node will do too;
 * the certificate is still verified against the IP (Deno checks the IP SANs). Patched once, for
 * the process, only when a TLS registry is made.
 */
function allowIpTlsEndpoints(): void {
  const mod = tls as unknown as Record<string | symbol, unknown>;
  const mark = Symbol.for("weft.tls.ipServername");
  if (mod[mark]) return;
  const connect = tls.connect as (...args: unknown[]) => unknown;
  mod.connect = function (this: unknown, ...args: unknown[]) {
    const o = args[0] as { servername?: unknown } | undefined;
    if (o && typeof o === "object" && typeof o.servername === "string" && isIP(o.servername)) {
      args[0] = { ...o, servername: undefined };
    }
    return connect.apply(this, args);
  };
  mod[mark] = true;
}

/** `http(s)://host:port`, validated; the port defaults to 2379. */
function parseEndpoint(e: string): string {
  const m = /^(https?):\/\/(\[[0-9a-fA-F:.]+\]|[^/:\[\]]+)(?::(\d{1,5}))?\/?$/.exec(e.trim());
  if (!m || (m[3] && Number(m[3]) > 65535)) {
    throw new RegistryError(
      `etcd endpoint "${e}" is not a URL of the form http(s)://host:port; fix --etcd-endpoints`,
    );
  }
  return `${m[1]}://${m[2]}:${m[3] ?? "2379"}`;
}

async function readPem(path: string, flag: string): Promise<Buffer> {
  try {
    return Buffer.from(await Deno.readFile(path));
  } catch (e) {
    throw new RegistryError(
      `cannot read ${flag} "${path}": ${(e as Error).message}; check the path and its permissions`,
    );
  }
}

/** The exclusive end of the key range sharing `prefix` (etcd's "prefix" range). */
function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i] < 0xff) {
      end[i]++;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(t);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });

/**
 * `p`, or undefined as soon as `signal` aborts, so that an abort never waits for a call's deadline.
 * A rejection of the abandoned `p` is swallowed.
 */
function abortable<T>(p: Promise<T>, signal: AbortSignal): Promise<T | undefined> {
  if (signal.aborted) {
    p.catch(() => {});
    return Promise.resolve(undefined);
  }
  let onAbort!: () => void;
  const aborted = new Promise<undefined>((resolve) => {
    onAbort = () => resolve(undefined);
    signal.addEventListener("abort", onAbort, { once: true });
  });
  p.catch(() => {});
  return Promise.race([p, aborted]).finally(() => signal.removeEventListener("abort", onAbort));
}

/** The watch history we need is gone; the consumer must re-list. */
class Compacted extends Error {
  constructor(readonly compactRevision: number) {
    super(`etcd compacted history up to revision ${compactRevision}`);
  }
}

/** One gRPC watch stream with one watcher, read as a queue of responses. */
class WatchStream {
  #queue: IWatchResponse[] = [];
  #failed?: Error;
  #wake?: () => void;
  #closed = false;
  #onAbort = () => this.#notify();

  constructor(
    private readonly stream: IDuplexStream<IWatchRequest, IWatchResponse>,
    private readonly signal: AbortSignal,
  ) {
    stream.on("data", (r) => {
      this.#queue.push(r);
      this.#notify();
    });
    stream.on("error", (e) => this.#fail(e));
    stream.on("end", () => this.#fail(new Error("etcd closed the watch stream")));
    signal.addEventListener("abort", this.#onAbort, { once: true });
  }

  #notify(): void {
    const w = this.#wake;
    this.#wake = undefined;
    w?.();
  }

  #fail(e: Error): void {
    this.#failed ??= e;
    this.#notify();
  }

  write(req: IWatchRequest): void {
    this.stream.write(req);
  }

  /** The next response; null when the signal aborted; throws the stream's error. */
  async next(timeoutMs?: number): Promise<IWatchResponse | null> {
    while (true) {
      if (this.signal.aborted || this.#closed) return null;
      const r = this.#queue.shift();
      if (r) return r;
      if (this.#failed) throw this.#failed;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timedOut = await new Promise<boolean>((resolve) => {
        this.#wake = () => resolve(false);
        if (timeoutMs !== undefined) timer = setTimeout(() => resolve(true), timeoutMs);
      });
      clearTimeout(timer);
      if (timedOut) throw new Error(`etcd did not answer the watch request within ${timeoutMs} ms`);
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.signal.removeEventListener("abort", this.#onAbort);
    this.#notify();
    // Cancelling makes the stream emit a CANCELLED error, which must have a listener; ours is set.
    try {
      this.stream.cancel();
    } catch { /* already gone */ }
  }
}

export class EtcdRegistry implements Registry {
  readonly kind = "etcd";
  readonly prefix: string;
  readonly #client: Etcd3;
  readonly #configKey: Buffer;
  readonly #subnets: Buffer;
  readonly #subnetsEnd: Buffer;
  readonly #endpoints: string[];
  readonly #username?: string;
  readonly #tls: boolean;
  readonly #streams = new Set<WatchStream>();
  readonly #expiryCache = new Map<string, { expiresAt: number; until: number }>();
  #closed = false;

  /**
   * Prefer `openEtcdRegistry`, which reads the TLS files. `credentials` holds their contents.
   * Throws RegistryError for bad endpoints or option combinations. Does not contact etcd.
   */
  constructor(
    opts: EtcdRegistryOptions,
    credentials?: { rootCertificate?: Buffer; privateKey?: Buffer; certChain?: Buffer },
  ) {
    if (!opts.endpoints?.length) {
      throw new RegistryError("no etcd endpoints given; set --etcd-endpoints");
    }
    this.#endpoints = opts.endpoints.map(parseEndpoint);
    const https = this.#endpoints.filter((e) => e.startsWith("https:")).length;
    if (https > 0 && https < this.#endpoints.length) {
      throw new RegistryError(
        `etcd endpoints ${this.#endpoints.join(",")} mix http:// and https://; use one scheme`,
      );
    }
    if (credentials && https === 0) {
      throw new RegistryError(
        `TLS files are set but etcd endpoints ${this.#endpoints.join(",")} are http://; ` +
          `use https:// endpoints or drop --etcd-cafile/--etcd-certfile/--etcd-keyfile`,
      );
    }
    if (opts.password !== undefined && opts.password !== "" && !opts.username) {
      throw new RegistryError("--etcd-password is set without --etcd-username; set both");
    }
    this.#tls = https > 0;
    if (this.#tls) allowIpTlsEndpoints();
    this.#username = opts.username || undefined;
    this.prefix = (opts.prefix ?? DEFAULT_ETCD_PREFIX).replace(/\/+$/, "");
    this.#configKey = Buffer.from(`${this.prefix}/config`);
    this.#subnets = Buffer.from(`${this.prefix}/subnets/`);
    this.#subnetsEnd = prefixEnd(this.#subnets);
    const timeout = opts.callTimeoutMs ?? 10_000;
    this.#client = new Etcd3({
      hosts: this.#endpoints,
      credentials: credentials as IOptions["credentials"],
      auth: this.#username
        ? { username: this.#username, password: opts.password ?? "" }
        : undefined,
      // Without a deadline a call to an unreachable (not refusing) etcd hangs forever.
      defaultCallOptions: (ctx) => ctx.isStream ? {} : { deadline: Date.now() + timeout },
      faultHandling: { global: once, host: () => once },
      grpcOptions: {
        // Detects a dead peer on an idle watch stream (etcd permits pings every 5 s or slower).
        "grpc.keepalive_time_ms": 30_000,
        "grpc.keepalive_timeout_ms": 10_000,
      },
    });
  }

  /**
   * Turns credential and TLS failures into RegistryError saying what to fix; anything else
   * (etcd down, timeouts) is returned unchanged for the caller to retry.
   */
  #classify(e: unknown): unknown {
    if (!(e instanceof Error) || e instanceof RegistryError) return e;
    const at = this.#endpoints.join(",");
    const msg = e.message;
    // An expired token (etcd forgets them after --auth-token-ttl and on restart) is renewed by the
    // next unary call; the watch makes one before each reconnect.
    if (/invalid auth token/i.test(msg)) return e;
    if (e instanceof EtcdAuthenticationFailedError) {
      return new RegistryError(
        `etcd at ${at} rejected user "${this.#username}" or its password (${msg}); ` +
          `check --etcd-username/--etcd-password`,
      );
    }
    if (/authentication is not enabled/i.test(msg)) {
      return new RegistryError(
        `etcd at ${at} has authentication disabled but --etcd-username is set (${msg}); ` +
          `drop --etcd-username/--etcd-password or enable auth in etcd`,
      );
    }
    if (e instanceof EtcdPermissionDeniedError || /permission denied/i.test(msg)) {
      return new RegistryError(
        `etcd at ${at} denied access under ${this.prefix} for user ` +
          `"${this.#username ?? "(none)"}" (${msg}); grant it readwrite on prefix ${this.prefix}/` +
          (this.#username ? "" : " or set --etcd-username/--etcd-password"),
      );
    }
    if (
      e instanceof GRPCUnauthenticatedError || /user name is empty/i.test(msg)
    ) {
      return new RegistryError(
        `etcd at ${at} requires authentication (${msg}); set --etcd-username/--etcd-password`,
      );
    }
    // Only verification failures: a connection cut mid-handshake (etcd restarting) is transient.
    if (/certificate|self[- ]signed|unknown ?ca|altnames|CERT_|wrong version number/i.test(msg)) {
      return new RegistryError(
        `TLS with etcd at ${at} failed (${msg}); ` +
          (this.#tls
            ? "check --etcd-cafile, --etcd-certfile, --etcd-keyfile and the server's certificate"
            : "the server may expect TLS: use https:// endpoints with --etcd-cafile"),
      );
    }
    return e;
  }

  async #call<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      throw this.#classify(e);
    }
  }

  /** Key relative to subnets/, or null for keys deeper down or outside. */
  #relKey(key: Buffer): string | null {
    if (
      key.length <= this.#subnets.length ||
      !this.#subnets.equals(key.subarray(0, this.#subnets.length))
    ) {
      return null;
    }
    const rel = key.subarray(this.#subnets.length).toString();
    return rel.includes("/") ? null : rel;
  }

  #leaseKey(key: string): Buffer {
    if (key === "" || key.includes("/")) {
      throw new RegistryError(`lease key "${key}" is empty or contains "/"`);
    }
    return Buffer.from(`${this.prefix}/subnets/${key}`);
  }

  /** Epoch-ms expiry per etcd lease id; 0 for leases that are already gone. */
  async #expiries(ids: Iterable<string>): Promise<Map<string, number>> {
    const now = Date.now();
    const out = new Map<string, number>();
    const todo: string[] = [];
    for (const id of new Set(ids)) {
      const c = this.#expiryCache.get(id);
      if (c && now < c.until) out.set(id, c.expiresAt);
      else todo.push(id);
    }
    if (this.#expiryCache.size > 10_000) {
      for (const [id, c] of this.#expiryCache) if (now >= c.until) this.#expiryCache.delete(id);
    }
    let next = 0;
    const worker = async () => {
      while (next < todo.length) {
        const id = todo[next++];
        const t0 = Date.now();
        const r = await this.#client.leaseClient.leaseTimeToLive({ ID: id });
        const ttl = Number(r.TTL);
        // TTL -1: expired or revoked; etcd is about to delete (or has deleted) its keys.
        const expiresAt = ttl > 0 ? t0 + ttl * 1000 : 0;
        out.set(id, expiresAt);
        if (expiresAt > 0) {
          this.#expiryCache.set(id, {
            expiresAt,
            until: Math.min(expiresAt, t0 + EXPIRY_CACHE_MS),
          });
        }
      }
    };
    await this.#call(() =>
      Promise.all(Array.from({ length: Math.min(LOOKUP_PARALLEL, todo.length) }, worker))
    );
    return out;
  }

  /** Expiries of the ids the cache knows (no calls to etcd). */
  #cachedExpiries(ids: Iterable<string>): Map<string, number> {
    const now = Date.now();
    const out = new Map<string, number>();
    for (const id of ids) {
      const c = this.#expiryCache.get(id);
      if (c && now < c.until) out.set(id, c.expiresAt);
    }
    return out;
  }

  #toLease(kv: IKeyValue, rel: string, exp: Map<string, number>): RegistryLease {
    return {
      key: rel,
      value: kv.value.toString(),
      revision: Number(kv.mod_revision),
      expiresAt: kv.lease === "0" ? null : (exp.get(kv.lease) ?? 0),
    };
  }

  async getConfig(): Promise<string | null> {
    const r = await this.#call(() => this.#client.kv.range({ key: this.#configKey }));
    return r.kvs.length ? r.kvs[0].value.toString() : null;
  }

  async putConfig(text: string): Promise<void> {
    await this.#call(() => this.#client.kv.put({ key: this.#configKey, value: Buffer.from(text) }));
  }

  async listLeases(): Promise<{ leases: RegistryLease[]; revision: number }> {
    const r = await this.#call(() =>
      this.#client.kv.range({ key: this.#subnets, range_end: this.#subnetsEnd })
    );
    const kvs = r.kvs.flatMap((kv) => {
      const rel = this.#relKey(kv.key);
      return rel === null ? [] : [{ kv, rel }];
    });
    const exp = await this.#expiries(kvs.filter((x) => x.kv.lease !== "0").map((x) => x.kv.lease));
    const now = Date.now();
    const leases = kvs.map(({ kv, rel }) => this.#toLease(kv, rel, exp))
      .filter((l) => l.expiresAt === null || l.expiresAt > now);
    return { leases, revision: Number(r.header.revision) };
  }

  async getLease(key: string): Promise<RegistryLease | null> {
    const r = await this.#call(() => this.#client.kv.range({ key: this.#leaseKey(key) }));
    if (!r.kvs.length) return null;
    const kv = r.kvs[0];
    const exp = await this.#expiries(kv.lease === "0" ? [] : [kv.lease]);
    const l = this.#toLease(kv, key, exp);
    return l.expiresAt === null || l.expiresAt > Date.now() ? l : null;
  }

  /** Grants an etcd lease for `ttlSeconds` ("0" = none); returns its id and expiry. */
  async #grant(ttlSeconds: number | null): Promise<{ id: string; expiresAt: number | null }> {
    if (ttlSeconds === null) return { id: "0", expiresAt: null };
    if (!Number.isInteger(ttlSeconds) || ttlSeconds <= 0) {
      throw new RegistryError(
        `lease TTL ${ttlSeconds} s is not a positive whole number of seconds`,
      );
    }
    const t0 = Date.now();
    const g = await this.#call(() => this.#client.leaseClient.leaseGrant({ TTL: ttlSeconds }));
    // etcd may raise a TTL below its minimum; the granted one is what counts.
    const expiresAt = t0 + Number(g.TTL) * 1000;
    this.#expiryCache.set(g.ID, { expiresAt, until: Math.min(expiresAt, t0 + EXPIRY_CACHE_MS) });
    return { id: g.ID, expiresAt };
  }

  /** Frees a lease whose put did not happen; failure only leaves it to expire, so just log. */
  async #revoke(id: string): Promise<void> {
    if (id === "0") return;
    this.#expiryCache.delete(id);
    try {
      await this.#client.leaseClient.leaseRevoke({ ID: id });
    } catch (e) {
      log.debug`revoking unused etcd lease ${id} failed (it will expire): ${(e as Error).message}`;
    }
  }

  /** put `key` under a fresh lease if `compare` holds; null when it did not. */
  async #putIf(
    key: string,
    value: string,
    ttlSeconds: number | null,
    compare: { target: "Version" | "Mod"; version?: number; mod_revision?: number },
  ): Promise<RegistryLease | null> {
    const k = this.#leaseKey(key);
    const lease = await this.#grant(ttlSeconds);
    // On an error here the put may or may not have happened, so the lease is not revoked: revoking
    // would delete a key we might own. Unused, it just expires.
    const r = await this.#call(() =>
      this.#client.kv.txn({
        compare: [{ key: k, result: "Equal", ...compare }],
        success: [{ request_put: { key: k, value: Buffer.from(value), lease: lease.id } }],
      })
    );
    if (!r.succeeded) {
      await this.#revoke(lease.id);
      return null;
    }
    return { key, value, revision: Number(r.header.revision), expiresAt: lease.expiresAt };
  }

  createLease(
    key: string,
    value: string,
    ttlSeconds: number | null,
  ): Promise<RegistryLease | null> {
    return this.#putIf(key, value, ttlSeconds, { target: "Version", version: 0 });
  }

  /**
   * Re-puts under a new etcd lease, as flannel renews. The old etcd lease is not revoked: once the
   * put commits it holds nothing and just expires, while revoking it any earlier (or after a failed
   * compare) would delete the key.
   */
  updateLease(
    key: string,
    value: string,
    ttlSeconds: number | null,
    expectRevision: number,
  ): Promise<RegistryLease | null> {
    return this.#putIf(key, value, ttlSeconds, { target: "Mod", mod_revision: expectRevision });
  }

  async deleteLease(key: string, expectRevision?: number): Promise<boolean> {
    const k = this.#leaseKey(key);
    if (expectRevision === undefined) {
      const r = await this.#call(() => this.#client.kv.deleteRange({ key: k }));
      return Number(r.deleted) > 0;
    }
    const r = await this.#call(() =>
      this.#client.kv.txn({
        compare: [{ key: k, result: "Equal", target: "Mod", mod_revision: expectRevision }],
        success: [{ request_delete_range: { key: k } }],
      })
    );
    return r.succeeded && Number(r.responses[0]?.response_delete_range?.deleted ?? 0) > 0;
  }

  watchLeases(fromRevision: number, signal: AbortSignal): AsyncIterable<WatchMessage> {
    return this.#watch(fromRevision, signal);
  }

  async *#watch(fromRevision: number, signal: AbortSignal): AsyncGenerator<WatchMessage> {
    let last = fromRevision;
    let backoff = MIN_BACKOFF_MS;
    let resync = false;
    /** Compactions seen since the last watch etcd accepted; guards a re-list loop. */
    let compactions = 0;
    while (!signal.aborted && !this.#closed) {
      let stream: WatchStream | undefined;
      try {
        if (resync) {
          const snap = await abortable(this.listLeases(), signal);
          if (!snap) return;
          resync = false;
          last = snap.revision;
          watchResyncs.inc();
          yield { kind: "snapshot", leases: snap.leases, revision: snap.revision };
          continue;
        }
        stream = await this.#openWatch(last + 1, signal);
        if (!stream) return;
        backoff = MIN_BACKOFF_MS;
        while (true) {
          const res = await stream.next();
          if (!res) return;
          if (res.compact_revision !== "0") throw new Compacted(Number(res.compact_revision));
          if (res.canceled) {
            throw new Error(
              `etcd cancelled the lease watch: ${res.cancel_reason || "no reason given"}`,
            );
          }
          compactions = 0;
          if (res.events.length === 0) {
            // A progress notification: everything up to the header revision has been sent.
            if (!res.created) last = Math.max(last, Number(res.header.revision));
            continue;
          }
          if (signal.aborted) return;
          const msg = this.#changes(res);
          // The last event's revision, not the header's: for a watcher catching up the header is
          // the store's head, and the rest of history is still to come.
          last = msg.revision;
          if (msg.changes.length) yield msg;
        }
      } catch (e) {
        if (signal.aborted || this.#closed || e instanceof ClientClosedError) return;
        if (e instanceof Compacted) {
          log
            .info`etcd compacted the history after revision ${last} (compact revision ${e.compactRevision}); re-listing leases`;
          resync = true;
          // Compacted again right after a re-list: someone compacts at head; do not spin.
          if (++compactions > 1) {
            await sleep(backoff, signal);
            backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
          }
          continue;
        }
        const err = this.#classify(e);
        if (err instanceof RegistryError) throw err;
        watchRestarts.inc();
        log.warn`etcd lease watch from revision ${last + 1} failed: ${
          (e as Error).message
        }; retrying in ${backoff} ms`;
        await sleep(backoff, signal);
        backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
      } finally {
        if (stream) this.#dropStream(stream);
      }
    }
  }

  #dropStream(stream: WatchStream): void {
    stream.close();
    this.#streams.delete(stream);
  }

  /**
   * Opens a stream watching subnets/ from `start`; resolves once etcd acknowledged it, or to
   * undefined when `signal` aborted or the registry closed meanwhile.
   */
  async #openWatch(start: number, signal: AbortSignal): Promise<WatchStream | undefined> {
    // A plain read first: it refreshes an expired auth token (etcd's simple tokens last 5 min and
    // die with a restart, and the watch stream presents whatever token etcd3 cached), and it fails
    // fast when etcd is down.
    const ok = await abortable(
      this.#call(() => this.#client.kv.range({ key: this.#configKey, count_only: true })),
      signal,
    );
    if (!ok) return undefined;
    const raw = await abortable(this.#call(() => this.#client.watchClient.watch()), signal);
    if (!raw) return undefined;
    const stream = new WatchStream(raw, signal);
    this.#streams.add(stream);
    try {
      if (this.#closed) throw new ClientClosedError("Watch");
      stream.write({
        create_request: {
          key: this.#subnets,
          range_end: this.#subnetsEnd,
          start_revision: start,
          progress_notify: true,
        },
      });
      const created = await stream.next(10_000);
      if (!created) throw new ClientClosedError("Watch");
      if (created.compact_revision !== "0") throw new Compacted(Number(created.compact_revision));
      if (!created.created || created.canceled) {
        throw new Error(
          `etcd refused the lease watch from revision ${start}: ${
            created.cancel_reason || "no reason"
          }`,
        );
      }
      return stream;
    } catch (e) {
      this.#dropStream(stream);
      if (e instanceof ClientClosedError) return undefined;
      throw e;
    }
  }

  /** One watch response as one batch of changes (events of other keys skipped). */
  #changes(res: IWatchResponse): WatchMessage & { kind: "changes" } {
    const evs = res.events.flatMap((ev) => {
      const rel = this.#relKey(ev.kv.key);
      return rel === null ? [] : [{ ev, rel }];
    });
    // No LeaseTimeToLive round trip per new lease here: peers need the value, not the expiry,
    // and the lookup delayed every peer event (2-6 ms) and cost N² calls per renewal round.
    // Expiries already known (our own grants, earlier lists) are filled in; others read 0.
    const exp = this.#cachedExpiries(
      evs.filter(({ ev }) => ev.type === "Put" && ev.kv.lease !== "0").map(({ ev }) => ev.kv.lease),
    );
    const changes: LeaseChange[] = evs.map(({ ev, rel }) =>
      ev.type === "Put"
        ? { type: "put", lease: this.#toLease(ev.kv, rel, exp) }
        : { type: "delete", key: rel, revision: Number(ev.kv.mod_revision) }
    );
    const revision = Number(res.events[res.events.length - 1].kv.mod_revision);
    return { kind: "changes", changes, revision };
  }

  close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      for (const s of this.#streams) s.close();
      this.#streams.clear();
      this.#client.close();
    }
    return Promise.resolve();
  }
}

/**
 * Reads the TLS files and builds an EtcdRegistry. Throws RegistryError naming the flag when a file
 * cannot be read or the options do not fit together. Does not contact etcd: the first call does.
 */
export async function openEtcdRegistry(opts: EtcdRegistryOptions): Promise<EtcdRegistry> {
  if (!!opts.certFile !== !!opts.keyFile) {
    throw new RegistryError(
      `--etcd-certfile and --etcd-keyfile go together (got ${
        opts.certFile ? `certfile "${opts.certFile}"` : `keyfile "${opts.keyFile}"`
      } only); set both or neither`,
    );
  }
  let credentials: ConstructorParameters<typeof EtcdRegistry>[1];
  if (opts.caFile || opts.certFile) {
    credentials = {
      rootCertificate: opts.caFile ? await readPem(opts.caFile, "--etcd-cafile") : undefined,
      certChain: opts.certFile ? await readPem(opts.certFile, "--etcd-certfile") : undefined,
      privateKey: opts.keyFile ? await readPem(opts.keyFile, "--etcd-keyfile") : undefined,
    };
  }
  return new EtcdRegistry(opts, credentials);
}
