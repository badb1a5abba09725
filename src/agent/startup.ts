/**
 * The agent's start-up sequence before any lease: the network config (from the registry, seeded
 * from --net-config-path), the backend (the config's, or --backend), the families it must serve,
 * the external interface and the underlay-overlap checks, each failing with what the operator
 * must fix before anything is written. Logs the choice once, per family.
 *
 * @example
 * ```ts
 * const s = await startUp(registry, opts, signal);
 * if (!s) return; // stopped while waiting for a config
 * await s.backend.prepare({ config: s.cfg, ext: s.ext, previous: null });
 * ```
 */
import { getLogger } from "@logtape/logtape";
import type { NetworkConfig } from "../config/network.ts";
import type { Backend } from "../backend/backend.ts";
import { checkUnderlayOverlap, checkUnderlayOverlap6 } from "../backend/routes.ts";
import { formatCidr } from "../base/ipv4.ts";
import { formatCidr6 } from "../base/ipv6.ts";
import {
  type ExternalInterface,
  type IfaceSelection,
  selectExternalInterface,
} from "../net/iface.ts";
import type { Registry } from "../registry/contract/registry.ts";
import { checkFamilies, createBackend } from "./select_backend.ts";
import { loadNetworkConfig } from "./netconfig.ts";

const log = getLogger(["weft", "agent"]);

/** What start-up chose: everything the lease and the datapath are built on. */
export interface StartedUp {
  cfg: NetworkConfig;
  backend: Backend;
  ext: ExternalInterface;
  /** The address that tells this node's lease apart: PublicIPv6 when IPv6-only. */
  address: string;
}

/**
 * Loads the config and chooses backend and interface; null when `signal` aborts first. Throws
 * for what an operator must fix (bad config, no interface, underlay overlapping the network).
 */
export async function startUp(
  registry: Registry,
  opts: { netConfigPath?: string; backendOverride?: string; iface: IfaceSelection },
  signal: AbortSignal,
): Promise<StartedUp | null> {
  const cfg = await loadNetworkConfig(registry, opts.netConfigPath, signal);
  if (!cfg) return null;
  const backendName = opts.backendOverride || cfg.backendType;
  const backend = await createBackend(backendName);
  checkFamilies(cfg, backend); // before anything is chosen or written
  const v4 = cfg.enableIPv4;
  const ext = await selectExternalInterface({
    ...opts.iface,
    ipv6: cfg.enableIPv6,
    ipv4: v4,
  });
  // Else underlay routes would look like weft's, in either family.
  if (v4) checkUnderlayOverlap(cfg.network, ext);
  if (cfg.ipv6) checkUnderlayOverlap6(cfg.ipv6.network, ext);
  // The address that tells this node's lease apart: PublicIPv6 when IPv6-only.
  const address = v4 ? ext.publicIP : ext.publicIPv6!;
  if (v4) {
    log.info("using interface {name} ({addr}), public IP {pub}, backend {b}, network {net}", {
      name: ext.name,
      addr: ext.ifaceAddr,
      pub: ext.publicIP,
      b: backendName,
      net: formatCidr(cfg.network),
    });
  }
  if (cfg.ipv6) {
    log.info("{what}interface {name} ({addr}), public IPv6 {pub}, backend {b}, network {net}", {
      what: v4 ? "IPv6: " : "IPv6-only: ",
      name: ext.name,
      addr: ext.ifaceAddr6,
      pub: ext.publicIPv6,
      b: backendName,
      net: formatCidr6(cfg.ipv6.network),
    });
  }
  return { cfg, backend, ext, address };
}
