/**
 * The external interface and `flannel.1` VTEP the unit tests' fake kernels hold: the backends read
 * them (ifindex, address, MAC) without a real kernel.
 *
 * @example
 * ```ts
 * const ext = extIface("198.18.0.1");          // eth0, ifindex 2
 * const vtep = vtepLink(ext, "02:00:00:00:00:01"); // flannel.1, ifindex 5, VNI 1 on eth0
 * ```
 */
import type { Link } from "../../ffi/libnl/mod.ts";
import type { ExternalInterface } from "../../src/net/iface.ts";

export const EXT_INDEX = 2;
export const VTEP_INDEX = 5;

/** eth0 (ifindex 2) with `ip` as its address and public IP, MTU 1500. */
export function extIface(ip: string): ExternalInterface {
  return { name: "eth0", index: EXT_INDEX, ifaceAddr: ip, publicIP: ip, mtu: 1500 };
}

/** flannel.1 (ifindex 5, VNI 1, port 8472, up, MTU 1450) on `ext`, with VTEP MAC `mac`. */
export function vtepLink(ext: ExternalInterface, mac: string): Link {
  return {
    index: VTEP_INDEX,
    name: "flannel.1",
    kind: "vxlan",
    mtu: 1450,
    up: true,
    mac,
    master: null,
    vxlan: {
      id: 1,
      local: ext.ifaceAddr,
      port: 8472,
      learning: false,
      gbp: false,
      devIndex: ext.index,
    },
  };
}
