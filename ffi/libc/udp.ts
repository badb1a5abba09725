/**
 * IPv4 UDP sockets: create, bind to `addr:port`, size the kernel buffers, one-shot sendto.
 * Addresses are 32-bit numbers in host order as in src/base/ipv4.ts.
 *
 * @example
 * ```ts
 * const s = openUdpSocket(parseIp("198.18.0.1"), 8285, { rcvBuf: 4 << 20, sndBuf: 4 << 20 });
 * sendTo(s.fd, packet, parseIp("198.18.0.2"), 8285);
 * closeFd(s.fd);
 * ```
 */
import { closeFd } from "./fd.ts";
import { Errno, lastError } from "./errno.ts";
import { errno, libc } from "./lib.ts";

export const AF_INET = 2;
export const SOCK_DGRAM = 2;
export const SOCK_NONBLOCK = 0x800;
export const SOCK_CLOEXEC = 0x80000;
export const SOL_SOCKET = 1;
export const SO_REUSEADDR = 2;
export const SO_SNDBUF = 7;
export const SO_RCVBUF = 8;
export const SO_SNDBUFFORCE = 32;
export const SO_RCVBUFFORCE = 33;
export const MSG_DONTWAIT = 0x40;
export const MSG_TRUNC = 0x20;
export const SOCKADDR_IN_SIZE = 16;

const ipText = (ip: number) =>
  `${(ip >>> 24) & 255}.${(ip >>> 16) & 255}.${(ip >>> 8) & 255}.${ip & 255}`;

/** Writes a sockaddr_in at `off` of `view`. */
export function writeSockaddrIn(view: DataView, off: number, ip: number, port: number): void {
  view.setUint16(off, AF_INET, true);
  view.setUint16(off + 2, port, false);
  view.setUint32(off + 4, ip >>> 0, false);
  view.setUint32(off + 8, 0);
  view.setUint32(off + 12, 0);
}

/** Reads a sockaddr_in at `off` of `view`. */
export function readSockaddrIn(view: DataView, off: number): { ip: number; port: number } {
  return { ip: view.getUint32(off + 4, false), port: view.getUint16(off + 2, false) };
}

export interface UdpSocketOptions {
  /** Receive buffer bytes (SO_RCVBUFFORCE as root, else SO_RCVBUF capped by rmem_max). */
  rcvBuf?: number;
  /** Send buffer bytes (SO_SNDBUFFORCE as root, else SO_SNDBUF capped by wmem_max). */
  sndBuf?: number;
  /** O_NONBLOCK; default true. The packet loop uses MSG_DONTWAIT and poll() either way. */
  nonBlocking?: boolean;
  /** SO_REUSEADDR; default false. */
  reuseAddr?: boolean;
}

export interface UdpSocket {
  fd: number;
  /** Bound address and port (the port the kernel chose when 0 was asked). */
  ip: number;
  port: number;
  /** Buffer sizes as the kernel reports them (it doubles the requested value). */
  rcvBuf: number;
  sndBuf: number;
}

/** setsockopt(fd, level, opt, &int). */
export function setSockOptInt(fd: number, level: number, opt: number, value: number): void {
  const v = new Int32Array(new ArrayBuffer(8)); // off-heap: V8 may move tiny typed arrays
  v[0] = value;
  if (libc().setsockopt(fd, level, opt, Deno.UnsafePointer.of(v), 4) < 0) {
    throw lastError("setsockopt", `${fd}, ${level}, ${opt}, ${value}`);
  }
}

/** getsockopt(fd, level, opt) for an int option. */
export function getSockOptInt(fd: number, level: number, opt: number): number {
  const v = new Int32Array(new ArrayBuffer(8));
  v[1] = 4;
  const lenPtr = Deno.UnsafePointer.create(Deno.UnsafePointer.value(Deno.UnsafePointer.of(v)) + 4n);
  if (libc().getsockopt(fd, level, opt, Deno.UnsafePointer.of(v), lenPtr) < 0) {
    throw lastError("getsockopt", `${fd}, ${level}, ${opt}`);
  }
  return v[0];
}

/** Sizes a socket buffer, preferring the *FORCE option (root may exceed net.core.*mem_max). */
function sizeBuffer(fd: number, force: number, plain: number, bytes: number): void {
  try {
    setSockOptInt(fd, SOL_SOCKET, force, bytes);
  } catch {
    setSockOptInt(fd, SOL_SOCKET, plain, bytes);
  }
}

