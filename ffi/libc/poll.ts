/**
 * poll(2) over a fixed set of fds with a preallocated pollfd array, so a packet loop can wait
 * without allocating. wait() is sync: call it from a Worker, never from the main thread;
 * waitAsync() may be awaited anywhere.
 *
 * @example
 * ```ts
 * const ps = new PollSet([tunFd, wakeFd], POLLIN);
 * if (ps.wait(50) > 0 && (ps.revents(0) & POLLIN)) drainTun();
 * ```
 */
import { Errno, lastError } from "./errno.ts";
import { errno, libc } from "./lib.ts";

export const POLLIN = 0x1;
export const POLLOUT = 0x4;
export const POLLERR = 0x8;
export const POLLHUP = 0x10;
export const POLLNVAL = 0x20;

export class PollSet {
  readonly #buf: Uint8Array<ArrayBuffer>;
  readonly #view: DataView;
  readonly #ptr: Deno.PointerObject;
  readonly #n: bigint;
  readonly fds: readonly number[];

  /** `events` applies to every fd unless a per-fd array is given. */
  constructor(fds: number[], events: number | number[]) {
    this.fds = [...fds];
    // Large enough that V8 keeps it off-heap, so the pointer below stays valid.
    this.#buf = new Uint8Array(Math.max(256, fds.length * 8));
    this.#view = new DataView(this.#buf.buffer);
    fds.forEach((fd, i) => {
      this.#view.setInt32(i * 8, fd, true);
      this.#view.setInt16(i * 8 + 4, Array.isArray(events) ? events[i] : events, true);
    });
    this.#ptr = Deno.UnsafePointer.of(this.#buf)!;
    this.#n = BigInt(fds.length);
  }

  /** Changes the events asked for fd number `i`. */
  setEvents(i: number, events: number): void {
    this.#view.setInt16(i * 8 + 4, events, true);
  }

  /**
   * Waits up to `timeoutMs` (-1: forever); returns how many fds have events, 0 on timeout or
   * EINTR. Throws ErrnoError on other failures.
   */
  wait(timeoutMs: number): number {
    const n = libc().poll(this.#ptr, this.#n, timeoutMs);
    if (n >= 0) return n;
    if (errno() === Errno.EINTR) return 0;
    throw lastError("poll", `fds=[${this.fds.join(",")}], ${timeoutMs} ms`);
  }

  /**
   * wait() on a thread of Deno's blocking pool: the isolate runs on while it waits, and an idle
   * wait costs no CPU. Resolves to the count of fds with events; 0 on timeout, and on any
   * failure (that thread's errno cannot be read): callers treat 0 as "look again". One call at
   * a time per set (the results share its buffer).
   */
  async waitAsync(timeoutMs: number): Promise<number> {
    const n = await libc().pollAsync(this.#ptr, this.#n, timeoutMs);
    return n > 0 ? n : 0;
  }

  /** The returned events of fd number `i` after wait(). */
  revents(i: number): number {
    return this.#view.getInt16(i * 8 + 6, true);
  }
}
