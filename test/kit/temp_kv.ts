/**
 * A registry on a fresh Deno KV file in a temp dir, closed and removed afterwards (unit tests that
 * need a real store but no agent).
 *
 * @example
 * ```ts
 * await withTempKv("weft-release-", async (r) => {
 *   await r.createLease("198.19.1.0-24", value, 60);
 * });
 * ```
 */
import { openRegistry } from "../../src/registry/open.ts";
import type { Registry } from "../../src/registry/contract/registry.ts";

export async function withTempKv(prefix: string, fn: (r: Registry) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix });
  const r = await openRegistry({ kind: "kv", prefix: "/weft-test", kvPath: `${dir}/r.kv` });
  try {
    await fn(r);
  } finally {
    await r.close();
    await Deno.remove(dir, { recursive: true });
  }
}