/**
 * Creates an AF_INET UDP socket bound to `ip:port`. Throws ErrnoError: EADDRINUSE (another
 * process, e.g. flanneld, holds the port), EADDRNOTAVAIL (the address is not on this host).
 */
export function openUdpSocket(ip: number, port: number, opts: UdpSocketOptions = {}): UdpSocket {
  const c = libc();
  const type = SOCK_DGRAM | SOCK_CLOEXEC | ((opts.nonBlocking ?? true) ? SOCK_NONBLOCK : 0);
  const fd = c.socket(AF_INET, type, 0);
  if (fd < 0) throw lastError("socket", "AF_INET, SOCK_DGRAM");
  try {
    if (opts.reuseAddr) setSockOptInt(fd, SOL_SOCKET, SO_REUSEADDR, 1);
    if (opts.rcvBuf) sizeBuffer(fd, SO_RCVBUFFORCE, SO_RCVBUF, opts.rcvBuf);
    if (opts.sndBuf) sizeBuffer(fd, SO_SNDBUFFORCE, SO_SNDBUF, opts.sndBuf);
    const sa = new Uint8Array(new ArrayBuffer(SOCKADDR_IN_SIZE));
    const view = new DataView(sa.buffer);
    writeSockaddrIn(view, 0, ip, port);
    if (c.bind(fd, Deno.UnsafePointer.of(sa), SOCKADDR_IN_SIZE) < 0) {
      throw lastError("bind", `udp ${ipText(ip)}:${port}`, {
        EADDRINUSE: `another process holds udp port ${port} on ${ipText(ip)} ` +
          "(a flanneld still running?); stop it or choose another port",
        EADDRNOTAVAIL: `${ipText(ip)} is not an address of this host; check --iface/--public-ip`,
        EACCES: "binding a port below 1024 needs root or CAP_NET_BIND_SERVICE",
      });
    }
    const len = new Uint32Array(new ArrayBuffer(4));
    len[0] = SOCKADDR_IN_SIZE;
    if (c.getsockname(fd, Deno.UnsafePointer.of(sa), Deno.UnsafePointer.of(len)) < 0) {
      throw lastError("getsockname", String(fd));
    }
    const bound = readSockaddrIn(view, 0);
    return {
      fd,
      ip: bound.ip,
      port: bound.port,
      rcvBuf: getSockOptInt(fd, SOL_SOCKET, SO_RCVBUF),
      sndBuf: getSockOptInt(fd, SOL_SOCKET, SO_SNDBUF),
    };
  } catch (e) {
    closeFd(fd);
    throw e;
  }
}

/** The local address and port a socket is bound to (getsockname). */
export function localAddress(fd: number): { ip: number; port: number } {
  const sa = new Uint8Array(new ArrayBuffer(64));
  const len = new Uint32Array(new ArrayBuffer(64));
  len[0] = SOCKADDR_IN_SIZE;
  if (libc().getsockname(fd, Deno.UnsafePointer.of(sa), Deno.UnsafePointer.of(len)) < 0) {
    throw lastError("getsockname", String(fd));
  }
  return readSockaddrIn(new DataView(sa.buffer), 0);
}

/**
 * One datagram to `ip:port` (control paths and tests; the packet loop uses sendmmsg). Returns
 * bytes sent, or null when a non-blocking socket's buffer is full (EAGAIN).
 */
export function sendTo(
  fd: number,
  data: Uint8Array<ArrayBuffer>,
  ip: number,
  port: number,
): number | null {
  const sa = new Uint8Array(new ArrayBuffer(SOCKADDR_IN_SIZE));
  writeSockaddrIn(new DataView(sa.buffer), 0, ip, port);
  const c = libc();
  for (;;) {
    const n = c.sendto(
      fd,
      Deno.UnsafePointer.of(data),
      BigInt(data.byteLength),
      0,
      Deno.UnsafePointer.of(sa),
      SOCKADDR_IN_SIZE,
    );
    if (n >= 0) return n;
    const e = errno();
    if (e === Errno.EINTR) continue;
    if (e === Errno.EAGAIN) return null;
    throw lastError("sendto", `${fd}, ${data.byteLength} bytes, ${ipText(ip)}:${port}`);
  }
}
