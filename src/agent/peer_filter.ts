/**
 * Which leases the agent programs as peers: of its backend's type, a SubnetLen subnet of the
 * network, not naming this node's own public IP, with usable addresses. Each rejection is logged
 * once per lease (and bad addresses counted), so one bad lease never floods the log.
 *
 * @example
 * ```ts
 * const filter = new PeerFilter(cfg, "vxlan", "198.18.0.11");
 * const peers = leases.filter((l) => filter.accept(l));
 * ```
 */
import { getLogger } from "@logtape/logtape";
import { formatCidr } from "../base/ipv4.ts";
import { formatCidr6 } from "../base/ipv6.ts";
import type { NetworkConfig } from "../config/network.ts";
import { isPeerSubnet, isPeerSubnet6, nodeAddress } from "../lease/allocate.ts";
import { type Lease, leaseAddressText, leaseMatches } from "../lease/codec.ts";
import { PeerCheck } from "../lease/decode.ts";

const log = getLogger(["weft", "agent"]);

export class PeerFilter {
  /** Keys already reported, per reason. */
  #misfits = new Set<string>();
  #selfLeases = new Set<string>();
  /**
   * Peers' addresses must be usable unicast ones (logged and counted once per bad lease), for
   * each family the config enables.
   */
  #peerCheck: PeerCheck;

  /** `publicIP`: this node's address (PublicIPv6 in an IPv6-only network). */
  constructor(
    readonly cfg: NetworkConfig,
    readonly backendName: string,
    readonly publicIP: string,
  ) {
    this.#peerCheck = new PeerCheck(cfg.enableIPv6);
  }

  accept(l: Lease): boolean {
    return leaseMatches(this.backendName, l) && this.#fits(l) && this.#notSelf(l) &&
      this.#peerCheck.usable(l);
  }

  /**
   * Peer leases whose subnet could not have come from this network are never programmed.
   * SubnetMin/SubnetMax do not apply: they bound allocation, not peers. In an IPv6-only network
   * the IPv6 half is the one that must fit.
   */
  #fits(l: Lease): boolean {
    const v6 = this.cfg.enableIPv4 ? null : this.cfg.ipv6!;
    if (v6 ? !!l.subnet6 && isPeerSubnet6(this.cfg, l.subnet6) : isPeerSubnet(this.cfg, l.subnet)) {
      return true;
    }
    if (!this.#misfits.has(l.key)) {
      this.#misfits.add(l.key);
      log.warn(
        "ignoring lease {key} of {ip}: not a /{len} subnet of {net}; delete it or fix the config",
        {
          key: l.key,
          ip: leaseAddressText(l),
          len: v6 ? v6.subnetLen : this.cfg.subnetLen,
          net: v6 ? formatCidr6(v6.network) : formatCidr(this.cfg.network),
        },
      );
    }
    return false;
  }

  /**
   * A lease naming this node's own public IP is never a peer (a stale or foreign lease with our
   * address, or our old subnet after a move): programmed as one it would route a subnet at us.
   * The watcher never offers our own current lease as a peer. `publicIP` is PublicIPv6 in an
   * IPv6-only network (every IPv6-only lease says "PublicIP":"0.0.0.0").
   */
  #notSelf(l: Lease): boolean {
    if (nodeAddress(this.cfg, l.attrs) !== this.publicIP) return true;
    if (!this.#selfLeases.has(l.key)) {
      this.#selfLeases.add(l.key);
      log.warn(
        "ignoring lease {key}: it names this node's public IP {ip} but is not this node's lease; " +
          "delete it if stale (weft leases shows it), or give each node its own --public-ip",
        { key: l.key, ip: this.publicIP },
      );
    }
    return false;
  }
}
