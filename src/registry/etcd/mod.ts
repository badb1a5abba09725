/**
 * The etcd v3 registry: `openEtcdRegistry` and what callers name. The modules beside this one:
 * `client.ts` (endpoints, TLS, auth, the etcd3 client), `errors.ts` (permanent vs retried
 * errors), `keys.ts` (key layout), `expiry.ts` (lease expiry lookups), `list.ts` (full lists in
 * pages), `registry.ts` (reads and transactions), `watch.ts` and `stream.ts` (the resumable watch).
 *
 * @example
 * ```ts
 * const reg = await openEtcdRegistry({ endpoints: ["https://198.18.0.1:2379"], caFile });
 * ```
 */
import { type EtcdRegistryOptions, readCredentials } from "./client.ts";
import { EtcdRegistry } from "./registry.ts";

export { DEFAULT_ETCD_PREFIX, type EtcdRegistryOptions } from "./client.ts";
export { EtcdRegistry } from "./registry.ts";

/**
 * Reads the TLS files and builds an EtcdRegistry. Throws RegistryError naming the flag when a file
 * cannot be read or the options do not fit together. Does not contact etcd: the first call does.
 */
export async function openEtcdRegistry(opts: EtcdRegistryOptions): Promise<EtcdRegistry> {
  return new EtcdRegistry(opts, await readCredentials(opts));
}
