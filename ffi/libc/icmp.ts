/**
 * A non-blocking raw ICMP socket (AF_INET, SOCK_RAW, IPPROTO_ICMP; needs root or CAP_NET_RAW) for
 * echo probes: send an echo request of an exact IP size, optionally with don't-fragment, and read
 * back echo replies and "fragmentation needed" errors. Bindings and packet layout only; the
 * probing logic (ids, timeouts, RTT) lives with its user (src/health/probe.ts).
 *
 * @example
 * ```ts
 * const s = openIcmpSocket();
 * s.sendEcho(parseIp("198.19.5.0"), { id: 7, seq: 1, size: 1450, df: true });
 * const m = s.recv(); // null when nothing is queued
 * s.close();
 * ```
 */
import { lastError } from "./errno.ts";
import { libc } from "./lib.ts";
import { closeFd } from "./fd.ts";
import { raiseProbeBuffers, recvProbe, sendProbe } from "./raw_probe.ts";
import {
  AF_INET,
  setSockOptInt,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
  SOCKADDR_IN_SIZE,
  writeSockaddrIn,
} from "./udp.ts";

const SOCK_RAW = 3;
const IPPROTO_ICMP = 1;
const IPPROTO_IP = 0;
const IP_MTU_DISCOVER = 10;
const IP_PMTUDISC_DONT = 0;
const IP_PMTUDISC_PROBE = 3;
const ICMP_ECHO_REPLY = 0;
const ICMP_DEST_UNREACH = 3;
const ICMP_ECHO = 8;
const IP_HEADER = 20;
const ICMP_HEADER = 8;

/** What one read returned: an echo reply, or an error about one of our echoes. */
export type IcmpMessage =
  | { kind: "reply"; from: number; id: number; seq: number; bytes: number }
  | {
    kind: "unreachable";
    from: number;
    code: number;
    mtu: number;
    dst: number;
    id: number;
    seq: number;
  };

export interface EchoOptions {
  id: number;
  seq: number;
  /** Total IP packet size in bytes (header 20 + ICMP 8 + payload); at least 28. */
  size: number;
  /** Set don't-fragment and never fragment locally (a path-MTU probe). */
  df: boolean;
}

export interface IcmpSocket {
  fd: number;
  /** Sends one echo request; returns false when the kernel refused it as too big (EMSGSIZE). */
  sendEcho(dst: number, o: EchoOptions): boolean;
  /** The next queued message of interest, or null when none is queued. */
  recv(): IcmpMessage | null;
  close(): void;
}

/** The Internet checksum of `b`. */
export function inetChecksum(b: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i + 1 < b.length; i += 2) sum += (b[i] << 8) | b[i + 1];
  if (b.length % 2) sum += b[b.length - 1] << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** An echo request's ICMP bytes for a packet of `size` IP bytes. */
export function echoRequest(id: number, seq: number, size: number): Uint8Array<ArrayBuffer> {
  const b = new Uint8Array(new ArrayBuffer(Math.max(ICMP_HEADER, size - IP_HEADER)));
  const v = new DataView(b.buffer);
  v.setUint8(0, ICMP_ECHO);
  v.setUint16(4, id);
  v.setUint16(6, seq);
  for (let i = ICMP_HEADER; i < b.length; i++) b[i] = i & 0xff;
  v.setUint16(2, inetChecksum(b));
  return b;
}

/** Parses a raw socket read (IP header + ICMP); null for anything but replies and unreachables. */
export function parseIcmp(b: Uint8Array, n: number): IcmpMessage | null {
  if (n < IP_HEADER + ICMP_HEADER) return null;
  const v = new DataView(b.buffer, b.byteOffset, n);
  const ihl = (v.getUint8(0) & 0x0f) * 4;
  if (n < ihl + ICMP_HEADER) return null;
  const from = v.getUint32(12);
  const type = v.getUint8(ihl);
  if (type === ICMP_ECHO_REPLY) {
    return { kind: "reply", from, id: v.getUint16(ihl + 4), seq: v.getUint16(ihl + 6), bytes: n };
  }
  if (type !== ICMP_DEST_UNREACH) return null;
  // The quoted original: its IP header, then at least 8 bytes of our echo request.
  const q = ihl + ICMP_HEADER;
  if (n < q + IP_HEADER) return null;
  const qihl = (v.getUint8(q) & 0x0f) * 4;
  if (n < q + qihl + ICMP_HEADER || v.getUint8(q + 9) !== IPPROTO_ICMP) return null;
  if (v.getUint8(q + qihl) !== ICMP_ECHO) return null;
  return {
    kind: "unreachable",
    from,
    code: v.getUint8(ihl + 1),
    mtu: v.getUint16(ihl + 6),
    dst: v.getUint32(q + 16),
    id: v.getUint16(q + qihl + 4),
    seq: v.getUint16(q + qihl + 6),
  };
}

/** Opens the socket; throws ErrnoError (EPERM without CAP_NET_RAW). */
export function openIcmpSocket(): IcmpSocket {
  const c = libc();
  const fd = c.socket(AF_INET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_ICMP);
  if (fd < 0) {
    throw lastError("socket", "AF_INET, SOCK_RAW, IPPROTO_ICMP", {
      EPERM: "ICMP probes need root or CAP_NET_RAW",
    });
  }
  raiseProbeBuffers(fd);
  let pmtu = -1;
  const sa = new Uint8Array(new ArrayBuffer(SOCKADDR_IN_SIZE));
  const saView = new DataView(sa.buffer);
  const buf = new Uint8Array(new ArrayBuffer(65536));
  const from = new Uint8Array(new ArrayBuffer(SOCKADDR_IN_SIZE));
  const fromLen = new Uint32Array(new ArrayBuffer(4));
  return {
    fd,
    sendEcho(dst, o) {
      // PROBE: set DF and ignore the cached path MTU, so the probe finds the path as it is now.
      const want = o.df ? IP_PMTUDISC_PROBE : IP_PMTUDISC_DONT;
      if (want !== pmtu) {
        setSockOptInt(fd, IPPROTO_IP, IP_MTU_DISCOVER, want);
        pmtu = want;
      }
      const pkt = echoRequest(o.id, o.seq, o.size);
      writeSockaddrIn(saView, 0, dst, 0);
      return sendProbe(fd, pkt, sa, `icmp echo, ${o.size} bytes`);
    },
    recv() {
      for (;;) {
        const n = recvProbe(fd, buf, from, fromLen, "icmp socket");
        if (n === null) return null;
        const m = parseIcmp(buf, n);
        if (m) return m;
      }
    },
    close() {
      closeFd(fd);
    },
  };
}
