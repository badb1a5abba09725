/**
 * The udp backend's peer table. All leases share the network's SubnetLen, so a destination's
 * subnet is `dst >>> (32 - subnetLen)`: a small integer (V8 keeps it unboxed) used as the key of
 * one Map lookup per packet. The table also holds the set of peer public IPs that datagrams are
 * accepted from.
 *
 * @example
 * ```ts
 * const t = new PeerTable(24);
 * t.replace(peerEntries([{ subnet: parseCidr("198.19.2.0/24"), publicIP: "198.18.0.2" }], 24));
 * t.lookup(parseIp("198.19.2.7")); // parseIp("198.18.0.2")
 * t.isMember(parseIp("198.18.0.9")); // false
 * t.update([], peerEntries([{ subnet: parseCidr("198.19.3.0/24"), publicIP: "198.18.0.9" }], 24));
 * ```
 */
import { formatCidr, type Ipv4Net, maskOf, parseIp } from "../../base/ipv4.ts";

/** A remote node: its lease's subnet and the public IP its udp socket listens on. */
export interface Peer {
  subnet: Ipv4Net;
  publicIP: string;
}

/** Peer in the form sent to the packet workers: subnet network address and public IP. */
export interface PeerEntry {
  net: number;
  ip: number;
}

/** Checks a SubnetLen for the table (1..32). */
export function checkSubnetLen(subnetLen: number): void {
  if (!Number.isInteger(subnetLen) || subnetLen < 1 || subnetLen > 32) {
    throw new RangeError(`subnetLen ${subnetLen} must be an integer in 1..32`);
  }
}

/**
 * Converts peers to entries, checking each: its subnet must have the network's SubnetLen
 * (flannel leases all do) and its public IP must be IPv4 text. Throws RangeError naming the
 * offending peer.
 */
export function peerEntries(peers: readonly Peer[], subnetLen: number): PeerEntry[] {
  checkSubnetLen(subnetLen);
  return peers.map((p) => {
    if (p.subnet.prefix !== subnetLen) {
      throw new RangeError(
        `peer subnet ${formatCidr(p.subnet)} (public IP ${p.publicIP}) has prefix ` +
          `${p.subnet.prefix} but the network's SubnetLen is ${subnetLen}; ` +
          "its lease does not belong to this network config",
      );
    }
    let ip: number;
    try {
      ip = parseIp(p.publicIP);
    } catch {
      throw new RangeError(
        `peer ${formatCidr(p.subnet)} has public IP "${p.publicIP}", which is not IPv4`,
      );
    }
    return { net: (p.subnet.ip & maskOf(subnetLen)) >>> 0, ip };
  });
}

export class PeerTable {
  readonly #shift: number;
  #bySubnet = new Map<number, number>();
  /** Public IPs datagrams are accepted from, with how many subnets name each. */
  #members = new Map<number, number>();

  constructor(readonly subnetLen: number) {
    checkSubnetLen(subnetLen);
    this.#shift = 32 - subnetLen;
  }

  /** Replaces the whole table (a full reconcile; single changes go through {@link update}). */
  replace(entries: readonly PeerEntry[]): void {
    this.#bySubnet = new Map();
    this.#members = new Map();
    this.update([], entries);
  }

  /**
   * Applies one change in place: the subnets of `remove` leave first, then `add` go in (a lease
   * that changed is in both). O(change), so a peer event costs the same with 5000 peers as with 5.
   */
  update(remove: readonly PeerEntry[], add: readonly PeerEntry[]): void {
    for (const e of remove) {
      const k = this.key(e.net);
      const ip = this.#bySubnet.get(k);
      if (ip === undefined) continue;
      this.#bySubnet.delete(k);
      this.#release(ip);
    }
    for (const e of add) {
      const k = this.key(e.net);
      const old = this.#bySubnet.get(k);
      if (old !== undefined) this.#release(old);
      const ip = e.ip >>> 0;
      this.#bySubnet.set(k, ip);
      this.#members.set(ip, (this.#members.get(ip) ?? 0) + 1);
    }
  }

  #release(ip: number): void {
    const n = (this.#members.get(ip) ?? 0) - 1;
    if (n > 0) this.#members.set(ip, n);
    else this.#members.delete(ip);
  }

  /** Lookup key of an address: its subnet number within the address space. */
  key(addr: number): number {
    // subnetLen 32 gives shift 0: `>>> 0` then keeps the full address (boxed, still correct).
    return addr >>> this.#shift;
  }

  /** Public IP of the peer owning `dst`, or -1 when none does. */
  lookup(dst: number): number {
    return this.#bySubnet.get(dst >>> this.#shift) ?? -1;
  }

  /** Whether datagrams from `ip` are accepted. */
  isMember(ip: number): boolean {
    return this.#members.has(ip);
  }

  get size(): number {
    return this.#bySubnet.size;
  }
}
