/**
 * Kernel table dumps (routes, neighbours, FDB) read as raw netlink bytes on libnl's socket: one
 * request, then one `recvfrom` per buffer of entries, parsed in TypeScript by route.ts and
 * neigh.ts. libnl's caches made a libnl object of every entry and weft then read each back with
 * several FFI calls: at 5000 peers the three tables of a vxlan reconcile cost ~70-90 ms of CPU.
 *
 * The bytes come back canonical: sequence number, port id and the ageing fields (cache info,
 * probe counts) zeroed, so two dumps of an unchanged table are equal byte for byte. A
 * {@link DumpMemo} uses that: a read call that passes one gets back the very read of its last
 * call when the table did not change, which lets a periodic reconcile skip its diff.
 *
 * @example
 * ```ts
 * const m = dumpTable(sock, "routeList", f, "", { type: RTM_GETROUTE, family: AF_INET });
 * forEachMessage(m, (v, off, len) => { ... }); // nlmsghdr at off; rtmsg at off + 16
 * ```
 */
import { errno, libc } from "../libc/lib.ts";
import { lastError } from "../libc/errno.ts";
import { POLLIN, PollSet } from "../libc/poll.ts";
import { NetlinkError, NLE_DUMP_INTR } from "./errors.ts";
import { errorText, kernelErrorAt, type NlSocket } from "./socket.ts";
import { libs } from "./symbols.ts";

export { bytesOrEach, DumpMemo, type TableChange, TableRead } from "./dump_memo.ts";

export const RTM_GETROUTE = 26;
export const RTM_GETNEIGH = 30;

const NLMSG_HDRLEN = 16;
const NLMSG_ERROR = 2;
const NLMSG_DONE = 3;
const NLM_F_REQUEST = 1;
const NLM_F_DUMP = 0x300;
const NLM_F_DUMP_INTR = 0x10;
/** rtmsg and ndmsg are both 12 bytes: the attributes of either start here. */
const BODY = 12;
const RTA_CACHEINFO = 12;
const RTA_EXPIRES = 23;
const NDA_CACHEINFO = 3;
const NDA_PROBES = 4;
const RTM_NEWROUTE = 24;
const RTM_NEWNEIGH = 28;
const NDA_IFINDEX = 8;

const MSG_DONTWAIT = 0x40;
const MSG_TRUNC = 0x20;
const EINTR = 4;
const EAGAIN = 11;
/** How long a whole dump may take to come (the kernel fills the next buffer as we read). */
const WAIT_MS = 5000;

// Off-heap (larger than V8's on-heap typed-array limit), so the pointer handed to libc stays put.
const inBuf = new Uint8Array(64 * 1024);
const inView = new DataView(inBuf.buffer);
const inU16 = new Uint16Array(inBuf.buffer);
const inU32 = new Uint32Array(inBuf.buffer);
let seq = 0x40000000;

/** What to dump: the request type, its family, and an ifindex to filter by (0: all). */
export interface DumpRequest {
  type: typeof RTM_GETROUTE | typeof RTM_GETNEIGH;
  family: number;
  /** RTM_GETNEIGH: the device (NDA_IFINDEX; for AF_BRIDGE the legacy ifinfomsg index). */
  ifindex?: number;
}

// The request is written here: larger than V8's on-heap limit, so its pointer stays put too.
const reqBuf = new Uint8Array(256);

