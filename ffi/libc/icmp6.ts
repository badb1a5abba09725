/**
 * The IPv6 twin of icmp.ts: a non-blocking raw ICMPv6 socket (AF_INET6, SOCK_RAW, IPPROTO_ICMPV6;
 * root or CAP_NET_RAW) for echo probes of an exact size, optionally without fragmenting (a
 * path-MTU probe), reading back echo replies, "destination unreachable" and "packet too big".
 * The kernel fills in the ICMPv6 checksum (RFC 3542) and a filter keeps neighbour discovery and
 * router traffic out of the queue. Bindings and packet layout only; the probing logic lives in
 * src/health/probe.ts.
 *
 * @example
 * ```ts
 * const s = openIcmp6Socket();
 * s.sendEcho(parseIp6("2001:db8:1:5::"), { id: 7, seq: 1, size: 1430, df: true });
 * const m = s.recv(); // null when nothing is queued
 * s.close();
 * ```
 */
import { lastError } from "./errno.ts";
import { libc } from "./lib.ts";
import { closeFd } from "./fd.ts";
import { raiseProbeBuffers, recvProbe, sendProbe } from "./raw_probe.ts";
import { setSockOptInt, SOCK_CLOEXEC, SOCK_NONBLOCK } from "./udp.ts";
import type { EchoOptions } from "./icmp.ts";

const AF_INET6 = 10;
const SOCK_RAW = 3;
const IPPROTO_IPV6 = 41;
const IPPROTO_ICMPV6 = 58;
const IPV6_MTU_DISCOVER = 23;
const IPV6_DONTFRAG = 62;
const IPV6_PMTUDISC_DONT = 0;
const IPV6_PMTUDISC_PROBE = 3;
const ICMP6_FILTER = 1;
const SOCKADDR_IN6_SIZE = 28;
export const ICMP6_DST_UNREACH = 1;
export const ICMP6_PACKET_TOO_BIG = 2;
const ICMP6_ECHO_REQUEST = 128;
const ICMP6_ECHO_REPLY = 129;
const IP6_HEADER = 40;
const ICMP_HEADER = 8;

/** What one read returned: an echo reply, or an error about one of our echoes. */
export type Icmp6Message =
  | { kind: "reply"; from: bigint; id: number; seq: number }
  | {
    kind: "unreachable";
    from: bigint;
    /** ICMP6_DST_UNREACH or ICMP6_PACKET_TOO_BIG. */
    type: number;
    /** The MTU a "packet too big" names; 0 otherwise. */
    mtu: number;
    dst: bigint;
    id: number;
    seq: number;
  };

export interface Icmp6Socket {
  fd: number;
  /** Sends one echo request; false when the kernel refused it as too big (EMSGSIZE). */
  sendEcho(dst: bigint, o: EchoOptions): boolean;
  recv(): Icmp6Message | null;
  close(): void;
}

/** An ICMPv6 echo request for an IPv6 packet of `size` bytes (checksum left to the kernel). */
export function echoRequest6(id: number, seq: number, size: number): Uint8Array<ArrayBuffer> {
  const b = new Uint8Array(new ArrayBuffer(Math.max(ICMP_HEADER, size - IP6_HEADER)));
  const v = new DataView(b.buffer);
  v.setUint8(0, ICMP6_ECHO_REQUEST);
  v.setUint16(4, id);
  v.setUint16(6, seq);
  for (let i = ICMP_HEADER; i < b.length; i++) b[i] = i & 0xff;
  return b;
}

const addr6 = (v: DataView, off: number): bigint =>
  (v.getBigUint64(off) << 64n) | v.getBigUint64(off + 8);

