/**
 * The agent in-process over a real Deno KV file with the alloc backend: peer leases whose subnet
 * does not fit the network (or of another backend) are never handed to the backend, readiness
 * follows the lease, and a FatalError stops the start without retries.
 */
import assert from "node:assert/strict";
import type { AllocBackend } from "../../src/backend/alloc/backend.ts";
import { encodeLeaseValue } from "../../src/lease/codec.ts";
import { waitFor } from "../kit/proc.ts";
import { waitAgentReady, withInProcessAgent } from "../kit/inproc_agent.ts";
import { ConfigError, FatalError } from "../../src/base/errors.ts";
import { OutOfSubnetsError } from "../../src/lease/manager.ts";
import { metrics } from "../../src/base/metrics.ts";

const v = (ip: string) => encodeLeaseValue({ publicIP: ip, backendType: "alloc" });
const WAIT = { intervalMs: 50, stopOnError: true };

Deno.test({
  name: "agent: leases outside the network's shape are ignored; readiness follows the lease",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: () =>
    withInProcessAgent({}, async ({ agent, registry, ctl }) => {
      assert.equal(agent.readiness().ok, false);
      const running = agent.run(ctl.signal);
      await waitAgentReady(agent);
      // A default route, a /8 outside the network and a /25 half-overlapping someone's /24.
      await registry.createLease("0.0.0.0-0", v("198.18.3.9"), 60);
      await registry.createLease("198.0.0.0-8", v("198.18.3.8"), 60);
      await registry.createLease("198.19.200.0-25", v("198.18.3.7"), 60);
      // Another backend's lease: not a peer of this one.
      const hostGw = encodeLeaseValue({ publicIP: "198.18.3.5", backendType: "host-gw" });
      await registry.createLease("198.19.202.0-24", hostGw, 60);
      // Below SubnetMin (198.19.1.0): never allocated here, but a peer all the same (flanneld).
      await registry.createLease("198.19.0.0-24", v("198.18.3.4"), 60);
      await registry.createLease("198.19.201.0-24", v("198.18.3.6"), 60);
      const backend = agent.backend as AllocBackend;
      // The watch delivers in registry order: once the last lease is in, all were judged.
      await waitFor("good peer delivered", () => backend.peers.has("198.19.201.0-24"), {
        timeoutMs: 15_000,
        ...WAIT,
      });
      assert.deepEqual([...backend.peers.keys()].sort(), ["198.19.0.0-24", "198.19.201.0-24"]);

      // Someone deletes our lease: not ready until it is back and applied.
      const own = agent.lease!.key;
      assert.ok(await registry.deleteLease(own));
      await waitFor(
        "lease re-acquired",
        async () => agent.readiness().ok && (await registry.getLease(own)) !== null,
        { timeoutMs: 30_000, ...WAIT },
      );
      ctl.abort();
      await running;
    }),
});

Deno.test({
  name: "agent: a fatal error (out of subnets) stops the start at once instead of retrying",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: () =>
    withInProcessAgent({
      // A /28 in /30s with the first skipped: three subnets, all held by other nodes.
      netConfig: `{"Network":"198.19.0.0/28","Backend":{"Type":"alloc"}}`,
      prefill: async (registry) => {
        for (const [i, key] of ["198.19.0.4-30", "198.19.0.8-30", "198.19.0.12-30"].entries()) {
          assert.ok(await registry.createLease(key, v(`198.18.3.${20 + i}`), 60));
        }
      },
    }, async ({ agent, ctl }) => {
      // Bounds the test if the agent wrongly retries: aborting makes run() resolve, which fails.
      const bound = setTimeout(() => ctl.abort(), 10_000);
      try {
        const err = await agent.run(ctl.signal).then(() => null, (e) => e);
        assert.ok(err instanceof OutOfSubnetsError, `run ended with ${err}`);
        assert.ok(err instanceof FatalError);
        assert.match(err.message, /out of subnets: network 198\.19\.0\.0\/28/);
      } finally {
        clearTimeout(bound);
      }
    }),
});