/** The request message: a 12-byte rtmsg/ndmsg, or the 16-byte ifinfomsg an FDB dump filters by. */
function request(q: DumpRequest, s: number): Uint8Array {
  const fdb = q.type === RTM_GETNEIGH && q.family === 7;
  const neighDev = q.type === RTM_GETNEIGH && !fdb && q.ifindex;
  // FDB: an ifinfomsg whose index (offset 4, where ndmsg has its ifindex too) names the device:
  // the kernel's non-strict FDB dump reads it so (as `bridge fdb show dev X`).
  const len = NLMSG_HDRLEN + (fdb ? 16 : BODY) + (neighDev ? 8 : 0);
  const b = reqBuf.subarray(0, len).fill(0);
  const v = new DataView(reqBuf.buffer);
  v.setUint32(0, len, true);
  v.setUint16(4, q.type, true);
  v.setUint16(6, NLM_F_REQUEST | NLM_F_DUMP, true);
  v.setUint32(8, s, true);
  b[NLMSG_HDRLEN] = q.family;
  if (fdb) v.setInt32(NLMSG_HDRLEN + 4, q.ifindex ?? 0, true);
  if (neighDev) {
    // NDA_IFINDEX: the kernel dumps that device's entries only (also without strict checking).
    v.setUint16(NLMSG_HDRLEN + BODY, 8, true);
    v.setUint16(NLMSG_HDRLEN + BODY + 2, NDA_IFINDEX, true);
    v.setUint32(NLMSG_HDRLEN + BODY + 4, q.ifindex!, true);
  }
  return b;
}

/** Zeroes what changes while a table stands still: ids, and the ageing attributes. */
function canonical(off: number, len: number): void {
  // Typed-array reads of inBuf (aligned, host order): this runs on every message of every dump.
  inU32[(off + 8) >> 2] = 0;
  inU32[(off + 12) >> 2] = 0;
  const type = inU16[(off + 4) >> 1];
  const route = type === RTM_NEWROUTE;
  if (!route && type !== RTM_NEWNEIGH) return;
  for (let at = off + NLMSG_HDRLEN + BODY; at + 4 <= off + len;) {
    const alen = inU16[at >> 1];
    if (alen < 4) break;
    const t = inU16[(at + 2) >> 1] & 0x3fff;
    if (
      route ? t === RTA_CACHEINFO || t === RTA_EXPIRES : t === NDA_CACHEINFO || t === NDA_PROBES
    ) {
      inBuf.fill(0, at + 4, Math.min(at + alen, off + len));
    }
    at += (alen + 3) & ~3;
  }
}

/**
 * One dump's entries as canonical netlink messages (headers included, back to back). A dump the
 * kernel marks interrupted (the table changed meanwhile) is redone, at most 3 times in all, as
 * libnl does; `op`, `args`, `what` name it in a {@link NetlinkError}.
 */
export function dumpTable(
  sock: NlSocket,
  op: string,
  args: unknown,
  what: string,
  q: DumpRequest,
): Uint8Array {
  for (let attempt = 0;; attempt++) {
    const r = dumpOnce(sock, op, args, what, q);
    if (!r.interrupted) return r.bytes;
    if (attempt === 2) {
      throw new NetlinkError({
        op,
        args,
        what,
        code: NLE_DUMP_INTR,
        libnlMessage: errorText(-NLE_DUMP_INTR),
        hint: "the table kept changing during 3 dumps; try again",
      });
    }
  }
}

let out = new Uint8Array(256 * 1024);

/**
 * Reads away what is left of a dump that failed half way (at most 1024 buffers), so libnl's next
 * request does not read our replies as its own.
 */
function drain(fd: number): void {
  const c = libc();
  for (let i = 0; i < 1024; i++) {
    if (
      c.recvfrom(fd, Deno.UnsafePointer.of(inBuf), BigInt(inBuf.length), MSG_DONTWAIT, null, null) <
        0
    ) {
      return;
    }
  }
}

function dumpOnce(
  sock: NlSocket,
  op: string,
  args: unknown,
  what: string,
  q: DumpRequest,
): { bytes: Uint8Array; interrupted: boolean } {
  const fd = libs().nl.nl_socket_get_fd(sock.ptr);
  try {
    return receive(fd, op, args, what, q);
  } catch (e) {
    drain(fd);
    throw e;
  }
}

