/**
 * The Registry contract, re-exported from `./contract/registry.ts` so that callers keep this
 * path. The contract sits in its own folder because the implementations (`./etcd/`, `./kv/`)
 * import it and `./open.ts` imports them: one folder holding both would be an import cycle.
 */
export * from "./contract/registry.ts";
