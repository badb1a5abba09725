/** Lease lifecycle over a real etcd. */
import { type EtcdProc, startEtcd } from "../kit/etcd.ts";
import { leaseLifecycleSuite } from "../kit/suites/lease_suite.ts";
import { openEtcdRegistry } from "../../src/registry/etcd/mod.ts";
import type { Registry } from "../../src/registry/contract/registry.ts";

let etcd: EtcdProc | null = null;
let seq = 0;

leaseLifecycleSuite("etcd", async () => {
  etcd ??= await startEtcd();
  const prefix = `/weft-lease-${Date.now().toString(36)}-${seq++}`;
  const clients: Registry[] = [];
  return {
    async client() {
      const r = await openEtcdRegistry({ endpoints: [etcd!.endpoint], prefix });
      clients.push(r);
      return r;
    },
    async cleanup() {
      await Promise.all(clients.map((c) => c.close()));
    },
  };
});

Deno.test({
  name: "etcd: stop the test etcd",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await etcd?.cleanup();
  },
});
