/**
 * Many deletes (routes, neighbours, FDB entries) in few system calls: the requests are written as
 * raw netlink messages, {@link CHUNK} to a `sendto`, and the kernel's one reply per request (an
 * ACK or an error) is read back before the next chunk. libnl's verbs (route.ts, neigh.ts) build a
 * libnl object and wait for the ACK of each request, one round trip each: at 5000 peers that
 * made removal over twice `ip -batch`'s time, install not (issue #11's programming bench).
 *
 * The messages carry exactly what libnl's delete requests carry (same family, table, protocol
 * and scope wildcards, attributes), so what matches is unchanged, and each request's result is
 * the {@link NetlinkError} the libnl verb would have thrown (same code, kernel errno and
 * extended-ack text), so `isNotFound` and the messages read the same. Reading replies never
 * blocks for long: a request whose reply does not come is redone through its libnl verb. Internal to ffi/libnl:
 * callers use `Netlink.deleteMany` (mod.ts).
 *
 * @example
 * ```ts
 * const errs = deleteMany(sock, [
 *   { route: { dst: "198.19.5.0/24", gw: "198.19.5.0", dev: 12, onlink: true } },
 *   { fdb: { dev: 12, mac: "c6:d2:32:6f:8f:44", dst: "198.18.0.3" } },
 *   { neigh: { dev: 12, ip: "198.19.5.0" } },
 * ]); // [null, null, NetlinkError(notFound)]
 * ```
 */
import { parseIp } from "../../src/base/ipv4.ts";
import { parseIp6 } from "../../src/base/ipv6.ts";
import { AF_INET } from "../libc/udp.ts";
import { errno, libc } from "../libc/lib.ts";
import { POLLIN, PollSet } from "../libc/poll.ts";
import { lastError } from "../libc/errno.ts";
import { AF_BRIDGE, AF_INET6 } from "./nladdr.ts";
import { type KernelError, NetlinkError } from "./errors.ts";
import { errorText, kernelErrorAt, type NlSocket } from "./socket.ts";
import { libs } from "./symbols.ts";
import { describeRoute, type Route, routeDel, validateRoute } from "./route.ts";
import { checkFdb, checkNeighKey, fdbDel, type FdbKey, neighDel, type NeighKey } from "./neigh.ts";
import {
  NTF_SELF,
  RT_SCOPE_NOWHERE,
  RT_TABLE_MAIN,
  RTN_UNICAST,
  RTNH_F_ONLINK,
} from "./constants.ts";

/** One delete: a route (`ip route del`), an ARP/ND entry or an FDB entry (`bridge fdb del`). */
export type DeleteRequest = { route: Route } | { neigh: NeighKey } | { fdb: FdbKey };

/**
 * Requests per `sendto`. Each gets a reply (ACK or error) queued on the socket's receive buffer
 * (libnl's 32 KiB, which the kernel doubles) before we read; 32 replies of at most ~1.5 KiB
 * each (an error with its extended-ack text) fit. Should one be dropped all the same, its request
 * is redone alone (see {@link deleteMany}).
 */
const CHUNK = 32;

const NLMSG_ERROR = 2;
const NLMSG_HDRLEN = 16;
const NLM_F_REQUEST = 1;
const NLM_F_ACK = 4;
const RTM_DELROUTE = 25;
const RTM_DELNEIGH = 29;
const RTA_DST = 1;
const RTA_OIF = 4;
const RTA_GATEWAY = 5;
const RTA_PRIORITY = 6;
const RTA_PREFSRC = 7;
const RTA_TABLE = 15;
const NDA_DST = 1;
const NDA_LLADDR = 2;

// Off-heap (larger than V8's on-heap typed-array limit), so the pointers handed to libc stay put.
const out = new Uint8Array(CHUNK * 128);
const outView = new DataView(out.buffer);
const inBuf = new Uint8Array(64 * 1024);
const inView = new DataView(inBuf.buffer);

/**
 * Our own sequence numbers, not libnl's counter: libnl expects replies to its requests in its
 * sequence, one per request, and every reply to ours is read here before libnl reads again.
 */
let nextSeq = 0;

/** Writes messages into {@link out}; netlink is host-endian (little endian on weft's hosts). */
class Writer {
  off = 0;
  #msg = 0;

