/**
 * What the raw ICMP and ICMPv6 echo sockets (icmp.ts, icmp6.ts) share: room in the socket buffers,
 * one send that treats a lost probe as lost (not as the prober's failure), and one non-blocking
 * read. The two differ only in addresses and packet layout.
 *
 * @example
 * ```ts
 * raiseProbeBuffers(fd);
 * const sent = sendProbe(fd, pkt, sockaddr, "icmp echo, 1450 bytes"); // false: EMSGSIZE
 * const n = recvProbe(fd, buf, from, fromLen, "icmp socket"); // null: nothing queued
 * ```
 */
import { Errno, lastError } from "./errno.ts";
import { errno, libc } from "./lib.ts";
import {
  setSockOptInt,
  SO_RCVBUF,
  SO_RCVBUFFORCE,
  SO_SNDBUF,
  SO_SNDBUFFORCE,
  SOL_SOCKET,
} from "./udp.ts";

/**
 * Echoes to dead peers wait in their unresolved neighbours' queues for seconds and count against
 * the send buffer, and every ICMP message of the namespace (their host-unreachable errors too) is
 * queued for reading: room for thousands each way, so dead peers never crowd out a live peer's
 * probe (with the defaults, 300 dead peers made every send fail ENOBUFS).
 */
export function raiseProbeBuffers(fd: number): void {
  for (const [force, plain] of [[SO_RCVBUFFORCE, SO_RCVBUF], [SO_SNDBUFFORCE, SO_SNDBUF]]) {
    try {
      setSockOptInt(fd, SOL_SOCKET, force, 8 << 20);
    } catch {
      setSockOptInt(fd, SOL_SOCKET, plain, 8 << 20);
    }
  }
}

/** Sends `pkt` to the sockaddr `sa`; false when it is larger than the path allows (EMSGSIZE). */
export function sendProbe(fd: number, pkt: Uint8Array, sa: Uint8Array, what: string): boolean {
  const c = libc();
  for (;;) {
    const n = c.sendto(
      fd,
      Deno.UnsafePointer.of(pkt as Uint8Array<ArrayBuffer>),
      BigInt(pkt.byteLength),
      0,
      Deno.UnsafePointer.of(sa as Uint8Array<ArrayBuffer>),
      sa.byteLength,
    );
    if (n >= 0) return true;
    const e = errno();
    if (e === Errno.EINTR) continue;
    if (e === Errno.EMSGSIZE) return false;
    // No route, the neighbour is unresolvable, too many packets wait for unresolved neighbours
    // (ENOBUFS), or a local firewall dropped it (EPERM): the probe is lost, not the prober.
    if (
      e === Errno.EAGAIN || e === Errno.EHOSTUNREACH || e === Errno.ENETUNREACH ||
      e === Errno.ENOBUFS || e === Errno.EPERM
    ) {
      return true;
    }
    throw lastError("sendto", what);
  }
}

/** Reads one datagram into `buf` (its sender into `from`); its length, or null when none waits. */
export function recvProbe(
  fd: number,
  buf: Uint8Array,
  from: Uint8Array,
  fromLen: Uint32Array,
  what: string,
): number | null {
  const c = libc();
  for (;;) {
    fromLen[0] = from.byteLength;
    const n = c.recvfrom(
      fd,
      Deno.UnsafePointer.of(buf as Uint8Array<ArrayBuffer>),
      BigInt(buf.byteLength),
      0,
      Deno.UnsafePointer.of(from as Uint8Array<ArrayBuffer>),
      Deno.UnsafePointer.of(fromLen as Uint32Array<ArrayBuffer>),
    );
    if (n >= 0) return n;
    const e = errno();
    if (e === Errno.EINTR) continue;
    if (e === Errno.EAGAIN) return null;
    throw lastError("recvfrom", what);
  }
}
