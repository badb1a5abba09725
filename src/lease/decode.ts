/**
 * Turns raw registry entries into Leases, logging each malformed entry once (per key and
 * revision) and skipping it, so one bad value from any writer never stops the agent.
 */
import { getLogger } from "@logtape/logtape";
import type { RegistryLease, WatchedExpiry } from "../registry/contract/registry.ts";
import { decodeLeaseValue, type Lease, parseSubnetKey } from "./codec.ts";
import { metrics } from "../base/metrics.ts";
import { preview } from "../base/preview.ts";

const log = getLogger(["weft", "lease"]);
const malformed = metrics.counter(
  "weft_registry_malformed_leases_total",
  "Lease entries in the registry that could not be parsed and were skipped.",
);

/** Decodes registry entries, remembering which bad entries were already reported. */
export class LeaseDecoder {
  #reported = new Set<string>();

  /** Keeps the expiry type: a listed lease decodes to a KnownLease. */
  decode<E extends WatchedExpiry>(r: RegistryLease<E>): Lease<E> | null {
    try {
      return {
        key: r.key,
        subnet: parseSubnetKey(r.key),
        attrs: decodeLeaseValue(r.value),
        expiresAt: r.expiresAt,
        revision: r.revision,
      };
    } catch (e) {
      const id = `${r.key}@${r.revision}`;
      if (!this.#reported.has(id)) {
        this.#reported.add(id);
        if (this.#reported.size > 10_000) this.#reported.clear();
        malformed.inc();
        log.warn(
          "skipping malformed lease {key}: {error}; fix or delete that registry key",
          { key: preview(r.key), error: preview((e as Error).message, 300) },
        );
      }
      return null;
    }
  }

  decodeAll<E extends WatchedExpiry>(rs: RegistryLease<E>[]): Lease<E>[] {
    const out: Lease<E>[] = [];
    for (const r of rs) {
      const l = this.decode(r);
      if (l) out.push(l);
    }
    return out;
  }
}
