/**
 * The seam between the agent and a datapath. The agent owns leases; a backend turns its own lease
 * and its peers' leases into kernel (or userspace) state. Backends receive plain lease data and
 * never talk to the registry.
 *
 * Each backend (and each agent part: iptables, the blackhole route) also declares what it owns on
 * a host, as an {@link Owned}, so `weft cleanup` removes exactly that without knowing any device
 * name or route rule itself.
 */
import type { NetworkConfig } from "../config/network.ts";
import type { Ipv4Net } from "../base/ipv4.ts";
import type { Ipv6Net } from "../base/ipv6.ts";
import type { Lease, LeaseAttrs } from "../lease/codec.ts";
import type { PeerEvent } from "../lease/watch.ts";
import type { ExternalInterface } from "../net/iface.ts";
import type { Link, Route } from "../../ffi/libnl/mod.ts";

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
  /**
   * Whether it programs the IPv6 half of leases (EnableIPv6); the agent refuses a dual-stack
   * config for a backend without it rather than serve IPv4 only without a word.
   */
  readonly servesIpv6?: boolean;
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

/** One kind of device an owner creates. Routes, neighbours and FDB entries on it go with it. */
export interface OwnedDevice {
  /** Every name the owner gives such a device, under any config (`flannel.<VNI>`). */
  names: RegExp;
  /** Its link kind; a device of another kind with such a name is someone else's. */
  kind: string;
  /** The one name the current config uses; null when unknown: then every match is the owner's. */
  current: string | null;
  /** Why a match other than `current` is left, e.g. "the registry's config uses VNI 1". */
  otherwise?: string;
  /** How a device is shown when removed: "flannel.1 (vxlan VNI 1) with its ... entries". */
  describe(l: Link): string;
}

/** What a route predicate may look at: the cluster network, the own subnet, the external iface. */
export interface RouteScope {
  network: Ipv4Net;
  /** This node's subnet, when known (its routes are the CNI bridge's, never an owner's). */
  own: Ipv4Net | null;
  /** The external interface's ifindex, when known. */
  ext: number | null;
  /** The config's SubnetLen (else the own subnet's prefix), when known: a lease's size. */
  subnetLen: number | null;
  /** The IPv6 side, when IPv6 is on (routes of the IPv6 family are judged against these). */
  network6?: Ipv6Net | null;
  own6?: Ipv6Net | null;
  subnetLen6?: number | null;
}

/** Where an owner's removal reports: each thing removed (or, in a dry run, to be removed). */
export interface CleanupReport {
  readonly dryRun: boolean;
  did(what: string): void;
  note(what: string): void;
  fail(what: string): void;
}

/** The kernel (and other host) state one backend or part owns: what `weft cleanup` removes. */
export interface Owned {
  /** The owner, for messages ("vxlan", "iptables"). */
  owner: string;
  devices?: OwnedDevice[];
  /**
   * Its routes that are not on one of its devices (those go with the device anyway), e.g.
   * host-gw's via a gateway on the external interface. Asked only when the network is known.
   */
  routes?(r: Route, scope: RouteScope): boolean;
  /** Removes state that is neither a device nor a route (iptables chains); reports, never throws. */
  remove?(rep: CleanupReport): Promise<void>;
}
