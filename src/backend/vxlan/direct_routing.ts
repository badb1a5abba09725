/**
 * The DirectRouting choice: a peer whose public IP is on the external interface's L2 segment
 * (the kernel's route to it has no gateway and leaves by that interface) gets a plain route via
 * that IP instead of the VTEP's neighbour, FDB entry and onlink route. The answer per IP is kept
 * until {@link DirectRouting.clear} (each full reconcile), so a batch of events asks the kernel
 * once per peer.
 *
 * @example
 * ```ts
 * const direct = new DirectRouting(nl, o.directRouting, ext.index);
 * direct.via("198.18.0.7"); // true when 198.18.0.7 is on-link on ext
 * ```
 */
import type { Netlink } from "../../../ffi/libnl/mod.ts";

export class DirectRouting {
  /** Whether a public IP is on the external interface's L2 segment. */
  #onLink = new Map<string, boolean>();

  /**
   * `enabled`: the config's Backend.DirectRouting; `ext`: the external interface's ifindex, the
   * device direct routes leave by.
   */
  constructor(readonly nl: Netlink, readonly enabled: boolean, readonly ext: number) {}

  /** Whether the peer at `publicIP` is routed directly (DirectRouting on and it is on-link). */
  via(publicIP: string): boolean {
    if (!this.enabled) return false;
    let v = this.#onLink.get(publicIP);
    if (v === undefined) {
      try {
        const r = this.nl.routeGet(publicIP);
        v = r.gw === null && r.dev === this.ext;
      } catch {
        v = false;
      }
      this.#onLink.set(publicIP, v);
    }
    return v;
  }

  /** Forgets every answer (the underlay may have changed). */
  clear(): void {
    this.#onLink.clear();
  }
}
