/**
 * Opening a Linux TUN device (layer 3, no packet-info header) through /dev/net/tun and
 * TUNSETIFF. The device lives as long as an fd to it is open, unless made persistent.
 *
 * @example
 * ```ts
 * const tun = openTun("flannel0");        // { fd, name: "flannel0" }, fd non-blocking
 * const mq = openTun("wq0", { multiQueue: true }); // open again with the same name for more queues
 * ```
 */
import { closeFd, O_CLOEXEC, O_NONBLOCK, O_RDWR, openPath } from "./fd.ts";
import { lastError } from "./errno.ts";
import { libc } from "./lib.ts";

export const IFF_TUN = 0x0001;
export const IFF_NO_PI = 0x1000;
export const IFF_MULTI_QUEUE = 0x0100;
export const IFF_VNET_HDR = 0x4000;

/** _IOW('T', nr, int) on Linux. */
const iow = (nr: number) => BigInt((1 << 30) | (4 << 16) | (0x54 << 8) | nr);
export const TUNSETIFF = iow(202);
export const TUNSETPERSIST = iow(203);
export const TUNSETOFFLOAD = iow(208);
export const TUNSETVNETHDRSZ = iow(216);

/** Offload bits for TUNSETOFFLOAD (only meaningful with IFF_VNET_HDR). */
export const TUN_F_CSUM = 0x01;
export const TUN_F_TSO4 = 0x02;
export const TUN_F_TSO6 = 0x04;
export const TUN_F_TSO_ECN = 0x08;
export const TUN_F_UFO = 0x10;

const IFNAMSIZ = 16;
const IFREQ_SIZE = 40;

export interface TunOptions {
  /** IFF_MULTI_QUEUE: several fds (queues) on one device. */
  multiQueue?: boolean;
  /** IFF_VNET_HDR: each packet carries a virtio_net_hdr (needed for TUNSETOFFLOAD). */
  vnetHdr?: boolean;
  /** O_NONBLOCK on the fd; default true (the packet loop polls). */
  nonBlocking?: boolean;
}

export interface Tun {
  fd: number;
  /** The name the kernel gave the device (equals the request unless it had a %d). */
  name: string;
}

/** Interface names are at most 15 bytes, no slash or whitespace (a "%d" asks for a number). */
export function checkIfName(name: string): void {
  const bytes = new TextEncoder().encode(name).length;
  if (bytes === 0 || bytes >= IFNAMSIZ || /[\/\s:]/.test(name)) {
    throw new RangeError(
      `"${name}" is not a valid interface name: use 1..15 bytes without "/", ":" or spaces`,
    );
  }
}

/**
 * Opens (creating if needed) TUN device `name` with IFF_TUN|IFF_NO_PI. Throws ErrnoError with a
 * hint: EPERM needs CAP_NET_ADMIN; EBUSY/EINVAL usually means a device of that name exists with
 * other flags (another tool's tap, or multi-queue mismatch) or is held by another process.
 */
export function openTun(name: string, opts: TunOptions = {}): Tun {
  checkIfName(name);
  const nonBlocking = opts.nonBlocking ?? true;
  const fd = openPath(
    "/dev/net/tun",
    O_RDWR | O_CLOEXEC | (nonBlocking ? O_NONBLOCK : 0),
  );
  try {
    const ifr = new Uint8Array(new ArrayBuffer(IFREQ_SIZE)); // off-heap, see lib.ts
    ifr.set(new TextEncoder().encode(name));
    const flags = IFF_TUN | IFF_NO_PI | (opts.multiQueue ? IFF_MULTI_QUEUE : 0) |
      (opts.vnetHdr ? IFF_VNET_HDR : 0);
    new DataView(ifr.buffer).setUint16(IFNAMSIZ, flags, true);
    if (libc().ioctl(fd, TUNSETIFF, Deno.UnsafePointer.of(ifr)) < 0) {
      throw lastError(
        "ioctl",
        `/dev/net/tun, TUNSETIFF, name=${name} flags=0x${flags.toString(16)}`,
        {
          EPERM: "creating a TUN device needs root or CAP_NET_ADMIN",
          EBUSY: `device ${name} is held by another process or exists with other flags; ` +
            `stop that process or delete the device (ip link del ${name})`,
          EINVAL: `device ${name} exists with different flags (tap, or multi-queue mismatch); ` +
            `delete it (ip link del ${name}) and retry`,
        },
      );
    }
    const end = ifr.indexOf(0);
    const actual = new TextDecoder().decode(ifr.subarray(0, end < 0 ? IFNAMSIZ : end));
    return { fd, name: actual };
  } catch (e) {
    closeFd(fd);
    throw e;
  }
}

/** TUNSETOFFLOAD with TUN_F_* bits (device opened with vnetHdr). */
export function setTunOffload(fd: number, flags: number): void {
  const arg = Deno.UnsafePointer.create(BigInt(flags));
  if (libc().ioctl(fd, TUNSETOFFLOAD, arg) < 0) {
    throw lastError("ioctl", `${fd}, TUNSETOFFLOAD, 0x${flags.toString(16)}`);
  }
}

/** TUNSETPERSIST: keep the device after the last fd closes (or not). */
export function setTunPersist(fd: number, persist: boolean): void {
  const arg = Deno.UnsafePointer.create(persist ? 1n : 0n);
  if (libc().ioctl(fd, TUNSETPERSIST, arg) < 0) {
    throw lastError("ioctl", `${fd}, TUNSETPERSIST, ${persist}`);
  }
}
