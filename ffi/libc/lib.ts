/**
 * The raw libc symbols weft calls through `Deno.dlopen`, opened once per isolate (the main thread
 * and each Worker get their own handle, and so their own thread's errno). This is the only
 * dlopen of libc: ffi/libnl's socket (setsockopt, through udp.ts), heap.ts and sd_notify.ts go
 * through it too. Higher modules in this folder wrap them with errno checks; the udp packet loop
 * calls them directly.
 *
 * Calling conventions chosen for speed (measured on Deno 2.9): a 64-bit parameter (`usize`, `u64`)
 * passed as a JS number drops off V8's fast-call path (~180 ns per call instead of ~12 ns), so
 * callers pass BigInt for those. `ssize_t` results are declared `i32`: on x86-64 and aarch64 that
 * reads the low half of the return register, exact for the values seen here (-1 and lengths below
 * 2 GiB), and yields a number instead of a BigInt.
 *
 * @example
 * ```ts
 * const c = libc();
 * const fd = c.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
 * if (fd < 0) throw lastError("eventfd", "0");
 * ```
 */

const SYMBOLS = {
  /** int memcmp(const void*, const void*, size_t). */
  memcmp: { parameters: ["buffer", "buffer", "usize"], result: "i32" },
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  /** ssize_t read(int, void*, size_t): result as i32, see module doc. */
  read: { parameters: ["i32", "pointer", "usize"], result: "i32" },
  write: { parameters: ["i32", "pointer", "usize"], result: "i32" },
  readv: { parameters: ["i32", "pointer", "i32"], result: "i32" },
  writev: { parameters: ["i32", "pointer", "i32"], result: "i32" },
  /** Variadic in C; the third argument is always a pointer or an integer here. */
  ioctl: { parameters: ["i32", "u64", "pointer"], result: "i32" },
  fcntl: { parameters: ["i32", "i32", "i64"], result: "i32" },
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  bind: { parameters: ["i32", "pointer", "u32"], result: "i32" },
  getsockname: { parameters: ["i32", "pointer", "pointer"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "pointer", "u32"], result: "i32" },
  getsockopt: { parameters: ["i32", "i32", "i32", "pointer", "pointer"], result: "i32" },
  sendto: { parameters: ["i32", "pointer", "usize", "i32", "pointer", "u32"], result: "i32" },
  recvfrom: {
    parameters: ["i32", "pointer", "usize", "i32", "pointer", "pointer"],
    result: "i32",
  },
  poll: { parameters: ["pointer", "u64", "i32"], result: "i32" },
  /**
   * poll(2) on a thread of Deno's blocking pool: a Promise that costs nothing while it waits.
   * errno is that thread's, not readable here.
   */
  pollAsync: {
    name: "poll",
    parameters: ["pointer", "u64", "i32"],
    result: "i32",
    nonblocking: true,
  },
  recvmmsg: { parameters: ["i32", "pointer", "u32", "i32", "pointer"], result: "i32" },
  sendmmsg: { parameters: ["i32", "pointer", "u32", "i32"], result: "i32" },
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
  inotify_init1: { parameters: ["i32"], result: "i32" },
  inotify_add_watch: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
  strerror: { parameters: ["i32"], result: "pointer" },
  /** glibc: returns free pages of every malloc arena to the kernel (see heap.ts). */
  malloc_trim: { parameters: ["usize"], result: "i32" },
  // struct mallinfo2 { size_t arena, ordblks, smblks, hblks, hblkhd, usmblks, fsmblks,
  //                    uordblks, fordblks, keepcost; } returned by value (see heap.ts)
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

export type LibcSymbols = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

let lib: Deno.DynamicLibrary<typeof SYMBOLS> | undefined;
let errnoView: Deno.UnsafePointerView | undefined;

/** The libc symbols; opens libc.so.6 on first use (needs --allow-ffi). */
export function libc(): LibcSymbols {
  if (!lib) {
    try {
      lib = Deno.dlopen("libc.so.6", SYMBOLS);
    } catch (e) {
      throw new Error(
        `cannot open libc.so.6 through FFI (${(e as Error).message}); ` +
          "weft needs glibc and --allow-ffi (or -A)",
      );
    }
  }
  return lib.symbols;
}

/**
 * The calling thread's errno. Read it right after the failing call: the errno cell is
 * thread-local and this isolate always runs on one thread, so its address is cached.
 */
export function errno(): number {
  if (!errnoView) {
    const p = libc().__errno_location();
    if (!p) throw new Error("__errno_location() returned NULL");
    errnoView = new Deno.UnsafePointerView(p);
  }
  return errnoView.getInt32();
}

/** Address of a buffer as a BigInt, for writing pointers into C structs. */
export function addressOf(buf: BufferSource): bigint {
  const p = Deno.UnsafePointer.of(buf);
  if (!p) throw new Error("cannot take the address of an empty buffer");
  return Deno.UnsafePointer.value(p);
}

/** A pointer `offset` bytes into `buf` (the buffer must outlive every use of the pointer). */
export function pointerInto(buf: BufferSource, offset: number): Deno.PointerObject {
  const p = Deno.UnsafePointer.create(addressOf(buf) + BigInt(offset));
  if (!p) throw new Error("null pointer");
  return p;
}