Deno.test({
  name: "agent: an invalid --net-config-path is refused before it is seeded into the registry",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const configs = [
      `{"Network":"198.19.0.0/16","Backend":{"Type":"bogus"}}`,
      `{"Network":"0.0.0.0/0","Backend":{"Type":"alloc"}}`,
    ];
    for (const text of configs) {
      await withInProcessAgent({ netConfig: text }, async ({ agent, registry, ctl }) => {
        // Bounds the test if the agent wrongly starts: aborting makes run() resolve, which fails.
        const bound = setTimeout(() => ctl.abort(), 10_000);
        try {
          const err = await agent.run(ctl.signal).then(() => null, (e) => e);
          // Nothing was written: the other nodes still start (or wait for a valid config).
          assert.equal(
            await registry.getConfig(),
            null,
            `${text} was seeded; run ended with ${err}`,
          );
          assert.ok(err instanceof ConfigError, `${text}: run ended with ${err}`);
          assert.match(err.message, /net\.json: /);
        } finally {
          clearTimeout(bound);
        }
      });
    }
  },
});

Deno.test({
  name: "agent: leases with bogus public IPs never reach the backend; IPv6-only ones are quiet",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const malformed = metrics.counter("weft_registry_malformed_leases_total", "");
    const resyncs = metrics.counter("weft_registry_resyncs_total", "");
    const bogus = ["0.0.0.0", "255.255.255.255", "127.0.0.1", "224.0.0.5"];
    let before = 0;
    await withInProcessAgent({
      agent: { reconcileIntervalMs: 100 },
      prefill: async (registry) => {
        // Two before the agent starts (the first list), two after (the watch).
        await registry.createLease("198.19.10.0-24", v(bogus[0]), 60);
        await registry.createLease("198.19.11.0-24", v(bogus[1]), 60);
        // flanneld's IPv6-only lease: no IPv4 half, so nothing for weft to program or complain of.
        await registry.createLease(
          "0.0.0.0-0&2001:db8:1::-64",
          `{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8::5","BackendType":"alloc"}`,
          60,
        );
        before = malformed.get();
      },
    }, async ({ agent, registry, ctl }) => {
      const running = agent.run(ctl.signal);
      await waitAgentReady(agent);
      // Above the first 100 free subnets, so never the one the agent picked for itself.
      assert.ok(await registry.createLease("198.19.212.0-24", v(bogus[2]), 60));
      assert.ok(await registry.createLease("198.19.213.0-24", v(bogus[3]), 60));
      assert.ok(await registry.createLease("198.19.214.0-24", v("198.18.3.6"), 60));
      const backend = agent.backend as AllocBackend;
      // The watch delivers in registry order: once the last lease is in, all were judged.
      await waitFor("good peer delivered", () => backend.peers.has("198.19.214.0-24"), {
        timeoutMs: 15_000,
        ...WAIT,
      });
      // A re-list judges them again: each bad lease is still counted (and logged) once only.
      const listed = resyncs.get();
      await waitFor("another re-list", () => resyncs.get() >= listed + 1, {
        timeoutMs: 15_000,
        ...WAIT,
      });
      assert.deepEqual([...backend.peers.keys()], ["198.19.214.0-24"]);
      assert.deepEqual(agent.peers().map((l) => l.key), ["198.19.214.0-24"]);
      assert.equal(malformed.get() - before, bogus.length);
      ctl.abort();
      await running;
    });
  },
});

Deno.test({
  name: "agent: a lease naming this node's public IP is never a peer (issue 10, defect 2 in part)",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: () =>
    withInProcessAgent({}, async ({ agent, registry, ctl }) => {
      const running = agent.run(ctl.signal);
      await waitAgentReady(agent);
      // Someone else's (or a stale) lease with our address, then a real peer; above the range
      // the agent allocates from, so neither can be the agent's own lease.
      assert.ok(await registry.createLease("198.19.220.0-24", v("198.18.3.1"), 60));
      assert.ok(await registry.createLease("198.19.221.0-24", v("198.18.3.6"), 60));
      const backend = agent.backend as AllocBackend;
      // The watch delivers in registry order: once the later lease is in, both were judged.
      await waitFor("the real peer delivered", () => backend.peers.has("198.19.221.0-24"), {
        timeoutMs: 15_000,
        ...WAIT,
      });
      assert.deepEqual([...backend.peers.keys()], ["198.19.221.0-24"]);
      assert.deepEqual(agent.peers().map((l) => l.key), ["198.19.221.0-24"]);
      assert.notEqual(agent.lease?.key, "198.19.220.0-24");
      ctl.abort();
      await running;
    }),
});
