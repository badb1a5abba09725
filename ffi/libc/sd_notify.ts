/**
 * libc calls for sending one datagram on an AF_UNIX socket (systemd's sd_notify protocol):
 * `socket`, `sendto` and `close`, taken from the one libc handle in lib.ts, and the AF_UNIX
 * constants (the socket constants shared with UDP and errno come from udp.ts and lib.ts through
 * mod.ts). Bindings only; src/ops/sdnotify.ts builds the address and the message. FFI is used because Deno has no stable
 * unix datagram API and none at all for abstract socket names ("@..."), which systemd may hand
 * out in $NOTIFY_SOCKET.
 *
 * @example
 * ```ts
 * import { sdNotifyLibc } from "./sd_notify.ts";
 * const c = sdNotifyLibc();
 * const fd = c.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
 * ```
 */
import { libc } from "./lib.ts";

export const AF_UNIX = 1;
export const MSG_NOSIGNAL = 0x4000;
/** sizeof(struct sockaddr_un) on Linux: sa_family_t (2 bytes) + sun_path[108]. */
export const SOCKADDR_UN_SIZE = 110;

/** The calls sd_notify needs, with buffers (not pointers) for the message and the address. */
export interface SdNotifyLibc {
  socket(domain: number, type: number, protocol: number): number;
  /** ssize_t sendto(fd, buf, len, flags, addr, addrlen). */
  sendto(
    fd: number,
    buf: Uint8Array,
    len: bigint,
    flags: number,
    addr: Uint8Array,
    addrLen: number,
  ): number;
  close(fd: number): number;
}

/** The libc calls; throws when FFI is not permitted (--allow-ffi) or libc.so.6 is missing. */
export function sdNotifyLibc(): SdNotifyLibc {
  const c = libc();
  return {
    socket: (domain, type, protocol) => c.socket(domain, type, protocol),
    sendto: (fd, buf, len, flags, addr, addrLen) =>
      c.sendto(fd, Deno.UnsafePointer.of(buf), len, flags, Deno.UnsafePointer.of(addr), addrLen),
    close: (fd) => c.close(fd),
  };
}
