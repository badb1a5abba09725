/**
 * errno → a typed error that operators can read: which call failed, with which arguments, the
 * errno name and libc's text, plus a hint on what to do when one is known.
 *
 * @example
 * ```ts
 * const fd = libc().open(cString("/dev/net/tun"), O_RDWR, 0);
 * if (fd < 0) throw lastError("open", "/dev/net/tun", { ENOENT: "load the tun module" });
 * // ErrnoError: open(/dev/net/tun) failed: ENOENT (No such file or directory); load the tun module
 * ```
 */
import { errno, libc } from "./lib.ts";

/** Linux errno numbers (x86-64 and aarch64 share them) by name, for checks in callers. */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EINTR: 4,
  EIO: 5,
  ENXIO: 6,
  E2BIG: 7,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  ENOTDIR: 20,
  EINVAL: 22,
  ENFILE: 23,
  EMFILE: 24,
  ENOTTY: 25,
  ENOSPC: 28,
  EPIPE: 32,
  ERANGE: 34,
  ENAMETOOLONG: 36,
  ENOSYS: 38,
  EBADFD: 77,
  ENOTSOCK: 88,
  EDESTADDRREQ: 89,
  EMSGSIZE: 90,
  EPROTOTYPE: 91,
  ENOPROTOOPT: 92,
  EPROTONOSUPPORT: 93,
  EOPNOTSUPP: 95,
  EAFNOSUPPORT: 97,
  EADDRINUSE: 98,
  EADDRNOTAVAIL: 99,
  ENETDOWN: 100,
  ENETUNREACH: 101,
  ECONNABORTED: 103,
  ECONNRESET: 104,
  ENOBUFS: 105,
  ENOTCONN: 107,
  ETIMEDOUT: 110,
  ECONNREFUSED: 111,
  EHOSTDOWN: 112,
  EHOSTUNREACH: 113,
} as const;

const NAMES = new Map<number, string>(Object.entries(Errno).map(([k, v]) => [v, k]));

/** "EAGAIN" for 11; "errno 200" for numbers without a name here. */
export function errnoName(n: number): string {
  return NAMES.get(n) ?? `errno ${n}`;
}

/** libc's strerror text for `n`. */
export function strerror(n: number): string {
  const p = libc().strerror(n);
  return p ? Deno.UnsafePointerView.getCString(p) : `unknown error ${n}`;
}

/** A failed libc call. `code` is the errno name ("EPERM"), `errno` the number. */
export class ErrnoError extends Error {
  override name = "ErrnoError";
  readonly code: string;
  constructor(
    readonly op: string,
    readonly args: string,
    readonly errno: number,
    hint?: string,
  ) {
    const code = errnoName(errno);
    super(`${op}(${args}) failed: ${code} (${strerror(errno)})${hint ? `; ${hint}` : ""}`);
    this.code = code;
  }
}

/**
 * Builds an ErrnoError from the current errno. `hints` maps errno names to advice for the
 * operator ("run as root or grant CAP_NET_ADMIN").
 */
export function lastError(
  op: string,
  args: string,
  hints?: Partial<Record<keyof typeof Errno, string>>,
): ErrnoError {
  const n = errno();
  const name = errnoName(n) as keyof typeof Errno;
  return new ErrnoError(op, args, n, hints?.[name]);
}
