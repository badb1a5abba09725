/**
 * One connected NETLINK_ROUTE socket (libnl `struct nl_sock`) plus the error plumbing every request
 * shares: the kernel's errno and extended-ack text are captured by an error callback, so a failed
 * request becomes a {@link NetlinkError} that says more than libnl's "Unspecific failure".
 *
 * The socket belongs to the network namespace of the thread that created it, for its whole life.
 *
 * @example
 * ```ts
 * const sock = new NlSocket();
 * sock.begin();
 * const rc = libs().rt.rtnl_route_add(sock.ptr, route, NLM_F_CREATE | NLM_F_REPLACE);
 * if (rc < 0) throw sock.error("routeReplace", r, "198.19.5.0/24 dev 3", rc);
 * sock.close();
 * ```
 */
import { type KernelError, NetlinkError, NLE_DUMP_INTR } from "./errors.ts";
import { takePtr } from "./mem.ts";
import { setSockOptInt } from "../libc/udp.ts";
import { libs } from "./symbols.ts";

const NETLINK_ROUTE = 0;
const SOL_NETLINK = 270;
const NETLINK_CAP_ACK = 10;
const NETLINK_EXT_ACK = 11;
const NL_CB_CUSTOM = 3;
const NL_STOP = 2;
const NLMSG_HDRLEN = 16;
const NLM_F_CAPPED = 0x100;
const NLM_F_ACK_TLVS = 0x200;
const NLMSGERR_ATTR_MSG = 1;

type Ptr = NonNullable<Deno.PointerValue>;

/**
 * Reads errno and the extended-ack message from a `struct nlmsgerr *` inside libnl's receive
 * buffer. The enclosing netlink header sits right before it, which tells where the TLVs start.
 */
function parseNlmsgerr(e: Ptr): KernelError {
  const errno = -new Deno.UnsafePointerView(e).getInt32(0);
  const hdrPtr = Deno.UnsafePointer.create(Deno.UnsafePointer.value(e) - BigInt(NLMSG_HDRLEN));
  if (!hdrPtr) return { errno, message: null };
  const total = new Deno.UnsafePointerView(hdrPtr).getUint32(0);
  return kernelErrorAt(new DataView(Deno.UnsafePointerView.getArrayBuffer(hdrPtr, total)), 0);
}

/**
 * errno (positive; 0 for an ACK) and extended-ack text of the NLMSG_ERROR message whose header
 * starts at `off` in `v` (host-endian: little endian on weft's hosts).
 */
export function kernelErrorAt(v: DataView, off: number): KernelError {
  const errno = -v.getInt32(off + NLMSG_HDRLEN, true);
  const total = v.getUint32(off, true);
  const flags = v.getUint16(off + 6, true);
  if (!(flags & NLM_F_ACK_TLVS)) return { errno, message: null };
  // Payload: int error, then the request's header (CAPPED) or the whole request, then TLVs.
  const echoed = flags & NLM_F_CAPPED ? NLMSG_HDRLEN : v.getUint32(off + NLMSG_HDRLEN + 4, true);
  let at = NLMSG_HDRLEN + 4 + ((echoed + 3) & ~3);
  for (let i = 0; i < 32 && at + 4 <= total; i++) {
    const len = v.getUint16(off + at, true);
    const type = v.getUint16(off + at + 2, true) & 0x3fff;
    if (len < 4 || at + len > total) break;
    if (type === NLMSGERR_ATTR_MSG) {
      const bytes = new Uint8Array(v.buffer, v.byteOffset + off + at + 4, len - 4);
      const end = bytes.indexOf(0);
      return { errno, message: new TextDecoder().decode(end < 0 ? bytes : bytes.subarray(0, end)) };
    }
    at += (len + 3) & ~3;
  }
  return { errno, message: null };
}

/** A connected route-netlink socket; not thread-safe, use from one thread. */
export class NlSocket {
  #ptr: Ptr | null;
  #errCb: Deno.UnsafeCallback<
    { readonly parameters: readonly ["pointer", "pointer", "pointer"]; readonly result: "i32" }
  >;
  #kernel: KernelError | null = null;

