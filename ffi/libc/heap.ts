/**
 * The C heap: how much is in use, so tests can prove that objects allocated by C libraries
 * (libnl's routes, links, addresses) are freed again; and giving freed pages back to the kernel.
 *
 * @example
 * ```ts
 * import { heapInUse, releaseFreeHeap } from "./heap.ts";
 * const before = heapInUse();
 * releaseFreeHeap(); // after a burst of garbage was collected
 * ```
 */
import { libc } from "./lib.ts";

/**
 * Bytes currently allocated with malloc in the main arena (`mallinfo2().uordblks`). Calls made
 * through FFI run on the main thread, so libnl's allocations land in the main arena.
 */
export function heapInUse(): number {
  return mallinfoField(7);
}

function mallinfoField(i: number): number {
  const raw = libc().mallinfo2() as Uint8Array;
  const v = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  return Number(v.getBigUint64(i * 8, true));
}

/**
 * Gives the free pages inside every malloc arena back to the kernel (glibc `malloc_trim(0)`).
 * glibc only returns memory at the top of an arena by itself, so the buffers of one large read
 * (an etcd range of 5000 leases arrives as many HTTP/2 frames and protobuf slices) leave the
 * arena fragmented and resident long after V8 collected them: ~17 MiB of an agent with 5000
 * etcd peers, released here in ~3 ms. Returns whether anything was released.
 */
export function releaseFreeHeap(): boolean {
  return libc().malloc_trim(0n) === 1;
}
