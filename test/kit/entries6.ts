/**
 * A host's IPv6 peer entries as iproute2 prints them ({@link entries6}) and the exact entries a
 * host must hold for its peers ({@link wantEntries6}): the dual-stack and IPv6-only e2e tests
 * compare the two. Routes are weft's (proto 87) IPv6 routes; vxlan adds, on `flannel-v6.1`, one
 * permanent neighbour and one FDB entry per peer (none with DirectRouting, where every host shares
 * one link and the routes go via the peers' PublicIPv6).
 *
 * @example
 * ```ts
 * const peers = c.hosts.map((h, i) => ({ host: h, subnet6: envs[i].ipv6!.subnet, mac6: macs[i] }));
 * assert.deepEqual(await entries6(c, h1), wantEntries6(h1, peers, { vxlan: true }));
 * ```
 */
import { formatCidr6, formatIp6, type Ipv6Net } from "../../src/base/ipv6.ts";
import type { Cluster, Host } from "./cluster.ts";

/** The IPv6 VTEP of VNI 1, as flannel names it. */
export const VTEP6 = "flannel-v6.1";

/** Sorted, trimmed lines; neighbour and FDB entries are null when the host has no VTEP6. */
export interface Entries6 {
  routes: string[];
  neigh: string[] | null;
  fdb: string[] | null;
}

/** A peer as the wanted entries name it: its host, IPv6 subnet and IPv6 VTEP MAC (vxlan). */
export interface Peer6 {
  host: Host;
  subnet6: Ipv6Net;
  mac6?: string;
}

const lines = (text: string) => text.trim().split("\n").filter(Boolean).map((x) => x.trim()).sort();

/** `h`'s weft IPv6 routes and, when it has {@link VTEP6}, its permanent neighbours and FDB. */
export async function entries6(c: Cluster, h: Host): Promise<Entries6> {
  const routes = lines(await c.exec(h, ["ip", "-6", "route", "show", "proto", "87"]));
  if ((await c.run(h, ["ip", "link", "show", VTEP6])).code !== 0) {
    return { routes, neigh: null, fdb: null };
  }
  const neigh = lines(
    await c.exec(h, ["ip", "-6", "neigh", "show", "dev", VTEP6, "nud", "permanent"]),
  );
  const fdb = lines(await c.exec(h, ["bridge", "fdb", "show", "dev", VTEP6]))
    .filter((x) => x.includes(" dst "));
  return { routes, neigh, fdb };
}

/**
 * What `h` must hold for `peers` (`h` itself is skipped): host-gw (`vxlan` false) routes via each
 * peer's PublicIPv6 on eth0 and no VTEP6; vxlan an onlink route via the peer subnet's first
 * address on VTEP6 with its neighbour and FDB entry, or with `direct` (DirectRouting, one link)
 * the host-gw route and no neighbour or FDB entry.
 */
export function wantEntries6(
  h: Host,
  peers: Peer6[],
  o: { vxlan: boolean; direct?: boolean },
): Entries6 {
  const others = peers.filter((p) => p.host !== h);
  const viaVtep = o.vxlan && !o.direct;
  return {
    routes: others.map((p) =>
      viaVtep
        ? `${formatCidr6(p.subnet6)} via ${formatIp6(p.subnet6.ip)} dev ${VTEP6} metric 1024 ` +
          `onlink pref medium`
        : `${formatCidr6(p.subnet6)} via ${p.host.ip6} dev eth0 metric 1024 pref medium`
    ).sort(),
    neigh: !o.vxlan
      ? null
      : others.filter(() => viaVtep).map((p) =>
        `${formatIp6(p.subnet6.ip)} lladdr ${p.mac6} PERMANENT`
      ).sort(),
    fdb: !o.vxlan
      ? null
      : others.filter(() => viaVtep).map((p) => `${p.mac6} dst ${p.host.ip6} self permanent`)
        .sort(),
  };
}
