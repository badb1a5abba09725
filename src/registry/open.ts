/**
 * Opens the registry the flags select: Deno KV (a file or a KV Connect URL) or etcd v3.
 */
import type { FlagValues } from "../cli/flags.ts";
import { UsageError } from "../cli/flags.ts";
import type { Registry } from "./registry.ts";

/**
 * Checks the registry flags' forms (usage errors) before anything is started, and picks etcd
 * when only etcd flags were given: flanneld's command lines (`--etcd-endpoints=…`, or
 * FLANNELD_ETCD_ENDPOINTS) must reach etcd, not an empty local KV file.
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
    if (!/^https?:\/\/[^/]+/.test(e)) {
      throw new UsageError(`--etcd-endpoints: "${e}" is not a URL like http://127.0.0.1:2379`);
    }
  }
  return endpoints;
}

export async function openRegistry(v: FlagValues): Promise<Registry> {
  const prefix = String(v["etcd-prefix"] || "/coreos.com/network").replace(/\/+$/, "");
  if (v.registry === "etcd") {
    const endpoints = checkRegistryFlags(v);
    // Loaded on demand: grpc-js and etcd3 cost memory that KV agents never need.
    const { openEtcdRegistry } = await import("./etcd.ts");
    return await openEtcdRegistry({
      endpoints,
      prefix,
      certFile: String(v["etcd-certfile"] || "") || undefined,
      keyFile: String(v["etcd-keyfile"] || "") || undefined,
      caFile: String(v["etcd-cafile"] || "") || undefined,
      username: String(v["etcd-username"] || "") || undefined,
      password: String(v["etcd-password"] || "") || undefined,
    });
  }
  const url = String(v["kv-url"] || "");
  const { openKvRegistry } = await import("./kv.ts");
  return await openKvRegistry(
    url ? { url, prefix } : { path: String(v["kv-path"]), prefix },
  );
}
