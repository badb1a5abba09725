/**
 * An `Agent` run in-process over a fresh Deno KV file (the alloc backend on `lo` by default), for
 * tests of the agent's own logic: the registry, temp dir and abort controller are made here and
 * removed afterwards, whatever the test does. The agent is built but not started, so a test can
 * prefill the registry and decide how it runs (to readiness, or to an expected error).
 *
 * @example
 * ```ts
 * await withInProcessAgent({}, async ({ agent, registry, ctl }) => {
 *   const running = agent.run(ctl.signal);
 *   await waitAgentReady(agent);
 *   // ... create leases in `registry`, assert on agent.backend ...
 *   ctl.abort();
 *   await running;
 * });
 * ```
 */
import { Agent, type AgentOptions } from "../../src/agent/agent.ts";
import { openKvRegistry } from "../../src/registry/kv/mod.ts";
import type { Registry } from "../../src/registry/contract/registry.ts";
import { waitFor } from "./proc.ts";

export interface InProcessAgent {
  agent: Agent;
  registry: Registry;
  /** Aborting it stops the agent (and is done for you at the end). */
  ctl: AbortController;
  dir: string;
}

export interface InProcessOptions {
  /** The text of the agent's `--net-config-path` file; default: 198.19.0.0/16 with alloc. */
  netConfig?: string;
  /** Runs before the agent is built (e.g. leases that must exist before it starts). */
  prefill?: (registry: Registry) => Promise<void>;
  /** Overrides of the agent's options. */
  agent?: Partial<AgentOptions>;
}

/** Builds the registry and the agent, runs `fn`, then stops the agent and removes everything. */
export async function withInProcessAgent(
  o: InProcessOptions,
  fn: (a: InProcessAgent) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "weft-agent-" });
  const registry = await openKvRegistry({ path: `${dir}/r.kv`, pollMs: 20 });
  const ctl = new AbortController();
  try {
    await Deno.writeTextFile(
      `${dir}/net.json`,
      o.netConfig ?? `{"Network":"198.19.0.0/16","Backend":{"Type":"alloc"}}`,
    );
    await o.prefill?.(registry);
    const agent = new Agent(registry, {
      netConfigPath: `${dir}/net.json`,
      iface: { iface: ["lo"], publicIP: "198.18.3.1" },
      subnetFile: `${dir}/subnet.env`,
      ttlSeconds: 60,
      renewMarginMs: 60_000,
      ipMasq: false,
      reconcileIntervalMs: 60_000,
      ...o.agent,
    });
    await fn({ agent, registry, ctl, dir });
  } finally {
    ctl.abort();
    await registry.close();
    await Deno.remove(dir, { recursive: true });
  }
}

/** Waits (bounded, 30 s) until the agent reports ready. */
export function waitAgentReady(agent: Agent): Promise<true> {
  return waitFor("agent ready", () => agent.readiness().ok, {
    timeoutMs: 30_000,
    intervalMs: 50,
    stopOnError: true,
  });
}
