/**
 * `weft run`: opens the registry, builds the agent's parts from the flags (the blackhole route,
 * the iptables or nftables rules, as the network config picks), starts the agent and the health server, and handles signals. SIGTERM/SIGINT
 * stop watches and loops and close the registry, leaving the lease and the kernel datapath in
 * place, so a restart does not interrupt pod traffic.
 */
import { getLogger } from "@logtape/logtape";
import type { FlagValues } from "./flags.ts";
import { Agent } from "../agent/agent.ts";
import { openRegistry } from "../registry/open.ts";
import { registryOptions } from "./registry_flags.ts";
import { ifaceSelection } from "./agent_flags.ts";
import { VERSION } from "../base/version.ts";
import { metrics } from "../base/metrics.ts";
import { type HealthServer, startHealthServer } from "../ops/health.ts";
import { FirewallPart } from "../agent/firewall_part.ts";
import { BlackholePart } from "../agent/blackhole.ts";
import { OwnRoutePart } from "../agent/own_route.ts";
import type { Part } from "../backend/part.ts";
import { netlink } from "../../ffi/libnl/mod.ts";
import { notifyReady } from "../ops/sdnotify.ts";
import { loadNodeId } from "./node_id.ts";

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
  const ipMasq = Boolean(v["ip-masq"]);
  const forward = Boolean(v["iptables-forward-rules"]);
  // Off, the blackhole part still removes a route an earlier run with the flag left behind.
  const parts: Part[] = [
    new BlackholePart(netlink(), Boolean(v["ip-blackhole-route"])),
    new OwnRoutePart(netlink()),
  ];
  if (ipMasq || forward) {
    parts.push(
      new FirewallPart({
        ipMasq,
        forward,
        randomFullyDisable: Boolean(v["ip-masq-fully-random-disable"]),
        resyncSeconds: Number(v["iptables-resync"]),
      }),
    );
  }
  const nodeId = await loadNodeId(String(v["node-id-file"]));
  const registry = await openRegistry(registryOptions(v));
  const agent: Agent = new Agent(registry, {
    netConfigPath: String(v["net-config-path"] || "") || undefined,
    backendOverride: String(v.backend || "") || undefined,
    iface: ifaceSelection(v),
    subnetFile: String(v["subnet-file"]),
    ttlSeconds: Number(v["subnet-lease-ttl"]),
    renewMarginMs: Number(v["subnet-lease-renew-margin"]) * 60_000,
    ipMasq,
    reconcileIntervalMs: Number(v["reconcile-interval"]) * 1000,
    nodeId,
    parts,
    peerProbe: {
      intervalMs: Number(v["peer-probe-interval"]) * 1000,
      maxPerRound: Number(v["peer-probe-max"]),
    },
    onReady: () => {
      log.info("ready");
      notifyReady();
    },
  });

  let health: HealthServer | null = null;
  const port = Number(v["healthz-port"]);
  if (port > 0) {
    health = startHealthServer({
      hostname: String(v["healthz-ip"]),
      port,
      ready: () => agent.readiness(),
      status: () => ({ registry: String(v.registry), ...agent.status() }),
      metrics,
      version: VERSION,
    });
    log.info("health server on {ip}:{port} (/healthz, /readyz, /metrics, /status)", {
      ip: v["healthz-ip"],
      port: health.port,
    });
  }
  try {
    await agent.run(ctl.signal);
  } finally {
    await health?.close().catch(() => {});
    await agent.backend?.close().catch(() => {});
    await registry.close().catch(() => {});
  }
  log.info("stopped");
  return 0;
}
