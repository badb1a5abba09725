/**
 * libc bindings for weft's userspace datapath: TUN devices, UDP sockets, poll, eventfd and
 * batched datagram I/O. Bindings only; no packet logic lives here.
 *
 * @example
 * ```ts
 * import { openTun, openUdpSocket, PollSet, POLLIN } from "./mod.ts";
 * const tun = openTun("flannel0");
 * ```
 */
export { addressOf, errno, libc, type LibcSymbols, pointerInto } from "./lib.ts";
export { Errno, ErrnoError, errnoName, lastError, strerror } from "./errno.ts";
export {
  closeFd,
  cString,
  O_CLOEXEC,
  O_NONBLOCK,
  O_RDWR,
  openPath,
  readFd,
  setNonBlocking,
  writeFd,
} from "./fd.ts";
export * from "./tun.ts";
export * from "./udp.ts";
export * from "./poll.ts";
export * from "./eventfd.ts";
export * from "./inotify.ts";
export { MsgBatch, SOL_UDP, UDP_GRO, UDP_MAX_SEGMENTS, UDP_SEGMENT } from "./mmsg.ts";
