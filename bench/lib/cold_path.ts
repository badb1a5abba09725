/**
 * What starting idle costs on this machine: one 84-byte datagram over loopback in this process
 * (sendmmsg, then poll and recvmmsg on the receiving socket), timed back to back (warm) and
 * after the thread slept `idleMs` (cold: the CPU went idle meanwhile). Each of the udp
 * backend's four hops per ping round trip starts like the cold case at 10 ms intervals, while
 * kernel vxlan runs the whole round trip in the sending context; this probe shows how much of
 * the ping figure that alone explains.
 *
 * @example
 * ```ts
 * const r = coldPathProbe({ warm: 2000, cold: 100, idleMs: 10 });
 * r.cold.sendUs.p50 / r.warm.sendUs.p50; // ≈ 10 on the 2-core VM this was written on
 * ```
 */
import { closeFd, MsgBatch, openUdpSocket, POLLIN, PollSet } from "../../ffi/libc/mod.ts";

export interface PathTimes {
  samples: number;
  /** sendmmsg of one datagram, µs. */
  sendUs: { p50: number; p90: number };
  /** send, poll until readable and recvmmsg, µs. */
  roundUs: { p50: number; p90: number };
}

const LOOPBACK = 0x7f000001;

function quantiles(xs: number[]): { p50: number; p90: number } {
  const s = [...xs].sort((a, b) => a - b);
  const at = (q: number) =>
    Math.round(s[Math.min(s.length - 1, Math.floor(q * s.length))] * 10) / 10;
  return { p50: at(0.5), p90: at(0.9) };
}

/** Runs `warm` back-to-back and `cold` idle-first sends (bounded: cold × idleMs + ~1 s). */
export function coldPathProbe(o: { warm: number; cold: number; idleMs: number }): {
  warm: PathTimes;
  cold: PathTimes;
} {
  const a = openUdpSocket(LOOPBACK, 0), b = openUdpSocket(LOOPBACK, 0);
  try {
    const tx = new MsgBatch(1, 2048, b.port), rx = new MsgBatch(1, 2048, 0);
    tx.setPeerIp(0, LOOPBACK);
    tx.setLength(0, 84);
    const ps = new PollSet([b.fd], POLLIN);
    const sleeper = new Int32Array(new SharedArrayBuffer(4));
    const run = (n: number, idleMs: number): PathTimes => {
      const send: number[] = [], round: number[] = [];
      for (let i = 0; i < n; i++) {
        if (idleMs > 0) Atomics.wait(sleeper, 0, 0, idleMs);
        const t0 = performance.now();
        if (tx.send(a.fd, 0, 1) !== 1) throw new Error("loopback sendmmsg failed");
        const t1 = performance.now();
        if (ps.wait(100) === 0) throw new Error("loopback datagram did not arrive in 100 ms");
        rx.recv(b.fd);
        const t2 = performance.now();
        send.push((t1 - t0) * 1000);
        round.push((t2 - t0) * 1000);
      }
      return { samples: n, sendUs: quantiles(send), roundUs: quantiles(round) };
    };
    run(200, 0); // JIT and caches
    return { warm: run(o.warm, 0), cold: run(o.cold, o.idleMs) };
  } finally {
    closeFd(a.fd);
    closeFd(b.fd);
  }
}