function receive(
  fd: number,
  op: string,
  args: unknown,
  what: string,
  q: DumpRequest,
): { bytes: Uint8Array; interrupted: boolean } {
  const { nl } = libs();
  const c = libc();
  const s = seq = ((seq + 1) >>> 0) || 0x40000000;
  const req = request(q, s);
  if (c.sendto(fd, Deno.UnsafePointer.of(req), BigInt(req.length), 0, null, 0) < 0) {
    throw lastError("sendto", `netlink, ${op} dump request`);
  }
  let poll: PollSet | null = null; // made only when the kernel is not ahead of us
  const deadline = performance.now() + WAIT_MS;
  used = 0;
  interrupted = false;
  for (;;) {
    const n = c.recvfrom(
      fd,
      Deno.UnsafePointer.of(inBuf),
      BigInt(inBuf.length),
      MSG_DONTWAIT | MSG_TRUNC,
      null,
      null,
    );
    if (n < 0) {
      const e = errno();
      if (e !== EAGAIN && e !== EINTR) throw lastError("recvfrom", `netlink, ${op} dump`);
      const left = deadline - performance.now();
      if (left > 0) (poll ??= new PollSet([fd], POLLIN)).wait(Math.ceil(left));
      else {
        throw new Error(
          `netlink ${op}${what ? ` ${what}` : ""}: the kernel sent no more of the dump within ` +
            `${WAIT_MS} ms; is the host overloaded?`,
        );
      }
      continue;
    }
    if (n > inBuf.length) {
      throw new Error(`netlink ${op}: a dump buffer of ${n} bytes exceeds ${inBuf.length}`);
    }
    const end = takeBuffer(n, s);
    if (end === NLMSG_DONE) return { bytes: out.subarray(0, used), interrupted };
    if (end === NLMSG_ERROR) {
      const k = kernelErrorAt(inView, endAt);
      const rc = nl.nl_syserr2nlerr(k.errno);
      throw new NetlinkError({
        op,
        args,
        what,
        code: Math.abs(rc),
        libnlMessage: errorText(-Math.abs(rc)),
        kernel: k,
      });
    }
  }
}

/** The dump being received: bytes taken into `out`, whether the kernel marked it interrupted. */
let used = 0;
let interrupted = false;
/** Where the message that ended the dump (NLMSG_DONE or NLMSG_ERROR) is in inBuf. */
let endAt = 0;

/**
 * Takes the `n` bytes in inBuf of the dump with sequence number `s`: its entries, made
 * canonical, appended to `out` (in runs: one copy per buffer, usually). Returns NLMSG_DONE or
 * NLMSG_ERROR (at `endAt`) when the buffer ends the dump, else 0. Kept apart from
 * {@link receive}: it is the dump's hot loop, and V8 compiles the function holding a hot loop
 * whole (in receive it cost ~13 ms of compiling, twice, per first large dump).
 */
function takeBuffer(n: number, s: number): number {
  let run = 0;
  let off = 0;
  while (off + NLMSG_HDRLEN <= n) {
    const len = inU32[off >> 2];
    if (len < NLMSG_HDRLEN || off + len > n) break;
    const size = Math.min((len + 3) & ~3, n - off);
    const type = inU16[(off + 4) >> 1];
    // Another request's late reply (none should be queued) is not part of this dump.
    const ours = inU32[(off + 8) >> 2] === s;
    if (ours && inU16[(off + 6) >> 1] & NLM_F_DUMP_INTR) interrupted = true;
    if (ours && type !== NLMSG_DONE && type !== NLMSG_ERROR) {
      canonical(off, len);
      off += size;
      continue;
    }
    append(run, off);
    run = off + size;
    if (ours) {
      endAt = off;
      return type;
    }
    off += size;
  }
  append(run, off);
  return 0;
}

/** Appends inBuf's bytes `from` … `to` to `out`, then pads it to 4 bytes as the kernel does. */
function append(from: number, to: number): void {
  if (to <= from) return;
  if (used + to - from + 4 > out.length) {
    const bigger = new Uint8Array(Math.max(out.length * 2, used + to - from + 4));
    bigger.set(out.subarray(0, used));
    out = bigger;
  }
  out.set(inBuf.subarray(from, to), used);
  used += to - from;
  while (used & 3) out[used++] = 0; // the next message starts aligned, as in the kernel's
}

/**
 * Calls `fn` for each message of a {@link dumpTable} result: `off` is its netlink header's offset
 * in `v`, `len` its length.
 */
