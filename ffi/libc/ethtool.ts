/**
 * The one ethtool operation weft needs: read or switch a device's TX checksum offload
 * (`ethtool -K <dev> tx on|off`), through `ioctl(SIOCETHTOOL)` with the legacy
 * ETHTOOL_GTXCSUM/ETHTOOL_STXCSUM commands, which the kernel maps onto all TX checksum features.
 *
 * @example
 * ```ts
 * if (txChecksum("flannel.1")) setTxChecksum("flannel.1", false);
 * ```
 */
import { addressOf, libc, pointerInto } from "./lib.ts";
import { lastError } from "./errno.ts";
import { AF_INET, SOCK_DGRAM } from "./udp.ts";

const SIOCETHTOOL = 0x8946n;
const ETHTOOL_GTXCSUM = 0x16;
const ETHTOOL_STXCSUM = 0x17;
const IFNAMSIZ = 16;

function ethtool(dev: string, cmd: number, data: number): number {
  const name = new TextEncoder().encode(dev);
  if (name.length >= IFNAMSIZ) throw new RangeError(`device name "${dev}" is too long`);
  // Off-heap backing stores: V8 may keep (and move) tiny typed arrays on its heap, and the
  // kernel reads `value` through a pointer stored inside `ifr`.
  const value = new Uint32Array(new ArrayBuffer(8)); // struct ethtool_value { u32 cmd; u32 data; }
  value[0] = cmd;
  value[1] = data;
  const ifr = new Uint8Array(new ArrayBuffer(40)); // struct ifreq: name, then the ifr_data pointer
  ifr.set(name);
  new DataView(ifr.buffer).setBigUint64(IFNAMSIZ, addressOf(value), true);
  const c = libc();
  const fd = c.socket(AF_INET, SOCK_DGRAM, 0);
  if (fd < 0) throw lastError("socket", "AF_INET, SOCK_DGRAM");
  try {
    if (c.ioctl(fd, SIOCETHTOOL, pointerInto(ifr, 0)) < 0) {
      throw lastError("ioctl(SIOCETHTOOL)", `${dev}, cmd ${cmd}`, {
        EPERM: "run as root or grant CAP_NET_ADMIN",
        ENODEV: `no device named ${dev}`,
      });
    }
    return value[1];
  } finally {
    c.close(fd);
  }
}

/** Whether TX checksum offload is on for `dev`. */
export function txChecksum(dev: string): boolean {
  return ethtool(dev, ETHTOOL_GTXCSUM, 0) !== 0;
}

/** Switches TX checksum offload for `dev` (`ethtool -K dev tx on|off`). */
export function setTxChecksum(dev: string, on: boolean): void {
  ethtool(dev, ETHTOOL_STXCSUM, on ? 1 : 0);
}
