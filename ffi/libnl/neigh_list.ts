/**
 * Listing neighbour (`ip neigh show`) and FDB (`bridge fdb show`) entries: the table as one raw
 * dump (dump.ts), each message read into a {@link Neigh} or {@link Fdb} as libnl read it
 * before; or, read through a {@link DumpMemo}, scanned ({@link scanNeigh}, {@link scanFdb}) so a
 * diff parses only the entries it does not recognise by their numbers. Internal to ffi/libnl:
 * callers use the `Netlink` methods (mod.ts).
 *
 * @example
 * ```ts
 * fdbList(sock, 7); // [{ dev: 7, mac: "c6:d2:32:6f:8f:44", dst: "198.18.0.3", self: true, … }]
 * ```
 */
import { AF_INET } from "../libc/udp.ts";
import { addrText, AF_BRIDGE, AF_INET6, macText } from "./nladdr.ts";
import {
  attrTable,
  bytesOrEach,
  type DumpMemo,
  dumpTable,
  forEachMessage,
  netOrder,
  RTM_GETNEIGH,
  scanMessages,
  type TableRead,
  type Words,
  wordsOf,
} from "./dump.ts";
import type { NlSocket } from "./socket.ts";
import { NTF_SELF, NUD_PERMANENT } from "./constants.ts";
import { checkDev, type Fdb, type Neigh } from "./neigh.ts";

const RTM_NEWNEIGH = 28;
const NDA_DST = 1;
const NDA_LLADDR = 2;
const attrs = new Int32Array(2 * (NDA_LLADDR + 1));

/** A neighbour message's header fields and addresses (struct ndmsg, NDA_DST, NDA_LLADDR). */
function readNeigh(v: DataView, off: number, len: number) {
  const h = off + 16;
  const a = attrTable(v, off, len, attrs); // no closure per entry (dump.ts)
  const ip = a[2 * NDA_DST] >= 0 ? addrText(v, a[2 * NDA_DST], a[2 * NDA_DST + 1]) : null;
  const mac = a[2 * NDA_LLADDR] >= 0 ? macText(v, a[2 * NDA_LLADDR], a[2 * NDA_LLADDR + 1]) : null;
  return {
    family: v.getUint8(h),
    dev: v.getInt32(h + 4, true),
    state: v.getUint16(h + 8, true),
    flags: v.getUint8(h + 10),
    ip: ip as string | null,
    mac: mac as string | null,
  };
}

type RawNeigh = ReturnType<typeof readNeigh>;

/** The {@link Neigh} of `n`, or null when it is not one of `af` (on `dev`, when given). */
function toNeigh(n: RawNeigh, af: number, dev: number | undefined): Neigh | null {
  if (n.family !== af || (dev !== undefined && n.dev !== dev) || n.ip === null) return null;
  return {
    dev: n.dev,
    ip: n.ip,
    mac: n.mac,
    state: n.state,
    flags: n.flags,
    permanent: (n.state & NUD_PERMANENT) !== 0,
  };
}

/** The {@link Fdb} entry of `n`, or null when it is not one of `dev`'s. */
function toFdb(n: RawNeigh, dev: number): Fdb | null {
  if (n.family !== AF_BRIDGE || n.dev !== dev || n.mac === null) return null;
  return {
    dev,
    mac: n.mac,
    dst: n.ip,
    state: n.state,
    flags: n.flags,
    permanent: (n.state & NUD_PERMANENT) !== 0,
    self: (n.flags & NTF_SELF) !== 0,
  };
}

/** The entries `to` makes of the neighbour messages of a raw dump. */
function parseAll<T>(b: Uint8Array, to: (n: RawNeigh) => T | null): T[] {
  const out: T[] = [];
  forEachMessage(b, (v, off, len) => {
    if (v.getUint16(off + 4, true) !== RTM_NEWNEIGH) return;
    const x = to(readNeigh(v, off, len));
    if (x) out.push(x);
  });
  return out;
}

function dumpNeigh(sock: NlSocket, dev: number | undefined, af: number): Uint8Array {
  if (dev !== undefined) checkDev(dev);
  return dumpTable(sock, "neighList", { dev }, dev ? `dev ${dev}` : "", {
    type: RTM_GETNEIGH,
    family: af,
    ifindex: dev,
  });
}

function dumpFdb(sock: NlSocket, dev: number): Uint8Array {
  checkDev(dev);
  return dumpTable(sock, "fdbList", { dev }, `dev ${dev}`, {
    type: RTM_GETNEIGH,
    family: AF_BRIDGE,
    ifindex: dev,
  });
}

const afOf = (family: 4 | 6) => family === 6 ? AF_INET6 : AF_INET;

/**
 * IPv4 (or, with `family` 6, IPv6) neighbour entries, of one device when `dev` is given (the
 * kernel then dumps that device's alone).
 */
export function neighList(sock: NlSocket, dev?: number, family: 4 | 6 = 4): Neigh[] {
  const af = afOf(family);
  return parseAll(dumpNeigh(sock, dev, af), (n) => toNeigh(n, af, dev));
}

/** {@link neighList} of `dev` as a {@link TableRead} of `memo` (see dump_memo.ts). */
export function neighRead(
  sock: NlSocket,
  dev: number,
  family: 4 | 6,
  memo: DumpMemo<Neigh>,
): TableRead<Neigh> {
  return neighBytesRead(dumpNeigh(sock, dev, afOf(family)), dev, family, memo);
}

