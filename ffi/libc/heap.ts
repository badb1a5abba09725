/**
 * The C heap in use, so tests can prove that objects allocated by C libraries (libnl's routes,
 * links, addresses) are freed again.
 *
 * @example
 * ```ts
 * import { heapInUse } from "./heap.ts";
 * const before = heapInUse();
 * ```
 */
import { libc } from "./lib.ts";

/**
 * Bytes currently allocated with malloc in the main arena (`mallinfo2().uordblks`). Calls made
 * through FFI run on the main thread, so libnl's allocations land in the main arena.
 */
export function heapInUse(): number {
  const raw = libc().mallinfo2() as Uint8Array;
  const v = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  return Number(v.getBigUint64(7 * 8, true));
}
