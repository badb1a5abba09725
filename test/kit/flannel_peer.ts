/**
 * The kernel entries flanneld's vxlan backend makes for one peer (neighbour, FDB, onlink route,
 * in that order), made by hand with iproute2: a node "in flanneld's shoes" for interop tests.
 *
 * @example
 * ```ts
 * await flannelPeer((...cmd) => c.exec(h3, cmd), {
 *   dev: "flannel.1", subnet: "198.19.5.0/24", gw: "198.19.5.0", mac, dst: "198.18.0.11",
 * });
 * ```
 */

export interface FlannelPeer {
  /** The VTEP: `flannel.<VNI>` or `flannel-v6.<VNI>`. */
  dev: string;
  /** The peer's subnet and its first address (the peer VTEP's address). */
  subnet: string;
  gw: string;
  /** The peer's VTEP MAC and its public address (the FDB destination). */
  mac: string;
  dst: string;
}

/** Adds `p`'s entries on the host `sh` runs commands on (IPv6 when `gw` is an IPv6 address). */
export async function flannelPeer(
  sh: (...cmd: string[]) => Promise<unknown>,
  p: FlannelPeer,
): Promise<void> {
  const fam = p.gw.includes(":") ? ["-6"] : [];
  await sh(
    "ip",
    ...fam,
    "neigh",
    "replace",
    p.gw,
    "lladdr",
    p.mac,
    "dev",
    p.dev,
    "nud",
    "permanent",
  );
  await sh("bridge", "fdb", "replace", p.mac, "dst", p.dst, "dev", p.dev, "self", "permanent");
  await sh("ip", ...fam, "route", "replace", p.subnet, "via", p.gw, "dev", p.dev, "onlink");
}
