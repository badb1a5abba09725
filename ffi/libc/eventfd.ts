/**
 * eventfd(2) as a wake-up line into a thread blocked in poll(): signal() makes the fd readable,
 * drain() resets it.
 *
 * @example
 * ```ts
 * const wake = openEventFd();
 * signalEventFd(wake); // another thread's poll() on `wake` returns now
 * drainEventFd(wake);
 * closeFd(wake);
 * ```
 */
import { Errno, lastError } from "./errno.ts";
import { errno, libc } from "./lib.ts";

export const EFD_NONBLOCK = 0x800;
export const EFD_CLOEXEC = 0x80000;

/** A non-blocking eventfd with counter 0. */
export function openEventFd(): number {
  const fd = libc().eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) throw lastError("eventfd", "0, EFD_NONBLOCK|EFD_CLOEXEC");
  return fd;
}

// Per-isolate scratch: 8 bytes are the eventfd's unit of I/O.
const one = new BigUint64Array(32);
one[0] = 1n;
const sink = new BigUint64Array(32);

/** Adds 1 to the counter (the fd becomes readable). */
export function signalEventFd(fd: number): void {
  if (libc().write(fd, Deno.UnsafePointer.of(one), 8n) < 0 && errno() !== Errno.EAGAIN) {
    throw lastError("write", `eventfd ${fd}`);
  }
}

/** Resets the counter to 0; returns the value it had. */
export function drainEventFd(fd: number): number {
  if (libc().read(fd, Deno.UnsafePointer.of(sink), 8n) < 0) {
    if (errno() === Errno.EAGAIN) return 0;
    throw lastError("read", `eventfd ${fd}`);
  }
  return Number(sink[0]);
}
