/**
 * The registry flags: their usage checks, and their translation into the registry layer's typed
 * `RegistryOptions` (the untyped flag bag stops here).
 *
 * @example
 * ```ts
 * const opts = registryOptions(values, given); // throws UsageError for bad combinations
 * const registry = await openRegistry(opts);
 * ```
 */
import { type FlagValues, UsageError } from "./flags.ts";
import type { RegistryOptions } from "../registry/open.ts";
import { normalizeEndpoint } from "../registry/etcd/endpoint.ts";

/**
 * Checks the registry flags' forms (usage errors) before anything is started, and picks etcd
 * when only etcd flags were given: flanneld's command lines (`--etcd-endpoints=…`, or
 * FLANNELD_ETCD_ENDPOINTS) must reach etcd, not an empty local KV file. Sets `v.registry`.
 */
export function checkRegistryFlags(v: FlagValues, given: Set<string> = new Set()): string[] {
  const etcdGiven = [...given].filter((f) => f.startsWith("etcd-") && f !== "etcd-prefix");
  const kvGiven = [...given].filter((f) => f.startsWith("kv-"));
  if (!given.has("registry")) {
    if (etcdGiven.length && kvGiven.length) {
      throw new UsageError(
        `both --${etcdGiven[0]} and --${kvGiven[0]} given: choose the registry with --registry`,
      );
    }
    if (etcdGiven.length) v.registry = "etcd";
  } else if (v.registry === "kv" && etcdGiven.length) {
    throw new UsageError(`--${etcdGiven[0]} has no effect with --registry kv; drop one of them`);
  } else if (v.registry === "etcd" && kvGiven.length) {
    throw new UsageError(`--${kvGiven[0]} has no effect with --registry etcd; drop one of them`);
  }
  const endpoints = String(v["etcd-endpoints"]).split(",").map((s) => s.trim()).filter(Boolean);
  if (v.registry !== "etcd") return endpoints;
  if (endpoints.length === 0) throw new UsageError("--etcd-endpoints is empty");
  for (const e of endpoints) {
    if (normalizeEndpoint(e) === null) {
      throw new UsageError(
        `--etcd-endpoints: "${e}" is not a URL like http://127.0.0.1:2379 (http(s)://host[:port])`,
      );
    }
  }
  return endpoints;
}

/** The checked flags as the registry layer's options. */
export function registryOptions(v: FlagValues, given?: Set<string>): RegistryOptions {
  const endpoints = checkRegistryFlags(v, given);
  const str = (name: string) => String(v[name] || "") || undefined;
  const prefix = String(v["etcd-prefix"] || "/coreos.com/network");
  if (v.registry === "etcd") {
    return {
      kind: "etcd",
      prefix,
      endpoints,
      certFile: str("etcd-certfile"),
      keyFile: str("etcd-keyfile"),
      caFile: str("etcd-cafile"),
      username: str("etcd-username"),
      password: str("etcd-password"),
    };
  }
  const kvUrl = str("kv-url");
  return kvUrl
    ? { kind: "kv", prefix, kvUrl }
    : { kind: "kv", prefix, kvPath: String(v["kv-path"]) };
}
