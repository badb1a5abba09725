/** Lease lifecycle over Deno KV files, each client its own KV handle on the same file. */
import { leaseLifecycleSuite } from "../kit/suites/lease_suite.ts";
import { openKvRegistry } from "../../src/registry/kv/mod.ts";
import type { Registry } from "../../src/registry/contract/registry.ts";

leaseLifecycleSuite("kv", async () => {
  const dir = await Deno.makeTempDir({ prefix: "weft-lease-kv-" });
  const clients: Registry[] = [];
  return {
    async client() {
      const r = await openKvRegistry({ path: `${dir}/registry.kv` });
      clients.push(r);
      return r;
    },
    async cleanup() {
      await Promise.all(clients.map((c) => c.close()));
      await Deno.remove(dir, { recursive: true });
    },
  };
});
