/**
 * The check after acquiring a lease: the other leases naming this node's public IP, written by
 * another node that started at the same moment, orphaned by this node earlier, or an operator's.
 * A mass join makes this check O(leases) per node when it lists everything, so it reads the
 * leases written since the list the acquisition chose from, which holds the rest.
 *
 * @example
 * ```ts
 * if (await tidy(host, held, base, signal)) return held; // else: yielded, acquire again
 * ```
 */
import { getLogger } from "@logtape/logtape";
import type { NetworkConfig } from "../config/network.ts";
import type { KnownLease, Lease } from "./codec.ts";
import { namesNode, nodeAddress } from "./allocate.ts";
import type { AcquireHost } from "./acquire.ts";

const log = getLogger(["weft", "lease"]);

/** A lease naming this node: {@link AcquireHost.list} always gives its expiry. */
export function known(l: Lease): KnownLease {
  if (l.expiresAt === "unknown") {
    throw new Error(`internal: lease ${l.key} of this node listed without its expiry`);
  }
  return l as KnownLease;
}

/**
 * The revision after which leases must be read: `base`'s, when `base` names no lease of this
 * node's but `held` (the rest of it cannot name us unless rewritten since); else undefined,
 * all of them (its leases naming us may have been deleted since, which a partial list hides).
 */
function sinceWhen(
  cfg: NetworkConfig,
  held: KnownLease,
  base: { leases: Lease[]; revision: number },
  me: string,
): number | undefined {
  const named = base.leases.some((l) => l.key !== held.key && namesNode(cfg, l, me));
  return named ? undefined : base.revision;
}

/**
 * After taking `held`, looks at the other leases naming our public IP: one written earlier by
 * another node is claimed, and if that node is alive ours is given up (returns false: it was
 * there first; two agents that started at once settle by revision order). Leases carrying our
 * identity (orphans of an earlier subnet, or claimed from a dead node) are released; any
 * other is reported and left to expire.
 *
 * `base` is the full list the acquisition chose from: when it named no other lease of this
 * node's, only the leases written since are read (a node with our public IP that joined
 * meanwhile wrote after it), not every lease again.
 */
export async function tidy(
  h: AcquireHost,
  held: KnownLease,
  base: { leases: Lease[]; revision: number },
  signal?: AbortSignal,
): Promise<boolean> {
  const me = nodeAddress(h.config, held.attrs);
  const { leases } = await h.list(me, sinceWhen(h.config, held, base, me));
  const others = leases.filter((l) => l.key !== held.key && namesNode(h.config, l, me))
    .map(known);
  for (const l of others) {
    if (h.claims.isRival(l, held.attrs) && l.revision < held.revision) {
      const c = await h.claims.claim(l, held.attrs, h.opts.ttlSeconds, signal);
      if (c.outcome === "dead" && await h.registry.deleteLease(l.key, c.revision)) {
        log.info("released {key}: claimed from a node that did not answer", { key: l.key });
      }
      if (c.outcome !== "alive") continue;
      await h.registry.deleteLease(held.key, held.revision);
      h.dropped();
      await h.claims.waitGone(l, signal);
      return false;
    }
  }
  for (const l of others) {
    if (h.claims.isRival(l, held.attrs)) continue;
    const ours = !!held.attrs.nodeId && l.attrs.nodeId === held.attrs.nodeId;
    if (ours && l.expiresAt !== null && await h.registry.deleteLease(l.key, l.revision)) {
      log.info("released {key}, an earlier lease of this node", { key: l.key });
      continue;
    }
    log.warn(
      "lease {key} also names this node's public IP {ip}{kind}; this node uses {own}, and " +
        "leaves it to expire: delete it from the registry if no host uses it",
      {
        key: l.key,
        ip: l.attrs.publicIP,
        kind: l.expiresAt === null ? " (a reservation)" : "",
        own: held.key,
      },
    );
  }
  return true;
}
