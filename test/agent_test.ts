/**
 * The agent in-process over a real Deno KV file with the alloc backend: peer leases whose subnet
 * does not fit the network are never handed to the backend, and readiness follows the lease.
 */
import assert from "node:assert/strict";
import { Agent } from "../src/agent/agent.ts";
import type { AllocBackend } from "../src/backend/alloc/backend.ts";
import { openKvRegistry } from "../src/registry/kv.ts";
import { encodeLeaseValue } from "../src/lease/codec.ts";
import { until } from "./support/lease_suite.ts";

Deno.test({
  name: "agent: leases outside the network's shape are ignored; readiness follows the lease",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "weft-agent-" });
    const registry = await openKvRegistry({ path: `${dir}/r.kv`, pollMs: 20 });
    const ctl = new AbortController();
    try {
      await Deno.writeTextFile(
        `${dir}/net.json`,
        `{"Network":"198.19.0.0/16","Backend":{"Type":"alloc"}}`,
      );
      const agent = new Agent(registry, {
        netConfigPath: `${dir}/net.json`,
        iface: { iface: ["lo"], publicIP: "198.18.3.1" },
        subnetFile: `${dir}/subnet.env`,
        ttlSeconds: 60,
        renewMarginMs: 60_000,
        ipMasq: false,
        reconcileIntervalMs: 60_000,
      });
      assert.equal(agent.readiness().ok, false);
      const running = agent.run(ctl.signal);
      await until("agent ready", 30_000, () => agent.readiness().ok);
      const v = (ip: string) => encodeLeaseValue({ publicIP: ip, backendType: "alloc" });
      // A default route, a /8 outside the network and a /25 half-overlapping someone's /24.
      await registry.createLease("0.0.0.0-0", v("198.18.3.9"), 60);
      await registry.createLease("198.0.0.0-8", v("198.18.3.8"), 60);
      await registry.createLease("198.19.200.0-25", v("198.18.3.7"), 60);
      await registry.createLease("198.19.201.0-24", v("198.18.3.6"), 60);
      const backend = agent.backend as AllocBackend;
      await until("good peer delivered", 15_000, () => backend.peers.has("198.19.201.0-24"));
      await new Promise((r) => setTimeout(r, 300));
      assert.deepEqual([...backend.peers.keys()], ["198.19.201.0-24"]);

      // Someone deletes our lease: not ready until it is back and applied.
      const own = agent.lease!.key;
      assert.ok(await registry.deleteLease(own));
      await until(
        "lease re-acquired",
        30_000,
        async () => agent.readiness().ok && (await registry.getLease(own)) !== null,
      );
      ctl.abort();
      await running;
    } finally {
      ctl.abort();
      await registry.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
