/**
 * The external interface: the host interface whose address carries overlay traffic and is
 * published in the lease (flannel's --iface / --iface-regex / --iface-can-reach / --public-ip).
 */

export interface ExternalInterface {
  /** Interface name, e.g. "eth0". */
  name: string;
  /** Kernel ifindex. */
  index: number;
  /** The interface's own IPv4 address (tunnel source / bind address). */
  ifaceAddr: string;
  /** Address published in the lease: --public-ip, else ifaceAddr. */
  publicIP: string;
  /** The interface's MTU. */
  mtu: number;
}
