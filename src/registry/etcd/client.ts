/**
 * Opening etcd: endpoint URLs, TLS files, username/password, and an npm:etcd3 client that runs
 * each call exactly once. Nothing here contacts etcd; the first call does.
 *
 * @example
 * ```ts
 * const credentials = await readCredentials({ endpoints: ["https://198.18.0.1:2379"], caFile });
 * const { client, endpoints, tls } = connect({ endpoints: ["https://198.18.0.1:2379"] }, credentials);
 * ```
 */
import { Buffer } from "node:buffer";
import { isIP } from "node:net";
import tls from "node:tls";
import { Etcd3, type IOptions } from "etcd3";
import { RegistryError } from "../contract/registry.ts";
import { normalizeEndpoint } from "./endpoint.ts";

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
  /** Keys per range call of a full list (list.ts); default 500. Tests set small pages. */
  listPageSize?: number;
}

export const DEFAULT_ETCD_PREFIX = "/coreos.com/network";

/** The contents of the TLS files, as etcd3 takes them. */
export interface Credentials {
  rootCertificate?: Buffer;
  privateKey?: Buffer;
  certChain?: Buffer;
}

/** A client and what error messages need to say about it. */
export interface Connection {
  client: Etcd3;
  /** Normalised endpoint URLs. */
  endpoints: string[];
  /** Prefix without a trailing slash. */
  prefix: string;
  username?: string;
  tls: boolean;
}

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
  const url = normalizeEndpoint(e);
  if (url === null) {
    throw new RegistryError(
      `etcd endpoint "${e}" is not a URL of the form http(s)://host:port; fix --etcd-endpoints`,
    );
  }
  return url;
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

/** Reads the TLS files the options name (none: undefined); RegistryError names the flag. */
export async function readCredentials(opts: EtcdRegistryOptions): Promise<Credentials | undefined> {
  if (!!opts.certFile !== !!opts.keyFile) {
    throw new RegistryError(
      `--etcd-certfile and --etcd-keyfile go together (got ${
        opts.certFile ? `certfile "${opts.certFile}"` : `keyfile "${opts.keyFile}"`
      } only); set both or neither`,
    );
  }
  if (!opts.caFile && !opts.certFile) return undefined;
  return {
    rootCertificate: opts.caFile ? await readPem(opts.caFile, "--etcd-cafile") : undefined,
    certChain: opts.certFile ? await readPem(opts.certFile, "--etcd-certfile") : undefined,
    privateKey: opts.keyFile ? await readPem(opts.keyFile, "--etcd-keyfile") : undefined,
  };
}

/**
 * Checks that the options fit together and builds the client. Throws RegistryError for bad
 * endpoints or option combinations.
 */
export function connect(opts: EtcdRegistryOptions, credentials?: Credentials): Connection {
  if (!opts.endpoints?.length) {
    throw new RegistryError("no etcd endpoints given; set --etcd-endpoints");
  }
  const endpoints = opts.endpoints.map(parseEndpoint);
  const https = endpoints.filter((e) => e.startsWith("https:")).length;
  if (https > 0 && https < endpoints.length) {
    throw new RegistryError(
      `etcd endpoints ${endpoints.join(",")} mix http:// and https://; use one scheme`,
    );
  }
  if (credentials && https === 0) {
    throw new RegistryError(
      `TLS files are set but etcd endpoints ${endpoints.join(",")} are http://; ` +
        `use https:// endpoints or drop --etcd-cafile/--etcd-certfile/--etcd-keyfile`,
    );
  }
  if (opts.password !== undefined && opts.password !== "" && !opts.username) {
    throw new RegistryError("--etcd-password is set without --etcd-username; set both");
  }
  if (https > 0) allowIpTlsEndpoints();
  const username = opts.username || undefined;
  const timeout = opts.callTimeoutMs ?? 10_000;
  const client = new Etcd3({
    hosts: endpoints,
    credentials: credentials as IOptions["credentials"],
    auth: username ? { username, password: opts.password ?? "" } : undefined,
    // Without a deadline a call to an unreachable (not refusing) etcd hangs forever.
    defaultCallOptions: (ctx) => ctx.isStream ? {} : { deadline: Date.now() + timeout },
    faultHandling: { global: once, host: () => once },
    grpcOptions: {
      // Detects a dead peer on an idle watch stream (etcd permits pings every 5 s or slower).
      "grpc.keepalive_time_ms": 30_000,
      "grpc.keepalive_timeout_ms": 10_000,
    },
  });
  keepChannelsOnCallErrors(client);
  const prefix = (opts.prefix ?? DEFAULT_ETCD_PREFIX).replace(/\/+$/, "");
  return { client, endpoints, prefix, username, tls: https > 0 };
}

/** The part of etcd3's (untyped) connection pool that {@link keepChannelsOnCallErrors} changes. */
interface PoolHost {
  cachedServices: Record<string, {
    getChannel(): { getConnectivityState(connect: boolean): number };
    close(): void;
  }>;
  closed: boolean;
  resetAllServices(): void;
  close(): void;
}

/** grpc-js `connectivityState`: a channel that is connected or connecting. */
const CONNECTING = 1, READY = 2;

/**
 * etcd3 closes every gRPC channel to a host when any one call to it fails with a code it deems
 * recoverable (DEADLINE_EXCEEDED, UNAVAILABLE, CANCELLED, ...: `Host.resetAllServices`), so that
 * the next call gets a fresh channel that connects at once instead of waiting out grpc-js's
 * reconnect backoff. On a connection that is fine (a call past its deadline on a busy host, a
 * watch cancelled) that close does harm: the channel's HTTP/2 session is closed gracefully, the
 * watch stream on it lives on until the next keepalive ping, which node:http2 cancels on a closed
 * session ("HTTP2 ping cancelled"), and grpc-js then drops the connection: the watch fails with
 * "14 UNAVAILABLE: Connection dropped", and that error closes the channels made since, again. So
 * only channels that are neither connected nor connecting are closed (etcd gone or restarted).
 */
export function keepChannelsOnCallErrors(client: Etcd3): void {
  const hosts = (client as unknown as { pool?: { hosts?: PoolHost[] } }).pool?.hosts;
  if (!hosts?.length || hosts.some((h) => typeof h.cachedServices !== "object")) {
    throw new Error("npm:etcd3's connection pool is not as expected: its internals changed");
  }
  for (const host of hosts) {
    // Closing the client still closes every channel.
    const closeAll = host.resetAllServices.bind(host);
    host.close = () => {
      closeAll();
      host.closed = true;
    };
    host.resetAllServices = () => {
      for (const [name, service] of Object.entries(host.cachedServices)) {
        const state = service.getChannel().getConnectivityState(false);
        if (state === READY || state === CONNECTING) continue;
        service.close();
        delete host.cachedServices[name];
      }
    };
  }
}
