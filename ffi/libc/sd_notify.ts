/**
 * libc bindings for sending one datagram on an AF_UNIX socket (systemd's sd_notify protocol):
 * `socket`, `sendto`, `close` and `__errno_location`. Bindings only; src/ops/sdnotify.ts builds
 * the address and the message. FFI is used because Deno has no stable unix datagram API and none
 * at all for abstract socket names ("@..."), which systemd may hand out in $NOTIFY_SOCKET.
 *
 * @example
 * ```ts
 * import { sdNotifyLibc } from "./sd_notify.ts";
 * const c = sdNotifyLibc();
 * const fd = c.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
 * ```
 */

export const AF_UNIX = 1;
export const SOCK_DGRAM = 2;
export const SOCK_CLOEXEC = 0o2000000;
export const MSG_DONTWAIT = 0x40;
export const MSG_NOSIGNAL = 0x4000;
/** sizeof(struct sockaddr_un) on Linux: sa_family_t (2 bytes) + sun_path[108]. */
export const SOCKADDR_UN_SIZE = 110;

const SYMBOLS = {
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  // ssize_t sendto(int fd, const void *buf, size_t len, int flags,
  //                const struct sockaddr *addr, socklen_t addrlen)
  sendto: { parameters: ["i32", "buffer", "usize", "i32", "buffer", "u32"], result: "isize" },
  close: { parameters: ["i32"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

export type SdNotifyLibc = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

let lib: SdNotifyLibc | null = null;

/** Opens libc once; throws when FFI is not permitted (--allow-ffi) or libc.so.6 is missing. */
export function sdNotifyLibc(): SdNotifyLibc {
  if (!lib) lib = Deno.dlopen("libc.so.6", SYMBOLS).symbols;
  return lib;
}

/** errno of the last failed call on this thread. */
export function errno(): number {
  const p = sdNotifyLibc().__errno_location();
  return p ? new Deno.UnsafePointerView(p).getInt32() : 0;
}
