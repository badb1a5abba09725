/**
 * File descriptor basics: open, close, non-blocking mode and one-shot read/write for control
 * paths and tests (the packet loop calls `libc().read/write` directly with cached pointers).
 *
 * @example
 * ```ts
 * const fd = openPath("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
 * setNonBlocking(fd, true);
 * closeFd(fd);
 * ```
 */
import { errno, libc } from "./lib.ts";
import { Errno, lastError } from "./errno.ts";

export const O_RDWR = 0x2;
export const O_NONBLOCK = 0x800;
export const O_CLOEXEC = 0x80000;
const F_GETFL = 3;
const F_SETFL = 4;

/** NUL-terminated bytes of `s` for `char*` parameters. */
export function cString(s: string): Uint8Array<ArrayBuffer> {
  const b = new TextEncoder().encode(s);
  const out = new Uint8Array(b.length + 1);
  out.set(b);
  return out;
}

/** open(2); throws ErrnoError naming the path. */
export function openPath(path: string, flags: number, mode = 0): number {
  const fd = libc().open(cString(path), flags, mode);
  if (fd < 0) throw lastError("open", `${path}, 0x${flags.toString(16)}`);
  return fd;
}

/** close(2); throws ErrnoError (EBADF means the fd was already closed: a bug in the caller). */
export function closeFd(fd: number): void {
  if (libc().close(fd) < 0) throw lastError("close", String(fd));
}

/** Sets or clears O_NONBLOCK. */
export function setNonBlocking(fd: number, on: boolean): void {
  const c = libc();
  const fl = c.fcntl(fd, F_GETFL, 0n);
  if (fl < 0) throw lastError("fcntl", `${fd}, F_GETFL`);
  const next = on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK;
  if (next !== fl && c.fcntl(fd, F_SETFL, BigInt(next)) < 0) {
    throw lastError("fcntl", `${fd}, F_SETFL, 0x${next.toString(16)}`);
  }
}

/**
 * read(2) into `buf`; returns the byte count, or null when a non-blocking fd has nothing
 * (EAGAIN). Retries EINTR.
 */
export function readFd(fd: number, buf: Uint8Array<ArrayBuffer>): number | null {
  const c = libc();
  for (;;) {
    const n = c.read(fd, Deno.UnsafePointer.of(buf), BigInt(buf.byteLength));
    if (n >= 0) return n;
    const e = errno();
    if (e === Errno.EINTR) continue;
    if (e === Errno.EAGAIN) return null;
    throw lastError("read", `${fd}, ${buf.byteLength} bytes`);
  }
}

/** write(2) of all of `buf` as one call (one packet on a TUN fd); returns the byte count. */
export function writeFd(fd: number, buf: Uint8Array<ArrayBuffer>): number {
  const c = libc();
  for (;;) {
    const n = c.write(fd, Deno.UnsafePointer.of(buf), BigInt(buf.byteLength));
    if (n >= 0) return n;
    if (errno() === Errno.EINTR) continue;
    throw lastError("write", `${fd}, ${buf.byteLength} bytes`);
  }
}
