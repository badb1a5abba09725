/**
 * The few libc calls the libnl bindings need: `setsockopt` (to ask the kernel for extended netlink
 * error messages) and `mallinfo2` (C heap in use, so tests can prove libnl objects are freed).
 * Kept inside ffi/libnl so it does not collide with the general ffi/libc bindings.
 *
 * @example
 * ```ts
 * import { heapInUse } from "./libc.ts";
 * const before = heapInUse();
 * ```
 */

const SYMBOLS = {
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  // struct mallinfo2 { size_t arena, ordblks, smblks, hblks, hblkhd, usmblks, fsmblks,
  //                    uordblks, fordblks, keepcost; } returned by value
  mallinfo2: {
    parameters: [],
    result: {
      struct: [
        "usize",
        "usize",
        "usize",
        "usize",
        "usize",
        "usize",
        "usize",
        "usize",
        "usize",
        "usize",
      ],
    },
  },
} as const satisfies Deno.ForeignLibraryInterface;

let lib: Deno.DynamicLibrary<typeof SYMBOLS>["symbols"] | null = null;

function libc(): Deno.DynamicLibrary<typeof SYMBOLS>["symbols"] {
  if (!lib) lib = Deno.dlopen("libc.so.6", SYMBOLS).symbols;
  return lib;
}

/** Sets an integer socket option; returns false when the kernel rejects it (old kernels). */
export function setSockOptInt(fd: number, level: number, name: number, value: number): boolean {
  const v = new Int32Array([value]);
  return libc().setsockopt(fd, level, name, new Uint8Array(v.buffer), 4) === 0;
}

/**
 * Bytes currently allocated with malloc in the main arena (`mallinfo2().uordblks`). Calls made
 * through FFI run on the main thread, so libnl's allocations land in the main arena.
 */
export function heapInUse(): number {
  const raw = libc().mallinfo2() as Uint8Array;
  const v = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  return Number(v.getBigUint64(7 * 8, true));
}
