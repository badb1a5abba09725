/**
 * The vxlan backend's devices: the VTEP `flannel.<VNI>` (and, with IPv6, `flannel-v6.<VNI>` over
 * the IPv6 underlay) with flannel's options and defaults, kept compatible with the config
 * (recreated when it is not), and what the backend owns on a host.
 *
 * @example
 * ```ts
 * const o = vxlanOptions(cfg, ext);
 * const dev = ensureVtep(netlink(), o, ext, randomMac());
 * ```
 */
import { getLogger } from "@logtape/logtape";
import { backendBool, backendNumber, type NetworkConfig } from "../../config/network.ts";
import type { ExternalInterface } from "../../net/iface.ts";
import type { Link, Netlink } from "../../../ffi/libnl/mod.ts";
import { setTxChecksum, txChecksum } from "../../../ffi/libc/ethtool.ts";
import type { Owned } from "../backend.ts";
import { isGatewayRoute } from "../routes.ts";

const log = getLogger(["weft", "vxlan"]);

/** A random locally administered unicast MAC. */
export function randomMac(): string {
  const b = crypto.getRandomValues(new Uint8Array(6));
  b[0] = (b[0] & 0xfe) | 0x02;
  return [...b].map((x) => x.toString(16).padStart(2, "0")).join(":");
}

export interface VxlanOpts {
  /** TX checksum offload on the VTEP; off behind NAT, where it corrupts outer checksums. */
  txChecksum: boolean;
  vni: number;
  port: number;
  learning: boolean;
  gbp: boolean;
  directRouting: boolean;
  /**
   * The IPv4 VTEP's MTU: the underlay's less 50. The underlay MTU is Backend.MTU when set, as
   * flanneld reads it (pkg/backend/vxlan: the MTU the VTEP is derived from, default the external
   * interface's), else the external interface's.
   */
  mtu: number;
  /**
   * The IPv6 VTEP's MTU: the same underlay MTU less 70 (VXLAN over IPv6 costs 70 bytes; flannel
   * subtracts 50 for both devices and loses full-size packets over IPv6).
   */
  mtu6: number;
}

/** The IP family a VTEP carries: `flannel.<VNI>` 4, `flannel-v6.<VNI>` 6. */
export type Family = 4 | 6;

/**
 * Device options from the config's Backend object (flannel's names and defaults). Their rules
 * (ranges, booleans) are checked once, by parseNetworkConfig (config/backend_options.ts).
 */
export function vxlanOptions(cfg: NetworkConfig, ext: ExternalInterface): VxlanOpts {
  const vni = backendNumber(cfg, "VNI", 1);
  const port = backendNumber(cfg, "Port", 0);
  // Behind NAT (published address ≠ interface address) the kernel's offloaded UDP checksum of
  // VXLAN packets comes out wrong and receivers drop them (flannel issue 1279; flanneld leaves
  // operators an ethtool workaround). Off by default there; Backend.TxChecksumOffload decides.
  // IPv6-only: the IPv6 underlay's addresses are the ones published.
  const nat = cfg.enableIPv4 ? ext.publicIP !== ext.ifaceAddr : ext.publicIPv6 !== ext.ifaceAddr6;
  return {
    txChecksum: backendBool(cfg, "TxChecksumOffload", !nat),
    vni,
    port: port || 8472,
    learning: backendBool(cfg, "Learning"),
    gbp: backendBool(cfg, "GBP"),
    directRouting: backendBool(cfg, "DirectRouting"),
    mtu: (backendNumber(cfg, "MTU", 0) || ext.mtu) - 50,
    mtu6: (backendNumber(cfg, "MTU", 0) || ext.mtu) - 70,
  };
}

/** The VTEP's name for a VNI, as flannel names it. */
export const vtepName = (vni: number): string => `flannel.${vni}`;

/** The IPv6 VTEP's name for a VNI, as flannel names it. */
export const vtepName6 = (vni: number): string => `flannel-v6.${vni}`;

/** The VTEP of `family`: its name, underlay address and MTU. */
export function vtepOf(o: VxlanOpts, ext: ExternalInterface, family: Family) {
  return family === 6
    ? { name: vtepName6(o.vni), local: ext.ifaceAddr6 ?? "", mtu: o.mtu6 }
    : { name: vtepName(o.vni), local: ext.ifaceAddr, mtu: o.mtu };
}

