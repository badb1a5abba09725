/**
 * `weft run`: opens the registry, starts the agent and the health server, and handles signals.
 * SIGTERM/SIGINT stop watches and loops and close the registry, leaving the lease and the kernel
 * datapath in place, so a restart does not interrupt pod traffic.
 */
import { getLogger } from "@logtape/logtape";
import type { FlagValues } from "./flags.ts";
import { Agent } from "../agent/agent.ts";
import { openRegistry } from "../registry/open.ts";
import { VERSION } from "../version.ts";

const log = getLogger(["weft", "main"]);

export async function runAgentCommand(v: FlagValues): Promise<number> {
  const ctl = new AbortController();
  const stop = (sig: string) => {
    if (ctl.signal.aborted) return;
    log.info("{sig} received; stopping (lease and datapath stay in place)", { sig });
    ctl.abort();
    // Never hang on shutdown: exit within 2 s whatever is still pending.
    setTimeout(() => Deno.exit(0), 1800);
  };
  Deno.addSignalListener("SIGTERM", () => stop("SIGTERM"));
  Deno.addSignalListener("SIGINT", () => stop("SIGINT"));

  log.info("weft {version} starting, registry {registry}", {
    version: VERSION,
    registry: v.registry,
  });
  const registry = await openRegistry(v);
  const agent = new Agent(registry, {
    netConfigPath: String(v["net-config-path"] || "") || undefined,
    backendOverride: String(v.backend || "") || undefined,
    iface: {
      iface: v.iface as string[],
      ifaceRegex: v["iface-regex"] as string[],
      ifaceCanReach: String(v["iface-can-reach"] || "") || undefined,
      publicIP: String(v["public-ip"] || "") || undefined,
    },
    subnetFile: String(v["subnet-file"]),
    ttlSeconds: Number(v["subnet-lease-ttl"]),
    renewMarginMs: Number(v["subnet-lease-renew-margin"]) * 60_000,
    ipMasq: Boolean(v["ip-masq"]),
    reconcileIntervalMs: Number(v["reconcile-interval"]) * 1000,
  });
  try {
    await agent.run(ctl.signal);
  } finally {
    await agent.backend?.close().catch(() => {});
    await registry.close().catch(() => {});
  }
  log.info("stopped");
  return 0;
}