/** Parses one read (raw ICMPv6 sockets get no IPv6 header) sent by `from`. */
export function parseIcmp6(b: Uint8Array, n: number, from: bigint): Icmp6Message | null {
  if (n < ICMP_HEADER) return null;
  const v = new DataView(b.buffer, b.byteOffset, n);
  const type = v.getUint8(0);
  if (type === ICMP6_ECHO_REPLY) {
    return { kind: "reply", from, id: v.getUint16(4), seq: v.getUint16(6) };
  }
  if (type !== ICMP6_DST_UNREACH && type !== ICMP6_PACKET_TOO_BIG) return null;
  // The quoted original: its IPv6 header, then our echo request (no extension headers: ours).
  const q = ICMP_HEADER;
  if (n < q + IP6_HEADER + ICMP_HEADER || v.getUint8(q + 6) !== IPPROTO_ICMPV6) return null;
  if (v.getUint8(q + IP6_HEADER) !== ICMP6_ECHO_REQUEST) return null;
  return {
    kind: "unreachable",
    from,
    type,
    mtu: type === ICMP6_PACKET_TOO_BIG ? v.getUint32(4) : 0,
    dst: addr6(v, q + 24),
    id: v.getUint16(q + IP6_HEADER + 4),
    seq: v.getUint16(q + IP6_HEADER + 6),
  };
}

/** Opens the socket; throws ErrnoError (EPERM without CAP_NET_RAW). */
export function openIcmp6Socket(): Icmp6Socket {
  const c = libc();
  const fd = c.socket(AF_INET6, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_ICMPV6);
  if (fd < 0) {
    throw lastError("socket", "AF_INET6, SOCK_RAW, IPPROTO_ICMPV6", {
      EPERM: "ICMPv6 probes need root or CAP_NET_RAW",
    });
  }
  raiseProbeBuffers(fd);
  // struct icmp6_filter: a set bit blocks its type. Pass echo replies and the two errors only.
  const filter = new Uint32Array(new ArrayBuffer(32)).fill(0xffffffff);
  for (const t of [ICMP6_ECHO_REPLY, ICMP6_DST_UNREACH, ICMP6_PACKET_TOO_BIG]) {
    filter[t >> 5] &= ~(1 << (t & 31));
  }
  if (c.setsockopt(fd, IPPROTO_ICMPV6, ICMP6_FILTER, Deno.UnsafePointer.of(filter), 32) < 0) {
    const e = lastError("setsockopt", "ICMP6_FILTER");
    closeFd(fd);
    throw e;
  }
  let pmtu = -1;
  const sa = new Uint8Array(new ArrayBuffer(SOCKADDR_IN6_SIZE));
  const saView = new DataView(sa.buffer);
  const buf = new Uint8Array(new ArrayBuffer(65536));
  const from = new Uint8Array(new ArrayBuffer(SOCKADDR_IN6_SIZE));
  const fromView = new DataView(from.buffer);
  const fromLen = new Uint32Array(new ArrayBuffer(4));
  return {
    fd,
    sendEcho(dst, o) {
      // PROBE + DONTFRAG: never fragment locally, ignore the cached path MTU (see icmp.ts).
      const want = o.df ? IPV6_PMTUDISC_PROBE : IPV6_PMTUDISC_DONT;
      if (want !== pmtu) {
        setSockOptInt(fd, IPPROTO_IPV6, IPV6_MTU_DISCOVER, want);
        setSockOptInt(fd, IPPROTO_IPV6, IPV6_DONTFRAG, o.df ? 1 : 0);
        pmtu = want;
      }
      const pkt = echoRequest6(o.id, o.seq, o.size);
      sa.fill(0);
      saView.setUint16(0, AF_INET6, true);
      saView.setBigUint64(8, dst >> 64n);
      saView.setBigUint64(16, dst & 0xffffffffffffffffn);
      return sendProbe(fd, pkt, sa, `icmpv6 echo, ${o.size} bytes`);
    },
    recv() {
      for (;;) {
        const n = recvProbe(fd, buf, from, fromLen, "icmpv6 socket");
        if (n === null) return null;
        const m = parseIcmp6(buf, n, addr6(fromView, 8));
        if (m) return m;
      }
    },
    close() {
      closeFd(fd);
    },
  };
}
