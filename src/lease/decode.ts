/**
 * Turns raw registry entries into Leases, logging each malformed entry once (per key and
 * revision) and skipping it, so one bad value from any writer never stops the agent. A lease
 * with no IPv4 half (flanneld's IPv6-only lease) is skipped quietly unless the decoder serves
 * IPv6 (`{ ipv6: true }`): not ours, not malformed.
 * {@link PeerCheck} does the same for leases that decode but cannot be peers (a bogus PublicIP).
 */
import { getLogger } from "@logtape/logtape";
import type { RegistryLease, WatchedExpiry } from "../registry/contract/registry.ts";
import {
  decodeLeaseValue,
  isIpv6OnlyKey,
  type Lease,
  parseSubnetKey,
  parseSubnetKey6,
  peerProblem,
} from "./codec.ts";
import { metrics } from "../base/metrics.ts";
import { preview } from "../base/preview.ts";

const log = getLogger(["weft", "lease"]);
const malformed = metrics.counter(
  "weft_registry_malformed_leases_total",
  "Lease entries in the registry that could not be parsed and were skipped.",
);

/** Logs and counts each bad lease once per key and revision. */
class BadLeases {
  #reported = new Set<string>();

  report(key: string, revision: number, problem: string) {
    const id = `${key}@${revision}`;
    if (this.#reported.has(id)) return;
    this.#reported.add(id);
    if (this.#reported.size > 10_000) this.#reported.clear();
    malformed.inc();
    // Registry content is hostile: quote it bounded and printable.
    log.warn("skipping malformed lease {key}: {error}; fix or delete that registry key", {
      key: preview(key),
      error: preview(problem, 300),
    });
  }
}

/** Decodes registry entries, remembering which bad entries were already reported. */
export class LeaseDecoder {
  #bad = new BadLeases();

  /** `ipv6`: the config enables IPv6, so IPv6-only leases are decoded too. */
  constructor(readonly opts: { ipv6?: boolean } = {}) {}

  /** Keeps the expiry type: a listed lease decodes to a KnownLease. */
  decode<E extends WatchedExpiry>(r: RegistryLease<E>): Lease<E> | null {
    if (!this.opts.ipv6 && isIpv6OnlyKey(r.key)) return null;
    try {
      const subnet6 = parseSubnetKey6(r.key);
      return {
        key: r.key,
        subnet: parseSubnetKey(r.key),
        ...(subnet6 ? { subnet6 } : {}),
        attrs: decodeLeaseValue(r.value),
        expiresAt: r.expiresAt,
        revision: r.revision,
      };
    } catch (e) {
      this.#bad.report(r.key, r.revision, (e as Error).message);
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

/**
 * The agent's peer filter for addresses ({@link peerProblem}): a lease that decodes but whose
 * public IP no host can have is never a peer, and is logged and counted (in
 * weft_registry_malformed_leases_total) once per key and revision, like a malformed one. Such a
 * lease still holds its subnet for allocation, so the decoder keeps it.
 */
export class PeerCheck {
  #bad = new BadLeases();

  /** `ipv6`: the IPv6 half is served, so its PublicIPv6 is checked too. */
  constructor(readonly ipv6 = false) {}

  usable(l: Lease): boolean {
    const p = peerProblem(l, this.ipv6);
    if (p) this.#bad.report(l.key, l.revision, p);
    return p === null;
  }
}
