/**
 * The form of an etcd client URL, `http(s)://host[:port]`, in a module that loads nothing else:
 * the command line checks `--etcd-endpoints` with it before anything starts (a usage error), the
 * client normalises with it.
 *
 * @example
 * ```ts
 * normalizeEndpoint("http://198.18.0.1");      // "http://198.18.0.1:2379"
 * normalizeEndpoint("http://198.18.0.1:x");    // null
 * ```
 */

/** The endpoint as `scheme://host:port` (port 2379 when none), or null when it is malformed. */
export function normalizeEndpoint(e: string): string | null {
  const m = /^(https?):\/\/(\[[0-9a-fA-F:.]+\]|[^/:\[\]]+)(?::(\d{1,5}))?\/?$/.exec(e.trim());
  if (!m || (m[3] && Number(m[3]) > 65535)) return null;
  return `${m[1]}://${m[2]}:${m[3] ?? "2379"}`;
}