  begin(type: number, seq: number): void {
    this.#msg = this.off;
    outView.setUint16(this.off + 4, type, true);
    outView.setUint16(this.off + 6, NLM_F_REQUEST | NLM_F_ACK, true);
    outView.setUint32(this.off + 8, seq, true);
    outView.setUint32(this.off + 12, 0, true);
    this.off += NLMSG_HDRLEN;
  }

  end(): void {
    outView.setUint32(this.#msg, this.off - this.#msg, true);
  }

  u8(v: number): void {
    outView.setUint8(this.off++, v);
  }

  u32(v: number): void {
    outView.setUint32(this.off, v, true);
    this.off += 4;
  }

  attr(type: number, bytes: number[]): void {
    outView.setUint16(this.off, 4 + bytes.length, true);
    outView.setUint16(this.off + 2, type, true);
    out.set(bytes, this.off + 4);
    this.off += (4 + bytes.length + 3) & ~3;
  }

  attrU32(type: number, v: number): void {
    outView.setUint16(this.off, 8, true);
    outView.setUint16(this.off + 2, type, true);
    outView.setUint32(this.off + 4, v, true);
    this.off += 8;
  }
}

function ipBytes(ip: string): number[] {
  if (ip.includes(":")) {
    let n = parseIp6(ip);
    const b = new Array<number>(16);
    for (let i = 15; i >= 0; i--) {
      b[i] = Number(n & 0xffn);
      n >>= 8n;
    }
    return b;
  }
  const n = parseIp(ip);
  return [(n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255];
}

function macBytes(mac: string): number[] {
  return mac.split(":").map((x) => parseInt(x, 16));
}

/** Appends one request as libnl's delete request would be (route.ts build, neigh.ts fdbObject). */
function write(w: Writer, q: DeleteRequest, seq: number): void {
  if ("route" in q) {
    const r = q.route;
    const { ip, prefix } = validateRoute(r);
    const v6 = ip.includes(":");
    const table = r.table ?? RT_TABLE_MAIN;
    w.begin(RTM_DELROUTE, seq);
    w.u8(v6 ? AF_INET6 : AF_INET);
    w.u8(prefix);
    w.u8(0); // src_len
    w.u8(0); // tos
    w.u8(table < 256 ? table : 0);
    // 0 and scope "nowhere" are the kernel's wildcards: a route matches whoever created it.
    w.u8(r.protocol ?? 0);
    w.u8(r.scope ?? RT_SCOPE_NOWHERE);
    w.u8(r.type ?? RTN_UNICAST);
    w.u32(r.onlink ? RTNH_F_ONLINK : 0);
    w.attrU32(RTA_TABLE, table);
    w.attr(RTA_DST, ipBytes(ip));
    if (r.src !== undefined) w.attr(RTA_PREFSRC, ipBytes(r.src));
    if (r.metric !== undefined) w.attrU32(RTA_PRIORITY, r.metric);
    if (r.gw !== undefined) w.attr(RTA_GATEWAY, ipBytes(r.gw));
    if (r.dev !== undefined) w.attrU32(RTA_OIF, r.dev);
  } else {
    const fdb = "fdb" in q;
    const k = fdb ? q.fdb : q.neigh;
    if (fdb) checkFdb(q.fdb);
    else checkNeighKey(q.neigh);
    const dst = fdb ? q.fdb.dst : q.neigh.ip;
    w.begin(RTM_DELNEIGH, seq);
    w.u8(fdb ? AF_BRIDGE : dst!.includes(":") ? AF_INET6 : AF_INET);
    w.u8(0);
    w.u8(0);
    w.u8(0);
    w.u32(k.dev);
    w.u8(0); // state u16
    w.u8(0);
    w.u8(fdb ? NTF_SELF : 0);
    w.u8(0); // type
    if (dst !== undefined) w.attr(NDA_DST, ipBytes(dst));
    if (fdb) w.attr(NDA_LLADDR, macBytes(q.fdb.mac));
  }
  w.end();
}

function describe(q: DeleteRequest): { op: string; args: unknown; what: string } {
  if ("route" in q) return { op: "routeDel", args: q.route, what: describeRoute(q.route) };
  if ("neigh" in q) {
    return { op: "neighDel", args: q.neigh, what: `${q.neigh.ip} dev ${q.neigh.dev}` };
  }
  const e = q.fdb;
  return {
    op: "fdbDel",
    args: e,
    what: `${e.mac} dev ${e.dev}${e.dst !== undefined ? ` dst ${e.dst}` : ""} self`,
  };
}

/** How long to wait for replies still missing after the ones queued are read. */
const REPLY_WAIT_MS = 1000;
const MSG_DONTWAIT = 0x40;
const EINTR = 4;
const EAGAIN = 11;
const ENOBUFS = 105;

/**
 * Reads the replies to `pending` (seq → request index), calling `done` for each and removing it
 * from `pending`. The kernel handles the requests inside sendto, so their replies are queued by
 * then; what is still missing after {@link REPLY_WAIT_MS}, or once the kernel reports that it
 * dropped replies (ENOBUFS), stays in `pending` for the caller. Never blocks longer than that.
 */
function readReplies(
  fd: number,
  pending: Map<number, number>,
  done: (i: number, k: KernelError) => void,
): void {
  const c = libc();
  const poll = new PollSet([fd], POLLIN);
  const deadline = performance.now() + REPLY_WAIT_MS;
  let dropped = false;
  while (pending.size > 0) {
    const n = c.recvfrom(
      fd,
      Deno.UnsafePointer.of(inBuf),
      BigInt(inBuf.length),
      MSG_DONTWAIT,
      null,
      null,
    );
    if (n < 0) {
      const e = errno();
      if (e === ENOBUFS) dropped = true;
      else if (e === EAGAIN || e === EINTR) {
        const left = deadline - performance.now();
        if (dropped || left <= 0) return;
        poll.wait(Math.ceil(left));
      } else throw lastError("recvfrom", "netlink, delete replies");
      continue;
    }
    for (let off = 0; off + NLMSG_HDRLEN <= n;) {
      const len = inView.getUint32(off, true);
      if (len < NLMSG_HDRLEN || off + len > n) break;
      const seq = inView.getUint32(off + 8, true);
      const i = pending.get(seq);
      if (inView.getUint16(off + 4, true) === NLMSG_ERROR && i !== undefined) {
        pending.delete(seq);
        done(i, kernelErrorAt(inView, off));
      }
      off += (len + 3) & ~3;
    }
  }
}

/** One request through its libnl verb (route.ts, neigh.ts): null or the error it threw. */
function single(sock: NlSocket, q: DeleteRequest): Error | null {
  try {
    if ("route" in q) routeDel(sock, q.route);
    else if ("neigh" in q) neighDel(sock, q.neigh);
    else fdbDel(sock, q.fdb);
    return null;
  } catch (e) {
    return e as Error;
  }
}

/**
 * Deletes every request's object; per request, null or the error (a RangeError for a malformed
 * request, which is not sent; a {@link NetlinkError} for the kernel's refusal). Throws only when
 * the socket itself fails.
 */
export function deleteMany(sock: NlSocket, reqs: DeleteRequest[]): (Error | null)[] {
  const res: (Error | null)[] = new Array(reqs.length).fill(null);
  const { nl } = libs();
  const c = libc();
  const fd = nl.nl_socket_get_fd(sock.ptr);
  for (let start = 0; start < reqs.length; start += CHUNK) {
    const w = new Writer();
    const pending = new Map<number, number>();
    for (let i = start; i < Math.min(start + CHUNK, reqs.length); i++) {
      const seq = nextSeq = (nextSeq + 1) >>> 0;
      const at = w.off;
      try {
        write(w, reqs[i], seq);
        pending.set(seq, i);
      } catch (e) {
        w.off = at; // no half-written message: the kernel would stop at it
        res[i] = e as Error;
      }
    }
    if (pending.size === 0) continue;
    if (c.sendto(fd, Deno.UnsafePointer.of(out), BigInt(w.off), 0, null, 0) < 0) {
      throw lastError("sendto", `netlink, ${pending.size} delete requests`);
    }
    readReplies(fd, pending, (i, k) => {
      if (k.errno === 0) return;
      const rc = nl.nl_syserr2nlerr(k.errno);
      res[i] = new NetlinkError({
        ...describe(reqs[i]),
        code: Math.abs(rc),
        libnlMessage: errorText(-Math.abs(rc)),
        kernel: k,
      });
    });
    // A request left without a reply (dropped on a full receive buffer, say) goes once more
    // through its libnl verb, which waits for its own; "not found" then may mean that the
    // batch's request did delete it, which every caller treats as gone.
    for (const i of pending.values()) res[i] = single(sock, reqs[i]);
  }
  return res;
}
