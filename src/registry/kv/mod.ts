/**
 * The Deno KV registry: `openKvRegistry` and what callers name. See `registry.ts` for how the
 * modules beside this one divide the work.
 *
 * @example
 * ```ts
 * const reg = await openKvRegistry({ path: "/var/lib/weft/registry.kv" });
 * ```
 */
export { openKvRegistry } from "./open.ts";
export { KvRegistry, type KvRegistryOptions } from "./registry.ts";
export { KvBusyError } from "./commit.ts";
