/**
 * The health and metrics HTTP server (flannel's `--healthz-ip`/`--healthz-port`, plus metrics):
 * GET /healthz is 200 while the process serves at all, GET /readyz is 200 once the node is ready
 * (rules and subnet.env in place) and 503 with the reason before, GET /metrics is Prometheus text,
 * GET /status is the agent's whole picture as JSON (lease, readiness, peers and their probes, last
 * errors, repairs; what `weft status` prints). Readiness never depends on peers: /status does.
 *
 * @example
 * ```ts
 * const srv = startHealthServer({
 *   hostname: "0.0.0.0",
 *   port: 8471,
 *   ready: () => ({ ok: false, reason: "no subnet lease yet" }),
 *   metrics,
 * });
 * // curl localhost:8471/readyz → 503 "not ready: no subnet lease yet"
 * await srv.close();
 * ```
 */
import type { MetricsRegistry } from "../base/metrics.ts";

export interface ReadyState {
  ok: boolean;
  reason?: string;
}

export interface HealthServerOptions {
  hostname: string;
  /** 0 picks a free port (see the returned `port`). */
  port: number;
  ready: () => ReadyState | Promise<ReadyState>;
  /** The body of GET /status (any JSON value); 404 when absent. */
  status?: () => unknown;
  metrics: MetricsRegistry;
  /** Reported as `weft_build_info{version="..."} 1`. */
  version?: string;
}

export interface HealthServer {
  port: number;
  close(): Promise<void>;
}

/** The base URL a client uses for the health server of `--healthz-ip IP --healthz-port PORT`. */
export function healthBase(ip: string, port: number): string {
  const host = ip === "0.0.0.0" || ip === "" ? "127.0.0.1" : ip;
  return `http://${host.includes(":") ? `[${host}]` : host}:${port}`;
}

const PROM_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/** Registers the process metrics that are read at scrape time. */
export function registerProcessMetrics(m: MetricsRegistry, version: string): void {
  m.gauge("weft_process_resident_memory_bytes", "Resident memory size in bytes.")
    .collect(() => Deno.memoryUsage().rss);
  // performance.timeOrigin is when this process started, in ms since the epoch.
  const start = Math.floor(performance.timeOrigin / 1000);
  m.gauge("weft_process_start_time_seconds", "Start time of the process since the epoch.")
    .collect(() => start);
  m.gauge("weft_build_info", "weft build information; the value is always 1.").set(1, { version });
}

function text(body: string, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(body + "\n", {
    status,
    headers: { "content-type": "text/plain; charset=utf-8", ...headers },
  });
}

async function handle(req: Request, opts: HealthServerOptions): Promise<Response> {
  const path = new URL(req.url).pathname;
  const known = path === "/healthz" || path === "/readyz" || path === "/metrics" ||
    (path === "/status" && opts.status !== undefined);
  if (!known) {
    return text(`not found: ${path} (try /healthz, /readyz, /metrics or /status)`, 404);
  }
  if (req.method !== "GET") return text(`method ${req.method} not allowed`, 405, { allow: "GET" });
  if (path === "/healthz") return text("ok");
  if (path === "/readyz") {
    let st: ReadyState;
    try {
      st = await opts.ready();
    } catch (e) {
      st = { ok: false, reason: `readiness check failed: ${(e as Error).message}` };
    }
    return st.ok ? text("ok") : text(`not ready: ${st.reason ?? "unknown reason"}`, 503);
  }
  if (path === "/status") {
    try {
      return Response.json(await opts.status!());
    } catch (e) {
      return text(`status failed: ${(e as Error).message}`, 500);
    }
  }
  return new Response(opts.metrics.render(), { headers: { "content-type": PROM_TYPE } });
}

/** Starts the server; throws (Deno.errors.AddrInUse etc.) with the address when it cannot bind. */
export function startHealthServer(opts: HealthServerOptions): HealthServer {
  registerProcessMetrics(opts.metrics, opts.version ?? "dev");
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = Deno.serve(
      { hostname: opts.hostname, port: opts.port, onListen: () => {} },
      (req) => handle(req, opts),
    );
  } catch (e) {
    throw new Error(
      `cannot serve health/metrics on ${opts.hostname}:${opts.port}: ${(e as Error).message}. ` +
        `Pick another --healthz-port or free the port.`,
      { cause: e },
    );
  }
  return { port: server.addr.port, close: () => server.shutdown() };
}
