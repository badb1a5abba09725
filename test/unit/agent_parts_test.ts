/**
 * The agent runs its parts (iptables, blackhole route) the way it runs a backend, checked here
 * in-process with recording parts over a real Deno KV file and the alloc backend: apply() gets
 * every lease in order with the previous one, /readyz names a part whose apply is in progress,
 * check() runs periodically and survives a failing round, stop() runs once the agent stops, and
 * a part failing the first lease stops the agent with its error.
 */
import assert from "node:assert/strict";
import type { Agent } from "../../src/agent/agent.ts";
import type { Part } from "../../src/backend/part.ts";
import type { NetworkConfig } from "../../src/config/network.ts";
import type { Lease } from "../../src/lease/codec.ts";
import type { Registry } from "../../src/registry/contract/registry.ts";
import { waitFor } from "../kit/proc.ts";
import { withInProcessAgent } from "../kit/inproc_agent.ts";

/** A part that records its calls; its first apply waits for `release()`. */
class RecordingPart implements Part {
  readonly checkIntervalMs = 20;
  applied: { subnet: string; prev: string | null }[] = [];
  checks = 0;
  stops = 0;
  failNextCheck = false;
  failApply: Error | null = null;
  #gate = Promise.withResolvers<void>();

  constructor(readonly name: string, gated = false) {
    if (!gated) this.#gate.resolve();
  }

  release() {
    this.#gate.resolve();
  }

  async apply(_cfg: NetworkConfig, lease: Lease, prev: Lease | null): Promise<void> {
    await this.#gate.promise;
    if (this.failApply) throw this.failApply;
    this.applied.push({ subnet: lease.key, prev: prev?.key ?? null });
  }

  check(): Promise<boolean> {
    this.checks++;
    if (this.failNextCheck) {
      this.failNextCheck = false;
      return Promise.reject(new Error("check failed on purpose"));
    }
    return Promise.resolve(false);
  }

  stop(): Promise<void> {
    this.stops++;
    return Promise.resolve();
  }
}

/** Starts an in-process agent with `parts` (kit) and stops it after `fn`, whatever happens. */
function withAgent(
  parts: Part[],
  fn: (agent: Agent, registry: Registry, running: Promise<void>, ctl: AbortController) => Promise<
    void
  >,
): Promise<void> {
  return withInProcessAgent({ agent: { parts } }, async ({ agent, registry, ctl }) => {
    const running = agent.run(ctl.signal);
    try {
      await fn(agent, registry, running, ctl);
    } finally {
      ctl.abort();
      await running.catch(() => {});
    }
  });
}

Deno.test({
  name: "agent parts: apply per lease with prev, readiness names the part, checks, stop",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const rules = new RecordingPart("iptables rules", true);
    const route = new RecordingPart("blackhole route");
    await withAgent([route, rules], async (agent, registry, running, ctl) => {
      // The first part is in place, the second one's apply waits: /readyz names the second.
      await waitFor("route applied", () => route.applied.length === 1, {
        timeoutMs: 10_000,
        intervalMs: 50,
        stopOnError: true,
      });
      assert.deepEqual(agent.readiness(), {
        ok: false,
        reason: "iptables rules not installed yet",
      });
      rules.release();
      await waitFor("agent ready", () => agent.readiness().ok, {
        timeoutMs: 10_000,
        intervalMs: 50,
        stopOnError: true,
      });
      const first = agent.lease!.key;
      assert.deepEqual(rules.applied, [{ subnet: first, prev: null }]);
      assert.deepEqual(route.applied, [{ subnet: first, prev: null }]);

      // Checks run periodically, and a failing round does not end them.
      rules.failNextCheck = true;
      const after = rules.checks;
      await waitFor("checks after a failure", () => rules.checks >= after + 3, {
        timeoutMs: 5000,
        intervalMs: 50,
        stopOnError: true,
      });
      assert.equal(rules.failNextCheck, false);
      assert.ok(route.checks > 0);

      // The lease deleted under the agent: both parts get the re-acquired one, with the first
      // as prev, in order.
      assert.ok(await registry.deleteLease(first));
      await waitFor("parts re-applied", () => rules.applied.length === 2 && agent.readiness().ok, {
        timeoutMs: 10_000,
        intervalMs: 50,
        stopOnError: true,
      });
      const second = agent.lease!.key;
      assert.deepEqual(rules.applied[1], { subnet: second, prev: first });
      assert.deepEqual(route.applied[1], { subnet: second, prev: first });

      assert.equal(rules.stops, 0);
      ctl.abort();
      await running;
      assert.equal(rules.stops, 1);
      assert.equal(route.stops, 1);
    });
  },
});

Deno.test({
  name: "agent parts: a part failing the first lease stops the agent with its error",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const broken = new RecordingPart("iptables rules");
    broken.failApply = new Error("iptables-restore exited with 1 on purpose");
    await withAgent([broken], async (agent, _registry, running) => {
      await assert.rejects(running, /iptables-restore exited with 1 on purpose/);
      assert.deepEqual(agent.readiness(), {
        ok: false,
        reason: "iptables rules not installed yet",
      });
      assert.equal(broken.stops, 1);
      assert.equal(broken.checks, 0);
    });
  },
});
