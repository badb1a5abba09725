/**
 * Opens the registry that typed options select: Deno KV (a file or a KV Connect URL) or etcd v3.
 * Flag parsing and its usage errors live in `src/cli`; this module only receives checked values.
 *
 * @example
 * ```ts
 * const r = await openRegistry({ kind: "kv", prefix: "/coreos.com/network", kvPath: "/tmp/r.kv" });
 * ```
 */
import type { Registry } from "./contract/registry.ts";

/** Which registry to open and how to reach it. */
export type RegistryOptions =
  | {
    kind: "etcd";
    /** Key prefix, without a trailing slash. */
    prefix: string;
    endpoints: string[];
    certFile?: string;
    keyFile?: string;
    caFile?: string;
    username?: string;
    password?: string;
  }
  | { kind: "kv"; prefix: string; kvPath?: string; kvUrl?: string };

export async function openRegistry(o: RegistryOptions): Promise<Registry> {
  const prefix = o.prefix.replace(/\/+$/, "");
  if (o.kind === "etcd") {
    // Loaded on demand: grpc-js and etcd3 cost memory that KV agents never need.
    const { openEtcdRegistry } = await import("./etcd/mod.ts");
    return await openEtcdRegistry({
      endpoints: o.endpoints,
      prefix,
      certFile: o.certFile,
      keyFile: o.keyFile,
      caFile: o.caFile,
      username: o.username,
      password: o.password,
    });
  }
  const { openKvRegistry } = await import("./kv/mod.ts");
  if (o.kvUrl) return await openKvRegistry({ url: o.kvUrl, prefix });
  if (!o.kvPath) throw new TypeError("openRegistry: kv needs kvPath or kvUrl");
  return await openKvRegistry({ path: o.kvPath, prefix });
}
