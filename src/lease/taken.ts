/**
 * The subnets taken, from the lease keys alone (flannel's key is the subnet): a keys-only list
 * moves about a third of a full list's bytes and decodes no JSON. Acquisition picks from it after
 * lost create races, when thousands of nodes join at once and every list is O(leases).
 *
 * @example
 * ```ts
 * const taken = await listTaken(registry, cfg);
 * const free = freeSubnets(cfg, taken, 100);
 * ```
 */
import type { NetworkConfig } from "../config/network.ts";
import type { Registry } from "../registry/contract/registry.ts";
import { isIpv6OnlyKey, parseSubnetKey, parseSubnetKey6 } from "./codec.ts";
import type { Occupant } from "./allocate.ts";

/**
 * Every lease key that parses, as the subnets it occupies. A key the full list would skip for
 * its value (malformed JSON) still counts as taken here: its create would fail anyway. Keys that
 * do not parse are skipped silently; the full lists and the watch report them.
 */
export async function listTaken(registry: Registry, cfg: NetworkConfig): Promise<Occupant[]> {
  const { keys } = await registry.listLeaseKeys();
  const out: Occupant[] = [];
  for (const { key, revision } of keys) {
    if (!cfg.enableIPv6 && isIpv6OnlyKey(key)) continue; // as LeaseDecoder: not this network's
    try {
      const subnet6 = parseSubnetKey6(key);
      out.push({ key, subnet: parseSubnetKey(key), ...(subnet6 ? { subnet6 } : {}), revision });
    } catch {
      continue;
    }
  }
  return out;
}