  constructor() {
    const { nl } = libs();
    const sk = nl.nl_socket_alloc();
    if (!sk) throw new Error("netlink: nl_socket_alloc returned NULL (out of memory?)");
    const rc = nl.nl_connect(sk, NETLINK_ROUTE);
    if (rc < 0) {
      nl.nl_socket_free(sk);
      throw new NetlinkError({
        op: "connect",
        args: null,
        what: "NETLINK_ROUTE",
        code: -rc,
        libnlMessage: errorText(rc),
        hint: "is this process allowed to open netlink sockets (CAP_NET_ADMIN for changes)?",
      });
    }
    // Ask for the kernel's own explanation ("Nexthop has invalid gateway") in error replies, and
    // for short acks (no copy of our request). Old kernels refuse; errors then lack the text.
    const fd = nl.nl_socket_get_fd(sk);
    for (const opt of [NETLINK_EXT_ACK, NETLINK_CAP_ACK]) {
      try {
        setSockOptInt(fd, SOL_NETLINK, opt, 1);
      } catch { /* old kernel: errors come without the kernel's text */ }
    }
    // Called synchronously from inside libnl's receive loop on this thread. Returning NL_STOP
    // keeps libnl's normal behaviour (return the mapped error code).
    this.#errCb = new Deno.UnsafeCallback(
      { parameters: ["pointer", "pointer", "pointer"], result: "i32" } as const,
      (_nla, err, _arg) => {
        if (err) this.#kernel = parseNlmsgerr(err);
        return NL_STOP;
      },
    );
    nl.nl_socket_modify_err_cb(sk, NL_CB_CUSTOM, this.#errCb.pointer, null);
    this.#ptr = sk;
  }

  /** The `struct nl_sock *`; throws once closed. */
  get ptr(): Ptr {
    if (!this.#ptr) throw new Error("netlink: socket is closed");
    return this.#ptr;
  }

  /** Forgets the previous request's kernel error; call before each request. */
  begin(): void {
    this.#kernel = null;
  }

  /** The kernel error captured since {@link begin}, if any. */
  get kernelError(): KernelError | null {
    return this.#kernel;
  }

  /**
   * The typed error for a libnl call that built a request locally (setting an address on an
   * object, ...) and failed before anything was sent: no kernel error belongs to it.
   */
  localError(op: string, args: unknown, what: string, rc: number): NetlinkError {
    return new NetlinkError({ op, args, what, code: Math.abs(rc), libnlMessage: errorText(rc) });
  }

  /** Builds the typed error for a request that failed with the negative libnl code `rc`. */
  error(op: string, args: unknown, what: string, rc: number, hint?: string): NetlinkError {
    return new NetlinkError({
      op,
      args,
      what,
      code: Math.abs(rc),
      libnlMessage: errorText(rc),
      kernel: this.#kernel,
      hint,
    });
  }

  /**
   * Runs a cache-filling dump (`alloc` fills PTR_OUT) and returns the cache; the caller frees it.
   * A dump the kernel marks inconsistent (the table changed meanwhile) is retried, at most 3 times.
   */
  dump(op: string, args: unknown, what: string, alloc: () => number): Ptr {
    let rc = 0;
    for (let attempt = 0; attempt < 3; attempt++) {
      this.begin();
      rc = alloc();
      const cache = takePtr();
      if (rc >= 0 && cache) return cache;
      if (cache) libs().nl.nl_cache_free(cache);
      if (-rc !== NLE_DUMP_INTR) break;
    }
    throw this.error(op, args, what, rc < 0 ? rc : -1);
  }

  /** Frees the socket. Safe to call twice. */
  close(): void {
    if (!this.#ptr) return;
    libs().nl.nl_socket_free(this.#ptr);
    this.#ptr = null;
    this.#errCb.close();
  }
}

/** nl_geterror text for a (negative or positive) libnl code. */
export function errorText(rc: number): string {
  const p = libs().nl.nl_geterror(rc);
  return p ? Deno.UnsafePointerView.getCString(p) : `libnl error ${rc}`;
}
