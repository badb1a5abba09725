/**
 * Releasing this node's lease on purpose (`weft cleanup --release-lease`): find it by public IP,
 * the way the agent itself would find it at start, and delete it only while it is unchanged, so a
 * still-running agent's renewal is never deleted from under it.
 *
 * @example
 * ```ts
 * const r = await releaseOwnLease(registry, config, "198.18.0.3", { dryRun: false });
 * if (r.outcome === "changed") console.error("the agent still runs?");
 * ```
 */
import type { NetworkConfig } from "../config/network.ts";
import type { Registry } from "../registry/contract/registry.ts";
import { findOwnLease, type OwnHints } from "./allocate.ts";
import type { Lease } from "./codec.ts";
import { LeaseDecoder } from "./decode.ts";

export type ReleaseOutcome =
  /** No lease names this public IP. */
  | "none"
  /** Deleted (or, in a dry run, would be). */
  | "released"
  /** It was written again between the list and the delete (an agent still renewing it). */
  | "changed"
  /** It carries another host's identity (two hosts with one public IP): never deleted here. */
  | "other";

export interface ReleaseOptions {
  dryRun: boolean;
  /** Wraps each registry call (e.g. a timeout naming the step). */
  step?: <T>(p: Promise<T>, what: string) => Promise<T>;
  /** The subnet.env subnet and this host's identity: pick the lease as the agent picks it. */
  hints?: OwnHints;
}

/**
 * Deletes the lease of the node whose public IP is `publicIP`. With a network config the lease is
 * chosen as the agent chooses it; without one, the first lease naming the IP.
 */
export async function releaseOwnLease(
  registry: Registry,
  config: NetworkConfig | null,
  publicIP: string,
  o: ReleaseOptions,
): Promise<{ outcome: ReleaseOutcome; lease: Lease | null }> {
  const step = o.step ?? (<T>(p: Promise<T>) => p);
  const { leases } = await step(registry.listLeases(), "listing leases");
  const decoded = new LeaseDecoder({ ipv6: config?.enableIPv6 ?? true }).decodeAll(leases);
  const own = config
    ? findOwnLease(config, decoded, publicIP, o.hints)
    : decoded.find((l) => l.attrs.publicIP === publicIP) ?? null;
  if (!own) return { outcome: "none", lease: null };
  const me = o.hints?.nodeId;
  if (me && own.attrs.nodeId && own.attrs.nodeId !== me) return { outcome: "other", lease: own };
  if (o.dryRun) return { outcome: "released", lease: own };
  const gone = await step(registry.deleteLease(own.key, own.revision), "deleting the lease");
  return { outcome: gone ? "released" : "changed", lease: own };
}
