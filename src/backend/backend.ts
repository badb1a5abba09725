/**
 * The seam between the agent and a datapath. The agent owns leases; a backend turns its own lease
 * and its peers' leases into kernel (or userspace) state. Backends receive plain lease data and
 * never talk to the registry.
 */
import type { NetworkConfig } from "../config/network.ts";
import type { Lease, LeaseAttrs } from "../lease/codec.ts";
import type { PeerEvent } from "../lease/watch.ts";
import type { ExternalInterface } from "../net/iface.ts";

export interface BackendContext {
  config: NetworkConfig;
  ext: ExternalInterface;
  /** This node's lease from before a restart, if the registry still has it (VTEP MAC reuse). */
  previous: Lease | null;
}

/** What a backend publishes in the lease and tells CNI through subnet.env. */
export interface BackendPrepared {
  /** Lease attrs without PublicIP (the agent fills it in). */
  attrs: Omit<LeaseAttrs, "publicIP">;
  /** MTU for pods (FLANNEL_MTU). */
  mtu: number;
}

export interface Backend {
  /** Backend name as in the config's Backend.Type ("vxlan", "host-gw", "udp", "alloc"). */
  readonly name: string;
  /** Creates or adopts devices; called before the lease is acquired. */
  prepare(ctx: BackendContext): Promise<BackendPrepared>;
  /** The node holds `own`: give devices their addresses and routes for it. */
  start(own: Lease): Promise<void>;
  /**
   * Makes the datapath match exactly `peers` (all current peer leases of this backend's type):
   * installs what is missing and removes stale entries. Called at start and after a re-list.
   */
  reconcile(peers: Lease[]): Promise<void>;
  /** Applies incremental peer changes, in order, batched. */
  apply(events: PeerEvent[]): Promise<void>;
  /**
   * Periodic self-check (device deleted under us, routes removed by hand); repairs and returns
   * true when it had to repair. Optional.
   */
  check?(): Promise<boolean>;
  /** Stops loops and releases handles; leaves the kernel datapath in place. */
  close(): Promise<void>;
}