/**
 * What the vxlan backend owns on a host: its VTEP (neighbour, FDB entries and routes go with it)
 * and, with DirectRouting, routes via a gateway on the external interface. Without a vxlan
 * config (null, or another type) every `flannel.<N>` VTEP is a leftover of weft's.
 */
export function vxlanOwned(cfg: NetworkConfig | null): Owned {
  const vni = cfg?.backendType === "vxlan" ? backendNumber(cfg, "VNI", 1) : null;
  return {
    owner: "vxlan",
    devices: [{
      names: /^flannel\.\d+$/,
      kind: "vxlan",
      current: vni === null ? null : vtepName(vni),
      otherwise: `the registry's config uses VNI ${vni}`,
      describe: (l) =>
        `${l.name} (vxlan VNI ${l.vxlan?.id ?? l.name.slice("flannel.".length)}) with its ` +
        `neighbour and FDB entries`,
    }, {
      names: /^flannel-v6\.\d+$/,
      kind: "vxlan",
      current: vni === null || !cfg?.enableIPv6 ? null : vtepName6(vni),
      otherwise: `the registry's config uses VNI ${vni}`,
      describe: (l) =>
        `${l.name} (vxlan VNI ${l.vxlan?.id ?? l.name.slice("flannel-v6.".length)}, IPv6) ` +
        `with its neighbour and FDB entries`,
    }],
    routes: isGatewayRoute,
  };
}

/** Whether an existing device has exactly the options the config asks for. */
export function vtepCompatible(
  l: Link,
  o: VxlanOpts,
  ext: ExternalInterface,
  family: Family = 4,
): boolean {
  const v = l.vxlan;
  return l.kind === "vxlan" && !!v && v.id === o.vni &&
    v.local === vtepOf(o, ext, family).local && v.devIndex === ext.index &&
    (v.port || 8472) === o.port && v.learning === o.learning &&
    v.gbp === o.gbp;
}

/**
 * Whether the VTEP made as `known` is still as made: the device of its name has its index, is
 * up, matches the config and holds the own address `own` (a CIDR; null before a lease). False:
 * it was deleted or changed under us.
 */
export function vtepIntact(
  nl: Netlink,
  known: Link,
  o: VxlanOpts,
  ext: ExternalInterface,
  own: string | null,
  family: Family = 4,
): boolean {
  const l = nl.linkByName(vtepOf(o, ext, family).name);
  return !!l && l.index === known.index && l.up && vtepCompatible(l, o, ext, family) &&
    (!own || nl.addrList(l.index, family).some((a) => a.cidr === own));
}

/**
 * The VTEP `flannel.<VNI>` (`family` 6: `flannel-v6.<VNI>`): reuses a compatible device (keeping
 * its MAC) or recreates it with `mac`; sets its MTU, TX checksum offload and state. Returns the
 * device as the kernel has it.
 */
export function ensureVtep(
  nl: Netlink,
  o: VxlanOpts,
  ext: ExternalInterface,
  mac: string,
  family: Family = 4,
): Link {
  const { name, local, mtu } = vtepOf(o, ext, family);
  let l = nl.linkByName(name);
  if (l && !vtepCompatible(l, o, ext, family)) {
    log.warn("device {name} does not match the config (vxlan {v}); recreating it", {
      name,
      v: JSON.stringify(l.vxlan ?? l.kind),
    });
    nl.linkDel(l.index);
    l = null;
  }
  if (!l) {
    l = nl.linkAdd({
      kind: "vxlan",
      name,
      vni: o.vni,
      local,
      devIndex: ext.index,
      port: o.port,
      learning: o.learning,
      gbp: o.gbp,
      mtu,
      mac: mac,
    });
    log.info("created {name} (VNI {vni}, port {port}, MAC {mac}, MTU {mtu})", {
      name,
      vni: o.vni,
      port: o.port,
      mac: mac,
      mtu,
    });
  } else if (l.mtu !== mtu) nl.linkSetMtu(l.index, mtu);
  if (!o.txChecksum && txChecksum(name)) {
    setTxChecksum(name, false);
    log.info("turned TX checksum offload off on {name} (public IP behind NAT, or configured)", {
      name,
    });
  }
  if (!l.up) nl.linkSetUp(l.index);
  return nl.linkByIndex(l.index) ?? l;
}
