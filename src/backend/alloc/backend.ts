/**
 * The `alloc` backend (as in flannel): leases a subnet and programs nothing. Useful when another
 * component owns the datapath, and for exercising the control plane alone.
 */
import type { Backend, BackendContext, BackendPrepared, Owned } from "../backend.ts";
import type { PeerEvent } from "../../lease/watch.ts";
import type { Lease } from "../../lease/codec.ts";

/** alloc owns nothing on a host. */
export function allocOwned(): Owned {
  return { owner: "alloc" };
}

export class AllocBackend implements Backend {
  readonly name = "alloc";
  /** It programs nothing, for either family: a dual-stack lease is all it needs. */
  readonly servesIpv6 = true;
  /** Peers as the backend was last told, so tests and metrics can see what it would program. */
  readonly peers = new Map<string, Lease>();

  prepare(ctx: BackendContext): Promise<BackendPrepared> {
    return Promise.resolve({ attrs: { backendType: "alloc" }, mtu: ctx.ext.mtu });
  }
  start(_own: Lease): Promise<void> {
    return Promise.resolve();
  }
  reconcile(peers: Lease[]): Promise<void> {
    this.peers.clear();
    for (const p of peers) this.peers.set(p.key, p);
    return Promise.resolve();
  }
  apply(events: PeerEvent[]): Promise<void> {
    for (const e of events) {
      if (e.type === "added") this.peers.set(e.lease.key, e.lease);
      else this.peers.delete(e.lease.key);
    }
    return Promise.resolve();
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}