export function forEachMessage(
  bytes: Uint8Array,
  fn: (v: DataView, off: number, len: number) => void,
): void {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let off = 0; off + NLMSG_HDRLEN <= bytes.length;) {
    const len = v.getUint32(off, true);
    if (len < NLMSG_HDRLEN || off + len > bytes.length) break;
    fn(v, off, len);
    off += (len + 3) & ~3;
  }
}

/**
 * The attributes of the message at `off` by type, into `t` (reused per message): payload offset
 * at `t[2 * type]`, length at `t[2 * type + 1]`, -1 for an absent type; types past the table are
 * skipped, and a repeated type keeps its last. Parsers read attributes by it: no closure
 * per message, which halves the cost of a table's first (unoptimised) full parse.
 */
export function attrTable(v: DataView, off: number, len: number, t: Int32Array): Int32Array {
  t.fill(-1);
  const end = off + len;
  for (let at = off + NLMSG_HDRLEN + BODY; at + 4 <= end;) {
    const alen = v.getUint16(at, true);
    if (alen < 4 || at + alen > end) break;
    const type = v.getUint16(at + 2, true) & 0x3fff;
    if (2 * type + 1 < t.length) {
      t[2 * type] = at + 4;
      t[2 * type + 1] = alen - 4;
    }
    at += (alen + 3) & ~3;
  }
  return t;
}

/**
 * Each message of `type` in `b`, as the scans (route_list.ts, neigh_list.ts) read them: offered
 * to `take` first (`w`: the dump's {@link Words}; it reads a plain entry's numbers and says
 * whether it was taken), each one not taken handed to `parse`. Without `w` or `take`, every
 * message goes to `parse`. One loop with typed-array reads: a full diff runs it on 5000 entries a
 * table, often on cold code.
 */
export function scanMessages(
  b: Uint8Array,
  type: number,
  w: Words | null,
  take: ((w: Words, off: number, len: number) => boolean) | null,
  parse: (v: DataView, off: number, len: number) => void,
): void {
  if (!w || !take) {
    return forEachMessage(b, (v, off, len) => {
      if (v.getUint16(off + 4, true) === type) parse(v, off, len);
    });
  }
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  for (let off = 0; off + NLMSG_HDRLEN <= b.length;) {
    const len = w.u32[off >> 2];
    if (len < NLMSG_HDRLEN || off + len > b.length) break;
    if (w.u16[(off + 4) >> 1] === type && !take(w, off, len)) parse(v, off, len);
    off += (len + 3) & ~3;
  }
}

/** Typed-array views of a dump, for the scans' reads (no DataView call per field). */
export interface Words {
  u8: Uint8Array;
  u16: Uint16Array;
  u32: Uint32Array;
}

const littleEndian = new Uint8Array(Uint16Array.of(1).buffer)[0] === 1;

/** The views {@link wordsOf} hands out: one object for the process's life (see there). */
const words: Words = { u8: new Uint8Array(0), u16: new Uint16Array(0), u32: new Uint32Array(0) };

/**
 * `b` as {@link Words}: netlink fields are in host order and 4-byte aligned, as typed arrays read
 * them; null when `b` does not start 4-byte aligned or the host is big-endian (then parse). The
 * same object each call, valid until the next: V8 drops the code it compiled for the scans when
 * the objects it saw are all gone, and a full diff comes minutes after the last.
 */
export function wordsOf(b: Uint8Array): Words | null {
  if (!littleEndian || b.byteOffset % 4 !== 0) return null;
  if (words.u8 !== b) {
    words.u8 = b;
    words.u16 = new Uint16Array(b.buffer, b.byteOffset, b.length >> 1);
    words.u32 = new Uint32Array(b.buffer, b.byteOffset, b.length >> 2);
  }
  return words;
}

/** An address word read in host (little-endian) order, as its number (198.19.0.1: 0xc6130001). */
export function netOrder(x: number): number {
  return (((x & 0xff) << 24) | ((x & 0xff00) << 8) | ((x >>> 8) & 0xff00) | (x >>> 24)) >>> 0;
}