/** {@link neighRead} of a dump already made (`bytes`: dump.ts's canonical messages). */
export function neighBytesRead(
  bytes: Uint8Array,
  dev: number,
  family: 4 | 6,
  memo: DumpMemo<Neigh>,
): TableRead<Neigh> {
  const af = afOf(family);
  return memo.take(bytes, (b) => parseAll(b, (n) => toNeigh(n, af, dev)));
}

/** FDB entries of `dev` (`bridge fdb show dev`): an AF_BRIDGE dump the kernel limits to it. */
export function fdbList(sock: NlSocket, dev: number): Fdb[] {
  return parseAll(dumpFdb(sock, dev), (n) => toFdb(n, dev));
}

/** {@link fdbList} as a {@link TableRead} of `memo` (see dump_memo.ts). */
export function fdbRead(sock: NlSocket, dev: number, memo: DumpMemo<Fdb>): TableRead<Fdb> {
  return fdbBytesRead(dumpFdb(sock, dev), dev, memo);
}

/** {@link fdbRead} of a dump already made (`bytes`: dump.ts's canonical messages). */
export function fdbBytesRead(bytes: Uint8Array, dev: number, memo: DumpMemo<Fdb>): TableRead<Fdb> {
  return memo.take(bytes, (b) => parseAll(b, (n) => toFdb(n, dev)));
}

/**
 * An IPv4 address and a MAC as numbers (one object, reused per entry: read it in the callback
 * only): a plain neighbour (permanent, `ip` → `mac`) or a plain FDB entry (self, `mac` → `ip`).
 */
export interface PlainNeigh {
  /** 198.19.0.1 is 0xc6130001. */
  ip: number;
  /** 02:00:00:00:00:01 is 0x020000000001 (48 bits). */
  mac: number;
}

const plainNeigh: PlainNeigh = { ip: 0, mac: 0 };

/**
 * Whether the neighbour message at `off` is of `family` on `dev`, has the `state` and `flags`
 * bits, a 4-byte address and a 6-byte link-layer address; if so, fills {@link plainNeigh}.
 */
function asPlain(
  w: Words,
  off: number,
  len: number,
  family: number,
  dev: number,
  state: number,
  flags: number,
): boolean {
  const { u8, u16, u32 } = w;
  const h = off + 16;
  if (u8[h] !== family || (u32[(h + 4) >> 2] | 0) !== dev) return false;
  if ((u16[(h + 8) >> 1] & state) !== state || (u8[h + 10] & flags) !== flags) return false;
  let ip = -1;
  let mac = -1;
  // As attrTable reads them: a repeated attribute counts as its last.
  for (let at = h + 12; at + 4 <= off + len;) {
    const alen = u16[at >> 1];
    if (alen < 4 || at + alen > off + len) break;
    const type = u16[(at + 2) >> 1] & 0x3fff;
    if (type === NDA_DST) ip = alen === 8 ? netOrder(u32[(at + 4) >> 2]) : -1;
    else if (type === NDA_LLADDR) {
      const m = at + 4;
      const lo = ((u8[m + 2] << 24) | (u8[m + 3] << 16) | (u8[m + 4] << 8) | u8[m + 5]) >>> 0;
      mac = alen === 10 ? (u8[m] * 256 + u8[m + 1]) * 0x100000000 + lo : -1;
    }
    at += (alen + 3) & ~3;
  }
  if (ip < 0 || mac < 0) return false;
  plainNeigh.ip = ip;
  plainNeigh.mac = mac;
  return true;
}

/** Each message of `b`: a plain one to `plain` first, the rest (and those it refuses) parsed. */
function scan<T>(
  b: Uint8Array,
  isPlain: ((w: Words, off: number, len: number) => boolean) | null,
  plain: (n: PlainNeigh) => boolean,
  to: (n: RawNeigh) => T | null,
  other: (x: T) => void,
): void {
  scanMessages(
    b,
    RTM_NEWNEIGH,
    wordsOf(b),
    isPlain && ((w, off, len) => isPlain(w, off, len) && plain(plainNeigh)),
    (v, off, len) => {
      const x = to(readNeigh(v, off, len));
      if (x) other(x);
    },
  );
}

/**
 * Each entry of a {@link neighRead} of `dev`: a permanent IPv4 one first to `plain` as numbers;
 * those it does not take (it returns false), and every other entry, parsed to `other`. The same
 * entries as `read.entries()`, with no object or string made for those `plain` takes.
 */
export function scanNeigh(
  read: TableRead<Neigh>,
  dev: number,
  family: 4 | 6,
  plain: (n: PlainNeigh) => boolean,
  other: (n: Neigh) => void,
): void {
  const b = bytesOrEach(read, other);
  if (!b) return;
  const af = afOf(family);
  const isPlain = af === AF_INET
    ? (w: Words, off: number, len: number) => asPlain(w, off, len, AF_INET, dev, NUD_PERMANENT, 0)
    : null;
  scan(b, isPlain, plain, (n) => toNeigh(n, af, dev), other);
}

/**
 * Each entry of an {@link fdbRead} of `dev`: a self one towards an IPv4 address first to `plain`
 * as numbers; the rest as {@link scanNeigh}.
 */
export function scanFdb(
  read: TableRead<Fdb>,
  dev: number,
  plain: (n: PlainNeigh) => boolean,
  other: (x: Fdb) => void,
): void {
  const b = bytesOrEach(read, other);
  if (!b) return;
  const isPlain = (w: Words, off: number, len: number) =>
    asPlain(w, off, len, AF_BRIDGE, dev, 0, NTF_SELF);
  scan(b, isPlain, plain, (n) => toFdb(n, dev), other);
}
