/**
 * Memory plumbing shared by the libnl bindings: out-parameters (`T **result`, `uint32_t *out`),
 * C strings, and walking an `nl_cache` that is always freed afterwards.
 *
 * FFI calls are synchronous and single-threaded here, so one scratch slot per kind is enough;
 * read it with `take*()` right after the call that filled it.
 *
 * @example
 * ```ts
 * const rc = rt.rtnl_link_get_kernel(sk, 3, null, PTR_OUT);
 * const link = takePtr(); // rtnl_link_put(link) when done
 * ```
 */
import { libs } from "./symbols.ts";

type Ptr = NonNullable<Deno.PointerValue>;

const ptrSlot = new BigUint64Array(1);
const u32Slot = new Uint32Array(1);

/** Pass as a `T **result` argument, then call {@link takePtr}. */
export const PTR_OUT = new Uint8Array(ptrSlot.buffer);
/** Pass as a `uint32_t *` argument, then call {@link takeU32}. */
export const U32_OUT = new Uint8Array(u32Slot.buffer);

/** The pointer written to {@link PTR_OUT} (null if none); clears the slot. */
export function takePtr(): Ptr | null {
  const p = Deno.UnsafePointer.create(ptrSlot[0]);
  ptrSlot[0] = 0n;
  return p;
}

/** Puts `p` back into the {@link PTR_OUT} slot, as if a call had written it. */
export function putPtr(p: Ptr): void {
  ptrSlot[0] = BigInt(Deno.UnsafePointer.value(p));
}

/** The value written to {@link U32_OUT}; clears the slot. */
export function takeU32(): number {
  const v = u32Slot[0];
  u32Slot[0] = 0;
  return v;
}

const enc = new TextEncoder();

/** A NUL-terminated copy of `s` for `const char *` parameters. */
export function cstr(s: string): Uint8Array {
  return enc.encode(s + "\0");
}

/** Reads a `const char *` (null stays null). */
export function readCString(p: Deno.PointerValue): string | null {
  return p ? Deno.UnsafePointerView.getCString(p) : null;
}

/**
 * Calls `fn` for every object in `cache`, then frees the cache (and with it every object, so `fn`
 * must copy out what it needs).
 */
export function drainCache(cache: Ptr, fn: (obj: Ptr) => void): void {
  const { nl } = libs();
  try {
    for (let o = nl.nl_cache_get_first(cache); o; o = nl.nl_cache_get_next(o)) fn(o);
  } finally {
    nl.nl_cache_free(cache);
  }
}
