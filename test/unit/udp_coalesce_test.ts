/**
 * Property/fuzz tests of the udp backend's receive-side coalescer (src/backend/udp/udp_to_tun.ts,
 * class UdpToTun with vnetHdr), driven through real sockets but without a TUN: datagrams (each one
 * raw IPv4 packet) are sent from one loopback UDP socket to another, UdpToTun receives them and
 * writes into a FIFO standing in for the TUN, and the test reads the FIFO back.
 *
 * Each write is a 10-byte virtio_net_hdr and one IPv4 packet whose total-length field is exact, so
 * the byte stream splits without framing. Super-packets (GSO_TCPV4) are cut into segments again
 * with the module's own TSO code (TsoPlan/writeTsoSegment), and the resulting packets must equal,
 * byte for byte and in order, the packets sent minus those dropped (TTL ≤ 1, malformed, not
 * IPv4), each with its TTL decremented and its IP checksum updated. The grouping into writes must
 * match an independent model of Linux GRO's rule (tcp_gro_receive): only adjacent TCP segments of
 * one flow (same addresses, ports, TOS, TTL, DF, ack, window, options...), each continuing the
 * previous one's sequence, ACK or ACK|PSH only, valid IP and TCP checksums, payload at most the
 * first's; a shorter or PSH segment ends the burst; at most 64 segments and 65535 bytes; nothing
 * survives the end of a receive batch. Deterministic input (seeded PRNG); about 3 s.
 * Needs --allow-ffi, --allow-run (mkfifo), --allow-write (a temporary directory).
 */
import assert from "node:assert/strict";
import {
  closeFd,
  libc,
  MsgBatch,
  O_NONBLOCK,
  O_RDWR,
  openPath,
  openUdpSocket,
  readFd,
  sendTo,
} from "../../ffi/libc/mod.ts";
import { UdpToTun } from "../../src/backend/udp/udp_to_tun.ts";
import {
  completeChecksum,
  GSO_TCPV4,
  readVnetHdr,
  TsoPlan,
  VNET_F_NEEDS_CSUM,
  VNET_HDR_LEN,
  type VnetHdr,
  writeTsoSegment,
} from "../../src/backend/udp/offload.ts";
import { words } from "../../src/backend/udp/checksum.ts";
import { PeerTable } from "../../src/backend/udp/peers.ts";
import { newCounterBuffer, RX } from "../../src/backend/udp/counters.ts";
import {
  ACK,
  CWR,
  ECE,
  FIN,
  ICMP,
  ihlOf,
  ipHeaderOk,
  ipNum,
  l4ChecksumOk,
  PSH,
  Rand,
  refPseudo,
  refSum,
  RST,
  setIpChecksum,
  setL4Checksum,
  SYN,
  TCP,
  u16,
  u32,
  UDP,
  URG,
  writeIpv4Header,
} from "../kit/packets.ts";

const LOOPBACK = 0x7f000001;
const F_SETPIPE_SZ = 1031;
const F_GETPIPE_SZ = 1032;
/** Limits of the coalescer under test (and of Linux GRO's 64 KiB). */
const MAX_SEGMENTS = 64;
const MAX_TOTAL = 65535;
/** Sender slots: datagrams per chunk and largest datagram. */
const SEND_SLOTS = 256;
const SEND_SLOT_SIZE = 32768;
/** Largest UDP GSO message the test builds. */
const GSO_MAX = 60000;

// ---------------------------------------------------------------------------------------------
// Deterministic randomness

/** Payload bytes are slices of this pool (random, fixed). */
const POOL = (() => {
  const r = new Rand(0x5eed);
  const b = new Uint8Array(1 << 17);
  for (let i = 0; i < b.length; i++) b[i] = Math.floor(r.next() * 256);
  return b;
})();

// ---------------------------------------------------------------------------------------------
// Packet builders

/** One TCP connection's state (the sender's view). */
interface Flow {
  src: number[];
  dst: number[];
  sport: number;
  dport: number;
  seq: number;
  ack: number;
  window: number;
  id: number;
  ttl: number;
  tos: number;
  /** TCP options (a multiple of 4 bytes): none, or NOP NOP timestamp. */
  opts: number[];
  mss: number;
  /** Payloads vary between mss/2 and mss (a sender whose segment size jitters). */
  jitter: boolean;
}

interface TcpSpec {
  payload: number;
  flags?: number;
  seq?: number;
  ack?: number;
  window?: number;
  ttl?: number;
  tos?: number;
  /** IP flags + fragment offset word (default DF only). */
  frag?: number;
  urgent?: number;
  /** Byte 12's low nibble (reserved bits / AE). */
  res?: number;
  opts?: number[];
  ipOpts?: number[];
  /** Corrupt the TCP checksum ("field": flip a bit of it, "data": flip a payload byte after). */
  badTcp?: "field" | "data";
  badIp?: boolean;
  /** Trailing bytes after the IP packet in the datagram (not part of the packet). */
  pad?: number;
  proto?: number;
  /** Addresses and ports other than the flow's. */
  src?: number[];
  dst?: number[];
  sport?: number;
  dport?: number;
}

/** A TCP/IPv4 datagram of flow `f` (id taken from f and advanced; seq not advanced). */
function tcpDatagram(f: Flow, s: TcpSpec, r: Rand): Uint8Array<ArrayBuffer> {
  const ipOpts = s.ipOpts ?? [];
  const opts = s.opts ?? f.opts;
  const ihl = 20 + ipOpts.length;
  const thl = 20 + opts.length;
  const total = ihl + thl + s.payload;
  const pad = s.pad ?? 0;
  const p = new Uint8Array(total + pad);
  writeIpv4Header(p, 0, {
    total,
    proto: s.proto ?? TCP,
    src: s.src ?? f.src,
    dst: s.dst ?? f.dst,
    tos: s.tos ?? f.tos,
    id: f.id,
    frag: s.frag,
    ttl: s.ttl ?? f.ttl,
    options: ipOpts,
  });
  f.id = (f.id + 1) & 0xffff;
  const t = ihl;
  const sport = s.sport ?? f.sport, dport = s.dport ?? f.dport;
  p[t] = sport >> 8;
  p[t + 1] = sport & 0xff;
  p[t + 2] = dport >> 8;
  p[t + 3] = dport & 0xff;
  const seq = (s.seq ?? f.seq) >>> 0;
  const ack = (s.ack ?? f.ack) >>> 0;
  for (let i = 0; i < 4; i++) {
    p[t + 4 + i] = (seq >>> (24 - 8 * i)) & 0xff;
    p[t + 8 + i] = (ack >>> (24 - 8 * i)) & 0xff;
  }
  p[t + 12] = ((thl >> 2) << 4) | (s.res ?? 0);
  p[t + 13] = s.flags ?? ACK;
  const win = s.window ?? f.window;
  p[t + 14] = win >> 8;
  p[t + 15] = win & 0xff;
  const urg = s.urgent ?? 0;
  p[t + 18] = urg >> 8;
  p[t + 19] = urg & 0xff;
  p.set(opts, t + 20);
  const from = r.int(0, POOL.length - s.payload);
  p.set(POOL.subarray(from, from + s.payload), t + thl);
  for (let i = 0; i < pad; i++) p[total + i] = 0xa5 ^ i;
  setL4Checksum(p.subarray(0, total));
  if (s.badTcp === "field" || (s.badTcp === "data" && s.payload === 0)) p[t + 17] ^= 0x01;
  else if (s.badTcp === "data") p[total - 1] ^= 0x5a;
  if (s.badIp) p[10] ^= 0x04;
  return p;
}

/**
 * A 28 + `payload`-byte packet with flow `f`'s plain IPv4 header (IHL 5, next IP id, `frag`
 * flags word, protocol `proto`), for the UDP and ICMP builders.
 */
function plainPacket(f: Flow, proto: number, payload: number, frag: number) {
  const total = 28 + payload;
  const p = new Uint8Array(total);
  writeIpv4Header(p, 0, { total, proto, src: f.src, dst: f.dst, id: f.id, frag, ttl: f.ttl });
  f.id = (f.id + 1) & 0xffff;
  return { p, total };
}

/** A UDP/IPv4 datagram of flow `f` (its ports), with a full UDP checksum. */
function udpDatagram(f: Flow, payload: number, r: Rand): Uint8Array<ArrayBuffer> {
  const { p, total } = plainPacket(f, UDP, payload, 0x4000);
  p[20] = f.sport >> 8;
  p[21] = f.sport & 0xff;
  p[22] = f.dport >> 8;
  p[23] = f.dport & 0xff;
  p[24] = (total - 20) >> 8;
  p[25] = (total - 20) & 0xff;
  const from = r.int(0, POOL.length - payload);
  p.set(POOL.subarray(from, from + payload), 28);
  setL4Checksum(p, 0, total, UDP);
  return p;
}

/** An ICMP echo request of flow `f`'s addresses. */
function icmpDatagram(f: Flow, payload: number, r: Rand): Uint8Array<ArrayBuffer> {
  const { p, total } = plainPacket(f, ICMP, payload, 0);
  p[20] = 8;
  p[24] = 0x12;
  p[27] = r.int(0, 255);
  const from = r.int(0, POOL.length - payload);
  p.set(POOL.subarray(from, from + payload), 28);
  const c = ~refSum(p, 20, total - 20) & 0xffff;
  p[22] = c >> 8;
  p[23] = c & 0xff;
  return p;
}

const TS_KIND = [1, 1, 8, 10];

function newFlow(r: Rand, mss?: number): Flow {
  const ts = r.chance(0.5);
  const tsval = r.int(0, 0xffffffff);
  return {
    src: [198, r.pick([18, 19]), r.int(0, 255), r.int(1, 254)],
    dst: [198, 19, 2, r.int(1, 254)],
    sport: r.int(1024, 65535),
    dport: r.pick([80, 443, 5201, 8080, r.int(1, 65535)]),
    // Sometimes close to 2^32, so runs wrap around.
    seq: r.chance(0.15) ? (2 ** 32 - r.int(1, 20000)) >>> 0 : r.int(0, 0xffffffff),
    ack: r.int(0, 0xffffffff),
    window: r.int(1, 0xffff),
    id: r.chance(0.15) ? 0xffff - r.int(0, 10) : r.int(0, 0xffff),
    ttl: r.pick([64, 64, 63, 255, 2, 128]),
    tos: r.pick([0, 0, 0, 0x10, 0xb8, 0x02]),
    opts: ts
      ? [
        ...TS_KIND,
        tsval >>> 24,
        (tsval >>> 16) & 255,
        (tsval >>> 8) & 255,
        tsval & 255,
        0,
        0,
        1,
        2,
      ]
      : [],
    mss: mss ?? r.pick([1448, 1448, 1448, 1388, 1460, 536, 1000, 100, 7, 1, 4000, 8948, 16000]),
    jitter: r.chance(0.1),
  };
}

/** One datagram as sent, with a note for failure messages. */
interface Datagram {
  data: Uint8Array<ArrayBuffer>;
  note: string;
}

// ---------------------------------------------------------------------------------------------
// Random sequences

/**
 * A random sequence of datagrams: mostly in-order segments of one or two interleaved TCP flows,
 * mixed with everything that must stop or prevent merging, and with packets that are dropped.
 */
function randomSequence(r: Rand): Datagram[] {
  const out: Datagram[] = [];
  const flows = [newFlow(r)];
  if (r.chance(0.35)) flows.push(newFlow(r));
  // Another flow for packets that must not disturb the TCP flows' IP ids (TTL ≤ 1, UDP, ICMP).
  const other = newFlow(r, 1000);
  let cur = 0;
  const roll = r.next();
  const target = roll < 0.2 ? r.int(1, 8) : roll < 0.7 ? r.int(9, 60) : r.int(61, 160);
  const add = (data: Uint8Array<ArrayBuffer>, note: string) => out.push({ data, note });
  const payloadOf = (f: Flow) => {
    if (f.jitter) return r.int(Math.max(1, f.mss >> 1), f.mss);
    if (f.mss > 1 && r.chance(0.12)) return r.int(1, f.mss - 1);
    return f.mss;
  };
  /** The next in-order segment of flow f (seq advanced), with spec changes. */
  const seg = (f: Flow, s: Partial<TcpSpec> = {}, note = "seg") => {
    const payload = s.payload ?? payloadOf(f);
    const flags = s.flags ?? (r.chance(0.08) ? ACK | PSH : ACK);
    add(tcpDatagram(f, { ...s, payload, flags }, r), note);
    let adv = payload;
    if (flags & (SYN | FIN)) adv++;
    f.seq = (f.seq + adv) >>> 0;
  };
  for (let guard = 0; out.length < target && guard < 1000; guard++) {
    const f = flows[cur];
    const x = r.next();
    if (x < 0.62) {
      seg(f);
      continue;
    }
    if (x < 0.66) {
      if (flows.length === 1 && r.chance(0.3)) flows.push(newFlow(r));
      cur = (cur + 1) % flows.length;
      continue;
    }
    switch (r.int(0, 31)) {
      case 0: { // retransmission: an earlier sequence number, a fresh IP id
        const back = f.mss * r.int(1, 3);
        add(
          tcpDatagram(f, { payload: f.mss, seq: (f.seq - back) >>> 0 }, r),
          "retransmit",
        );
        break;
      }
      case 1: // a lost segment: sequence gap
        f.seq = (f.seq + f.mss * r.int(1, 3)) >>> 0;
        seg(f, {}, "after gap");
        break;
      case 2:
        f.ack = (f.ack + r.int(1, 100000)) >>> 0;
        seg(f, {}, "ack changed");
        break;
      case 3:
        f.window = (f.window + r.int(1, 0xfffe)) % 0x10000;
        seg(f, {}, "window changed");
        break;
      case 4:
        if (f.opts.length) {
          f.opts = [...f.opts];
          f.opts[7] = (f.opts[7] + 1) & 0xff;
          seg(f, {}, "timestamp changed");
        } else seg(f, { opts: [...TS_KIND, 0, 0, 0, 1, 0, 0, 0, 2] }, "options added");
        break;
      case 5: {
        const flags = r.pick([
          SYN,
          SYN | ACK,
          FIN | ACK,
          FIN | PSH | ACK,
          RST,
          RST | ACK,
          URG | ACK,
          ECE | ACK,
          CWR | ACK,
          ECE | CWR | ACK,
          0,
          PSH,
        ]);
        const payload = flags & (SYN | RST) ? 0 : r.chance(0.5) ? f.mss : r.int(0, f.mss);
        seg(f, { flags, payload, urgent: flags & URG ? r.int(1, 100) : 0 }, `flags 0x${flags}`);
        break;
      }
      case 6:
        seg(f, { frag: 0 }, "no DF");
        break;
      case 7:
        seg(f, { frag: r.pick([0x2000, 0x6000, 0x0001, 0x4001]) }, "fragment bits");
        break;
      case 8:
        seg(f, { badTcp: r.pick(["field", "data"] as const) }, "bad TCP checksum");
        break;
      case 9:
        seg(f, { badIp: true }, "bad IP checksum");
        break;
      case 10:
        if (r.chance(0.5)) f.ack = (f.ack + r.int(1, 5000)) >>> 0;
        seg(f, { payload: 0, flags: ACK }, "pure ACK");
        break;
      case 11:
        add(udpDatagram(other, r.int(0, 1400), r), "UDP");
        break;
      case 12:
        add(icmpDatagram(other, r.int(0, 100), r), "ICMP");
        break;
      case 13: // TTL 1 (or 0): dropped by weft, which decrements TTL at each end
        add(
          tcpDatagram(other, { payload: r.int(0, 1000), ttl: r.pick([0, 1, 1]) }, r),
          "TTL ≤ 1",
        );
        break;
      case 14:
        seg(f, { ttl: f.ttl === 2 ? 3 : f.ttl - 1 }, "other TTL");
        break;
      case 15:
        seg(f, { tos: f.tos ^ r.pick([0x01, 0x02, 0x10, 0xb8]) }, "other TOS");
        break;
      case 16:
        seg(f, { ipOpts: [1, 1, 1, 0] }, "IP options");
        break;
      case 17:
        seg(f, { opts: [...f.opts, 1, 1, 1, 1] }, "other TCP header length");
        break;
      case 18:
        seg(f, { pad: r.int(1, 40) }, "trailing bytes");
        break;
      case 19: {
        const kind = r.int(0, 2);
        if (kind === 0) {
          const d = new Uint8Array(r.int(20, 200));
          d[0] = 0x60;
          add(d, "not IPv4");
        } else if (kind === 1) {
          const d = new Uint8Array(r.int(1, 19));
          d[0] = 0x45;
          add(d, "too short");
        } else {
          const d = tcpDatagram(other, { payload: 500 }, r);
          add(d.slice(0, r.int(20, d.length - 1)), "truncated");
        }
        break;
      }
      case 20:
        if (out.length) {
          const last = out[out.length - 1];
          add(last.data.slice(), `duplicate of ${last.note}`);
        }
        break;
      case 21: { // a long run: beyond 64 segments or 65535 bytes
        const n = r.chance(0.5) ? r.int(65, 90) : r.int(40, 64);
        for (let i = 0; i < n; i++) seg(f, { payload: f.mss, flags: ACK }, "long run");
        break;
      }
      case 22:
        seg(f, { urgent: r.int(1, 0xffff) }, "urgent pointer without URG");
        break;
      case 23:
        seg(f, { res: r.pick([1, 2, 4, 8]) }, "TCP reserved bits");
        break;
      case 24:
        f.seq = (2 ** 32 - r.int(0, 3 * f.mss)) >>> 0;
        seg(f, {}, "seq near wrap");
        break;
      case 25: // a new connection, its IP ids about to wrap
        flows[cur] = newFlow(r);
        flows[cur].id = 0xffff - r.int(0, 2);
        seg(flows[cur], {}, "new flow, id near wrap");
        break;
      case 26: // a short segment first, then a full one (larger than the first)
        seg(f, { payload: f.mss > 1 ? r.int(1, f.mss - 1) : 1, flags: ACK }, "short");
        seg(f, { payload: f.mss, flags: ACK }, "full after short");
        break;
      case 27:
        seg(f, { flags: ACK | PSH, payload: f.mss }, "PSH");
        break;
      case 28:
        seg(f, { dport: f.dport ^ (1 << r.int(0, 15)) }, "other destination port");
        break;
      case 29:
        seg(f, { sport: f.sport ^ (1 << r.int(0, 15)) }, "other source port");
        break;
      case 30: { // one address byte different (still within 198.18.0.0/15)
        const src = [...f.src], dst = [...f.dst];
        const a = r.chance(0.5) ? src : dst;
        const i = r.int(1, 3);
        a[i] ^= i === 1 ? 1 : 1 << r.int(0, 7);
        seg(f, { src, dst }, "other address");
        break;
      }
      case 31: { // segments without DF (IP ids consecutive): not merged either
        const n = r.int(2, 5);
        for (let i = 0; i < n; i++) {
          seg(f, { frag: 0, payload: f.mss, flags: ACK }, "run without DF");
        }
        break;
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The expectation: what weft must write for one receive batch

/** The packet weft writes for a datagram (TTL decremented), or null when it drops it. */
function expectedPacket(d: Uint8Array): Uint8Array | null {
  if (dropReason(d) !== null) return null;
  const p = d.slice(0, u16(d, 2));
  p[8]--;
  setIpChecksum(p);
  return p;
}

/**
 * Why a datagram is dropped (for the counters), or null. A wrong inner header checksum is a
 * counted drop (issue #10): written into the TUN, the kernel would drop it without a trace.
 */
function dropReason(d: Uint8Array): "notV4" | "malformed" | "badSum" | "ttl" | null {
  if (d.length < 20) return "malformed";
  if (d[0] >> 4 !== 4) return "notV4";
  const ihl = ihlOf(d);
  const total = u16(d, 2);
  if (ihl < 20 || ihl > d.length || total < ihl || total > d.length) return "malformed";
  if (!ipHeaderOk(d)) return "badSum";
  return d[8] <= 1 ? "ttl" : null;
}

/**
 * Payload bytes when the packet may be merged (Linux GRO: IPv4 without options, only DF among
 * the fragment bits, TCP with ACK or ACK|PSH here, a payload, valid IP and TCP checksums), else 0.
 */
function mergeablePayload(p: Uint8Array): number {
  if (p.length < 41 || p[0] !== 0x45 || p[9] !== TCP) return 0;
  if (u16(p, 6) !== 0x4000) return 0;
  if (!ipHeaderOk(p)) return 0;
  if (p[33] !== ACK && p[33] !== (ACK | PSH)) return 0;
  const thl = (p[32] >> 4) * 4;
  if (thl < 20 || 20 + thl >= p.length) return 0;
  if (!l4ChecksumOk(p)) return 0;
  return p.length - 20 - thl;
}

/** Whether `p` continues the burst headed by `head` at sequence number `seq`. */
function continues(head: Uint8Array, p: Uint8Array, seq: number): boolean {
  if (u32(p, 24) !== seq) return false;
  if (head[1] !== p[1] || head[8] !== p[8]) return false; // TOS, TTL
  for (let i = 12; i < 20; i++) if (head[i] !== p[i]) return false; // addresses
  if (head[32] !== p[32]) return false; // data offset and reserved bits
  const end = 20 + (head[32] >> 4) * 4;
  // Ports, ack, window, urgent pointer, options (not seq, flags, checksum).
  for (let i = 20; i < end; i++) {
    if ((i >= 24 && i < 28) || i === 33 || i === 36 || i === 37) continue;
    if (head[i] !== p[i]) return false;
  }
  return true;
}

/** The writes expected for one receive batch: each a list of packets (one: written as is). */
function expectedWrites(pkts: readonly Uint8Array[]): Uint8Array[][] {
  const writes: Uint8Array[][] = [];
  let burst: Uint8Array[] | null = null;
  let mss = 0, total = 0, seq = 0;
  for (const p of pkts) {
    const pay = mergeablePayload(p);
    if (burst) {
      if (
        pay > 0 && pay <= mss && burst.length < MAX_SEGMENTS && total + pay <= MAX_TOTAL &&
        continues(burst[0], p, seq)
      ) {
        burst.push(p);
        total += pay;
        seq = (seq + pay) >>> 0;
        if (pay < mss || (p[33] & PSH)) burst = null;
        continue;
      }
      burst = null;
    }
    if (pay > 0 && !(p[33] & PSH)) {
      burst = [p];
      writes.push(burst);
      mss = pay;
      total = p.length;
      seq = (u32(p, 24) + pay) >>> 0;
    } else writes.push([p]);
  }
  return writes;
}

/** The super-packet weft must write for a burst (headers of the first, payloads of all). */
function expectedSuper(burst: readonly Uint8Array[]): Uint8Array {
  const head = burst[0];
  const hl = 20 + (head[32] >> 4) * 4;
  const total = burst.reduce((n, p) => n + p.length - hl, hl);
  const s = new Uint8Array(total);
  s.set(head);
  let at = head.length;
  for (let i = 1; i < burst.length; i++) {
    s.set(burst[i].subarray(hl), at);
    at += burst[i].length - hl;
  }
  s[2] = total >> 8;
  s[3] = total & 0xff;
  setIpChecksum(s);
  if (burst[burst.length - 1][33] & PSH) s[33] |= PSH;
  const ps = refPseudo(s, 0, TCP, total - 20);
  s[36] = ps >> 8;
  s[37] = ps & 0xff;
  return s;
}

// ---------------------------------------------------------------------------------------------
// The rig: loopback sockets, a FIFO for the TUN, the real UdpToTun

interface Rig {
  pump: UdpToTun;
  counters: Float64Array;
  fifo: number;
  rx: number;
  tx: number;
  port: number;
  vnet: boolean;
  gso: boolean;
  /** Bytes one chunk of datagrams may hold (what is written back fits the FIFO). */
  chunkBytes: number;
  sender: MsgBatch;
  readBuf: Uint8Array<ArrayBuffer>;
}

interface RigOptions {
  vnetHdr: boolean;
  /** UDP_GRO on the receiving socket, and UDP GSO sends of equal-size runs. */
  gro: boolean;
  batchSize?: number;
}

async function withRig(o: RigOptions, fn: (rig: Rig) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "weft-coalesce-" });
  const fds: number[] = [];
  try {
    const path = `${dir}/tun`;
    const mk = await new Deno.Command("mkfifo", {
      args: ["-m", "600", path],
      stdout: "null",
      stderr: "piped",
    }).output();
    if (!mk.success) throw new Error(`mkfifo failed: ${new TextDecoder().decode(mk.stderr)}`);
    // O_RDWR: one fd both written (as the TUN) and read back, never blocking on either end.
    const fifo = openPath(path, O_RDWR | O_NONBLOCK);
    fds.push(fifo);
    const c = libc();
    c.fcntl(fifo, F_SETPIPE_SZ, BigInt(1 << 20));
    const pipeSize = c.fcntl(fifo, F_GETPIPE_SZ, 0n);
    assert.ok(pipeSize >= 65536, `pipe size ${pipeSize}`);
    const rx = openUdpSocket(LOOPBACK, 0, { rcvBuf: 16 << 20 });
    fds.push(rx.fd);
    const tx = openUdpSocket(LOOPBACK, 0, { sndBuf: 16 << 20 });
    fds.push(tx.fd);
    const table = new PeerTable(24);
    table.replace([{ net: ipNum(198, 19, 2, 0), ip: LOOPBACK }]);
    const counters = new Float64Array(newCounterBuffer());
    const pump = new UdpToTun({
      tunFd: fifo,
      udpFd: rx.fd,
      port: rx.port,
      table,
      counters,
      batchSize: o.batchSize ?? 64,
      slotSize: 65536,
      vnetHdr: o.vnetHdr,
      checkSource: true,
      gro: o.gro,
    });
    assert.equal(counters[RX.GRO_ON], o.gro ? 1 : 0, "UDP_GRO state");
    await fn({
      pump,
      counters,
      fifo,
      rx: rx.fd,
      tx: tx.fd,
      port: rx.port,
      vnet: o.vnetHdr,
      gso: o.gro,
      // Output can be 1.5 times the input (a 10-byte header on a 20-byte packet).
      // The kernel may grant less than asked (without root: net.core.rmem_max); each chunk's
      // datagrams (with per-skb overhead) must fit the receive buffer actually granted.
      chunkBytes: Math.min(512 << 10, Math.floor(pipeSize / 2), Math.floor(rx.rcvBuf / 4)),
      sender: new MsgBatch(SEND_SLOTS, SEND_SLOT_SIZE, rx.port),
      readBuf: new Uint8Array(pipeSize + 65536),
    });
  } finally {
    for (const fd of fds.reverse()) {
      try {
        closeFd(fd);
      } catch { /* already closed: nothing to release */ }
    }
    await Deno.remove(dir, { recursive: true });
  }
}

/** Everything in the FIFO now. */
function drain(rig: Rig): Uint8Array {
  const parts: Uint8Array[] = [];
  let n = 0;
  for (let i = 0; i < 1000; i++) {
    const got = readFd(rig.fifo, rig.readBuf);
    if (got === null || got === 0) break;
    parts.push(rig.readBuf.slice(0, got));
    n += got;
  }
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Sends one chunk: datagram by datagram, or as UDP GSO messages of equal-size runs. */
function sendChunk(rig: Rig, ds: readonly Datagram[], r: Rand): void {
  if (!rig.gso) {
    for (const d of ds) {
      assert.equal(sendTo(rig.tx, d.data, LOOPBACK, rig.port), d.data.length, "sendto");
    }
    return;
  }
  const b = rig.sender;
  let msgs = 0;
  for (let i = 0; i < ds.length;) {
    const len = ds[i].data.length;
    let n = 1, bytes = len;
    // A GSO message: segments of one size, the last one possibly shorter.
    while (
      i + n < ds.length && n < 64 && bytes + ds[i + n].data.length <= GSO_MAX &&
      ds[i + n].data.length <= len && !r.chance(0.1)
    ) {
      bytes += ds[i + n].data.length;
      n++;
      if (ds[i + n - 1].data.length < len) break;
    }
    for (let k = 0; k < n; k++) {
      b.data.set(ds[i + k].data, b.offset(i + k));
      b.setLength(i + k, ds[i + k].data.length);
    }
    b.setMessage(msgs, i, n);
    b.setSegmentSize(msgs, n > 1 ? len : 0);
    b.setPeerIp(msgs, LOOPBACK);
    msgs++;
    i += n;
  }
  for (let sent = 0, tries = 0; sent < msgs; tries++) {
    assert.ok(tries < 100, "sendmmsg makes no progress");
    const n = b.send(rig.tx, sent, msgs - sent);
    assert.ok(n > 0, `sendmmsg returned ${n}`);
    sent += n;
  }
}

/** One receive batch: how many datagrams it took and what it wrote into the FIFO. */
interface Step {
  datagrams: number;
  bytes: Uint8Array;
}

/**
 * Sends the datagrams in random chunks (each small enough that what comes back fits the FIFO)
 * and steps the pump until each chunk is consumed, reading the FIFO after every step.
 */
async function run(
  rig: Rig,
  ds: readonly Datagram[],
  r: Rand,
  whole: boolean,
): Promise<Step[]> {
  const steps: Step[] = [];
  let i = 0;
  while (i < ds.length) {
    const maxCount = whole || r.chance(0.6) ? ds.length : r.int(1, 64);
    let n = 0, bytes = 0;
    // Without GSO at most one batch (64); with GSO up to 256 datagrams in fewer messages.
    const limit = Math.min(maxCount, rig.gso ? SEND_SLOTS : 64);
    while (
      i + n < ds.length && n < limit && (n === 0 || bytes + ds[i + n].data.length <= rig.chunkBytes)
    ) {
      bytes += ds[i + n].data.length;
      n++;
    }
    sendChunk(rig, ds.slice(i, i + n), r);
    i += n;
    let got = 0;
    for (let iter = 0; got < n; iter++) {
      assert.ok(iter < 2000, `only ${got} of ${n} datagrams arrived`);
      const before = rig.counters[RX.UDP_PACKETS];
      const m = rig.pump.step();
      const d = rig.counters[RX.UDP_PACKETS] - before;
      const out = drain(rig);
      if (d > 0) {
        steps.push({ datagrams: d, bytes: out });
        got += d;
      } else {
        assert.equal(out.length, 0, "output without input");
        if (m === 0) await new Promise((res) => setTimeout(res, 1));
      }
    }
    assert.equal(got, n, "more datagrams received than sent");
  }
  assert.equal(rig.pump.step(), 0, "socket drained");
  assert.equal(drain(rig).length, 0);
  return steps;
}

// ---------------------------------------------------------------------------------------------
// Reading back and checking

interface Write {
  hdr: Uint8Array | null;
  pkt: Uint8Array;
}

/** Splits a FIFO stream into writes (header + packet, or packet alone without vnet). */
function parseWrites(s: Uint8Array, vnet: boolean): Write[] {
  const out: Write[] = [];
  const h = vnet ? VNET_HDR_LEN : 0;
  let at = 0;
  for (let guard = 0; at < s.length; guard++) {
    assert.ok(guard < 100000);
    assert.ok(s.length - at >= h + 20, `stream cut at ${at} of ${s.length}`);
    const len = u16(s, at + h + 2);
    assert.ok(len >= 20 && at + h + len <= s.length, `bad length ${len} at ${at}`);
    out.push({
      hdr: vnet ? s.slice(at, at + h) : null,
      pkt: s.slice(at + h, at + h + len),
    });
    at += h + len;
  }
  return out;
}

function describe(p: Uint8Array): string {
  const ihl = ihlOf(p);
  const base = `len ${p.length} id ${u16(p, 4)} frag 0x${u16(p, 6).toString(16)} ttl ${p[8]}` +
    ` tos ${p[1]}`;
  if (p[9] !== TCP || p.length < ihl + 20) return `proto ${p[9]} ${base}`;
  const thl = (p[ihl + 12] >> 4) * 4;
  return `tcp ${u16(p, ihl)}>${u16(p, ihl + 2)} seq ${u32(p, ihl + 4)} ack ${u32(p, ihl + 8)}` +
    ` flags 0x${p[ihl + 13].toString(16)} win ${u16(p, ihl + 14)} thl ${thl}` +
    ` payload ${p.length - ihl - thl} ${base}`;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function firstDiff(a: Uint8Array, b: Uint8Array): string {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return `byte ${i}: ${a[i]} vs ${b[i]}`;
  return `lengths ${a.length} vs ${b.length}`;
}

/** Cuts a super-packet into segments with the module's TSO code. */
function resegment(pkt: Uint8Array, gsoSize: number): Uint8Array[] {
  const src = new Uint8Array(pkt.length + 4);
  src.set(pkt);
  const plan = new TsoPlan();
  assert.ok(plan.plan(src, 0, pkt.length, gsoSize), "TsoPlan refuses the super-packet");
  const segs: Uint8Array[] = [];
  for (let i = 0; i < plan.count; i++) {
    const dst = new Uint8Array((plan.segmentLength(i) + 3) & ~3);
    const n = writeTsoSegment(src, plan, i, dst, words(dst), 0);
    segs.push(dst.slice(0, n));
  }
  return segs;
}

const zeroHdr = (h: Uint8Array) => h.every((x) => x === 0);

/** Checks one super-packet write; returns its segments. */
function checkSuper(w: Write, ctx: string): Uint8Array[] {
  const v: VnetHdr = readVnetHdr(w.hdr!, 0, {
    flags: 0,
    gsoType: 0,
    hdrLen: 0,
    gsoSize: 0,
    csumStart: 0,
    csumOffset: 0,
  });
  const p = w.pkt;
  const thl = (p[32] >> 4) * 4;
  assert.equal(v.flags, VNET_F_NEEDS_CSUM, `${ctx}: vnet flags`);
  assert.equal(v.gsoType, GSO_TCPV4, `${ctx}: gso type`);
  assert.equal(v.hdrLen, 20 + thl, `${ctx}: hdr_len`);
  assert.equal(v.csumStart, 20, `${ctx}: csum_start`);
  assert.equal(v.csumOffset, 16, `${ctx}: csum_offset`);
  assert.ok(p.length <= MAX_TOTAL, `${ctx}: total length ${p.length}`);
  assert.equal(p[0], 0x45, `${ctx}: IPv4 without options`);
  assert.equal(p[9], TCP, `${ctx}: TCP`);
  assert.ok(ipHeaderOk(p), `${ctx}: IP header checksum`);
  assert.ok(v.gsoSize > 0 && v.gsoSize < p.length - v.hdrLen, `${ctx}: gso_size ${v.gsoSize}`);
  // The TCP checksum field holds the pseudo-header sum for the kernel to complete.
  assert.equal(u16(p, 36), refPseudo(p, 0, TCP, p.length - 20), `${ctx}: partial checksum`);
  const done = new Uint8Array(p.length + 4);
  done.set(p);
  assert.ok(completeChecksum(done, words(done), 0, p.length, v.csumStart, v.csumOffset));
  assert.ok(l4ChecksumOk(done.subarray(0, p.length)), `${ctx}: completed checksum`);
  const segs = resegment(p, v.gsoSize);
  assert.ok(segs.length >= 2 && segs.length <= MAX_SEGMENTS, `${ctx}: ${segs.length} segments`);
  assert.equal(segs[0].length - v.hdrLen, v.gsoSize, `${ctx}: gso_size = first payload`);
  return segs;
}

interface Totals {
  packets: number;
  bytes: number;
  supers: number;
  superSegs: number;
  ttl: number;
  malformed: number;
  notV4: number;
  badSum: number;
}

/** Checks the FIFO output of every step against the expectation; returns totals. */
function check(rig: Rig, ds: readonly Datagram[], steps: readonly Step[], label: string): Totals {
  const t: Totals = {
    packets: 0,
    bytes: 0,
    supers: 0,
    superSegs: 0,
    ttl: 0,
    malformed: 0,
    notV4: 0,
    badSum: 0,
  };
  let at = 0;
  for (const [si, step] of steps.entries()) {
    const batch = ds.slice(at, at + step.datagrams);
    at += step.datagrams;
    const pkts: Uint8Array[] = [];
    const notes: string[] = [];
    for (const d of batch) {
      const why = dropReason(d.data);
      if (why) t[why]++;
      const p = expectedPacket(d.data);
      if (p) {
        pkts.push(p);
        notes.push(d.note);
      }
    }
    const ctx = `${label} step ${si}`;
    const dump = () =>
      `\ninput of this step (after TTL decrement):\n` +
      pkts.map((p, i) => `  #${i} ${notes[i]}: ${describe(p)}`).join("\n");
    const writes = parseWrites(step.bytes, rig.vnet);
    const want = rig.vnet ? expectedWrites(pkts) : pkts.map((p) => [p]);
    // Segments to be merged have consecutive IP ids (the generator's promise; cutting the
    // super-packet numbers them so).
    for (const g of want) {
      for (let k = 1; k < g.length; k++) {
        assert.equal(u16(g[k], 4), (u16(g[0], 4) + k) & 0xffff, `${ctx}: generator ids${dump()}`);
      }
    }
    // Segments as written (super-packets cut again), then compared with the packets sent.
    const got: Uint8Array[] = [];
    const groups: number[] = [];
    for (const [wi, w] of writes.entries()) {
      if (!w.hdr || zeroHdr(w.hdr)) {
        got.push(w.pkt);
        groups.push(1);
        continue;
      }
      const segs = checkSuper(w, `${ctx} write ${wi}`);
      got.push(...segs);
      groups.push(segs.length);
    }
    for (let i = 0; i < Math.min(got.length, pkts.length); i++) {
      if (!sameBytes(got[i], pkts[i])) {
        assert.fail(
          `${ctx}: packet #${i} differs (${firstDiff(got[i], pkts[i])})\n` +
            `  got:  ${describe(got[i])}\n  want: ${describe(pkts[i])}${dump()}`,
        );
      }
    }
    assert.equal(got.length, pkts.length, `${ctx}: packet count${dump()}`);
    const wantGroups = want.map((g) => g.length);
    assert.deepEqual(groups, wantGroups, `${ctx}: segments per write${dump()}`);
    for (const [wi, g] of want.entries()) {
      if (g.length < 2) {
        if (rig.vnet) assert.ok(zeroHdr(writes[wi].hdr!), `${ctx} write ${wi}: zero header`);
        continue;
      }
      const s = expectedSuper(g);
      assert.ok(
        sameBytes(writes[wi].pkt, s),
        `${ctx} write ${wi}: super-packet bytes (${firstDiff(writes[wi].pkt, s)})`,
      );
      t.supers++;
      t.superSegs += g.length;
    }
    t.packets += pkts.length;
    t.bytes += pkts.reduce((n, p) => n + p.length, 0);
  }
  assert.equal(at, ds.length, `${label}: datagrams consumed`);
  return t;
}

/** Counter slots that must have grown by exactly the given amounts. */
function checkCounters(
  before: Float64Array,
  after: Float64Array,
  t: Totals,
  n: number,
  ctx: string,
) {
  const d = (slot: number) => after[slot] - before[slot];
  assert.equal(d(RX.UDP_PACKETS), n, `${ctx}: UDP_PACKETS`);
  assert.equal(d(RX.PACKETS), t.packets, `${ctx}: PACKETS`);
  assert.equal(d(RX.BYTES), t.bytes, `${ctx}: BYTES`);
  assert.equal(d(RX.TTL), t.ttl, `${ctx}: TTL`);
  assert.equal(d(RX.MALFORMED), t.malformed, `${ctx}: MALFORMED`);
  assert.equal(d(RX.NOT_IPV4), t.notV4, `${ctx}: NOT_IPV4`);
  assert.equal(d(RX.BAD_CHECKSUM), t.badSum, `${ctx}: BAD_CHECKSUM`);
  assert.equal(d(RX.NOT_MEMBER), 0, `${ctx}: NOT_MEMBER`);
  assert.equal(d(RX.TUN_WRITE_ERROR), 0, `${ctx}: TUN_WRITE_ERROR`);
  assert.equal(d(RX.COALESCED_PACKETS), t.supers, `${ctx}: COALESCED_PACKETS`);
  assert.equal(d(RX.COALESCED_SEGMENTS), t.superSegs, `${ctx}: COALESCED_SEGMENTS`);
}

/** Runs datagrams through the rig and checks everything; returns totals and the steps. */
async function runAndCheck(
  rig: Rig,
  ds: readonly Datagram[],
  r: Rand,
  label: string,
  whole = false,
): Promise<{ t: Totals; steps: Step[] }> {
  const before = rig.counters.slice();
  const steps = await run(rig, ds, r, whole);
  const t = check(rig, ds, steps, label);
  checkCounters(before, rig.counters, t, ds.length, label);
  return { t, steps };
}

/** The writes of a run's steps (for the focused tests). */
function allWrites(rig: Rig, steps: readonly Step[]): Write[] {
  return steps.flatMap((s) => parseWrites(s.bytes, rig.vnet));
}

// ---------------------------------------------------------------------------------------------
// Tests

const SEED = 0x77ef7;

async function fuzz(o: RigOptions, sequences: number, seed: number) {
  await withRig(o, async (rig) => {
    const all: Totals = {
      packets: 0,
      bytes: 0,
      supers: 0,
      superSegs: 0,
      ttl: 0,
      malformed: 0,
      notV4: 0,
      badSum: 0,
    };
    let datagrams = 0, maxSegs = 0, nearLimit = 0;
    for (let i = 0; i < sequences; i++) {
      const r = new Rand(seed + i);
      const ds = randomSequence(r);
      datagrams += ds.length;
      const label = `seed ${seed + i} (sequence ${i}, gro ${o.gro})`;
      const { t, steps } = await runAndCheck(rig, ds, r, label);
      for (const k of Object.keys(all) as (keyof Totals)[]) all[k] += t[k];
      for (const s of steps) {
        for (const w of parseWrites(s.bytes, true)) {
          if (zeroHdr(w.hdr!)) continue;
          const hdrLen = w.hdr![2] | (w.hdr![3] << 8), gso = w.hdr![4] | (w.hdr![5] << 8);
          maxSegs = Math.max(maxSegs, Math.ceil((w.pkt.length - hdrLen) / gso));
          if (w.pkt.length + gso > MAX_TOTAL) nearLimit++;
        }
      }
    }
    // The fuzz must actually exercise what it claims.
    assert.ok(datagrams > sequences * 20, `${datagrams} datagrams`);
    assert.ok(all.supers > sequences, `${all.supers} super-packets`);
    assert.ok(all.superSegs > all.supers * 3, `${all.superSegs} merged segments`);
    assert.ok(all.ttl > 10 && all.malformed > 5 && all.notV4 > 2, JSON.stringify(all));
    assert.ok(all.badSum > 2, `${all.badSum} bad header checksums: ${JSON.stringify(all)}`);
    assert.ok(nearLimit > 0, "no super-packet reached the 64 KiB limit");
    if (o.gro) assert.equal(maxSegs, MAX_SEGMENTS, "the 64-segment limit was not reached");
    console.log(
      `${sequences} sequences, ${datagrams} datagrams: ${all.packets} packets written, ` +
        `${all.supers} super-packets of ${all.superSegs} segments (max ${maxSegs}), ` +
        `drops ttl ${all.ttl} malformed ${all.malformed} not-ipv4 ${all.notV4} ` +
        `bad-checksum ${all.badSum}`,
    );
  });
}

Deno.test("coalescer fuzz: one datagram per message (no UDP GRO), batches of 64", async () => {
  await fuzz({ vnetHdr: true, gro: false }, 250, SEED);
});

Deno.test("coalescer fuzz: UDP GSO sends received with UDP GRO (several datagrams a message)", async () => {
  await fuzz({ vnetHdr: true, gro: true }, 150, SEED + 100000);
});

/** n in-order full segments of one flow (the last with PSH when psh). */
function inOrder(f: Flow, n: number, r: Rand, psh = false, payload = f.mss): Datagram[] {
  const out: Datagram[] = [];
  for (let i = 0; i < n; i++) {
    const flags = psh && i === n - 1 ? ACK | PSH : ACK;
    out.push({ data: tcpDatagram(f, { payload, flags }, r), note: `segment ${i}` });
    f.seq = (f.seq + payload) >>> 0;
  }
  return out;
}

function fixedFlow(r: Rand, mss: number): Flow {
  const f = newFlow(r, mss);
  f.ttl = 64;
  f.tos = 0;
  f.jitter = false;
  f.opts = [...TS_KIND, 1, 2, 3, 4, 5, 6, 7, 8];
  return f;
}

Deno.test("ten in-order full segments come out as one super-packet", async () => {
  await withRig({ vnetHdr: true, gro: false }, async (rig) => {
    const r = new Rand(1);
    const ds = inOrder(fixedFlow(r, 1448), 10, r, true);
    const before = rig.counters.slice();
    const { steps } = await runAndCheck(rig, ds, r, "ten segments", true);
    assert.equal(steps.length, 1, "one receive batch");
    const w = allWrites(rig, steps);
    assert.equal(w.length, 1, "one write");
    const v = readVnetHdr(w[0].hdr!, 0, {
      flags: 0,
      gsoType: 0,
      hdrLen: 0,
      gsoSize: 0,
      csumStart: 0,
      csumOffset: 0,
    });
    assert.deepEqual(v, {
      flags: VNET_F_NEEDS_CSUM,
      gsoType: GSO_TCPV4,
      hdrLen: 52,
      gsoSize: 1448,
      csumStart: 20,
      csumOffset: 16,
    });
    assert.equal(w[0].pkt.length, 52 + 10 * 1448);
    assert.equal(w[0].pkt[33], ACK | PSH, "PSH of the last segment on the super-packet");
    assert.equal(rig.counters[RX.COALESCED_PACKETS] - before[RX.COALESCED_PACKETS], 1);
    assert.equal(rig.counters[RX.COALESCED_SEGMENTS] - before[RX.COALESCED_SEGMENTS], 10);
  });
});

Deno.test("runs beyond 65535 bytes and beyond 64 segments are split", async () => {
  // 50 × 1448: 52 + 45 × 1448 = 65212 fits, a 46th would not.
  await withRig({ vnetHdr: true, gro: false }, async (rig) => {
    const r = new Rand(2);
    const { steps } = await runAndCheck(
      rig,
      inOrder(fixedFlow(r, 1448), 50, r),
      r,
      "50 × 1448",
      true,
    );
    assert.equal(steps.length, 1);
    const w = allWrites(rig, steps);
    assert.deepEqual(w.map((x) => x.pkt.length), [52 + 45 * 1448, 52 + 5 * 1448]);
  });
  // 70 × 100 in two UDP GSO messages, one receive batch: 64 segments, then 6.
  await withRig({ vnetHdr: true, gro: true }, async (rig) => {
    const r = new Rand(3);
    const { steps } = await runAndCheck(
      rig,
      inOrder(fixedFlow(r, 100), 70, r),
      r,
      "70 × 100",
      true,
    );
    assert.equal(steps.length, 1);
    const w = allWrites(rig, steps);
    assert.deepEqual(w.map((x) => x.pkt.length), [52 + 64 * 100, 52 + 6 * 100]);
  });
});

Deno.test("a bad TCP checksum inside a run: written unchanged (not fixed), the rest merged", async () => {
  await withRig({ vnetHdr: true, gro: false }, async (rig) => {
    const r = new Rand(4);
    const f = fixedFlow(r, 1000);
    const ds = [...inOrder(f, 4, r)];
    ds.push({ data: tcpDatagram(f, { payload: 1000, badTcp: "data" }, r), note: "bad" });
    f.seq = (f.seq + 1000) >>> 0;
    ds.push(...inOrder(f, 4, r));
    const { steps } = await runAndCheck(rig, ds, r, "bad checksum", true);
    const w = allWrites(rig, steps);
    assert.deepEqual(w.map((x) => (zeroHdr(x.hdr!) ? 1 : 0)), [0, 1, 0]);
    assert.ok(!l4ChecksumOk(w[1].pkt), "the bad checksum stays bad");
  });
});

Deno.test("a TTL-1 packet between two segments is dropped; the segments then merge", async () => {
  await withRig({ vnetHdr: true, gro: false }, async (rig) => {
    const r = new Rand(5);
    const f = fixedFlow(r, 1448);
    const other = fixedFlow(r, 100);
    const ds = inOrder(f, 1, r);
    ds.push({ data: tcpDatagram(other, { payload: 10, ttl: 1 }, r), note: "TTL 1" });
    ds.push(...inOrder(f, 1, r));
    const { t, steps } = await runAndCheck(rig, ds, r, "TTL 1", true);
    assert.equal(t.ttl, 1);
    assert.equal(allWrites(rig, steps).length, 1);
  });
});

Deno.test("vnetHdr off: every packet written alone, without a header", async () => {
  await withRig({ vnetHdr: false, gro: false }, async (rig) => {
    const r = new Rand(6);
    const f = fixedFlow(r, 1448);
    const other = fixedFlow(r, 100);
    const ds = inOrder(f, 10, r);
    ds.push({ data: tcpDatagram(other, { payload: 10, ttl: 1 }, r), note: "TTL 1" });
    ds.push({ data: udpDatagram(other, 300, r), note: "UDP" });
    ds.push(...inOrder(f, 5, r, true));
    const before = rig.counters.slice();
    const { t, steps } = await runAndCheck(rig, ds, r, "no vnet", true);
    assert.equal(t.packets, 16);
    assert.equal(t.supers, 0);
    const w = allWrites(rig, steps);
    assert.equal(w.length, 16);
    assert.equal(rig.counters[RX.COALESCED_PACKETS] - before[RX.COALESCED_PACKETS], 0);
    // The stream is exactly the packets back to back.
    const total = steps.reduce((n, s) => n + s.bytes.length, 0);
    assert.equal(total, t.bytes);
  });
});

Deno.test("a segment with the reserved IP flag bit is not merged (GRO flushes on it)", async () => {
  // Linux inet_gro_receive flushes on any fragment-word bit but DF (the reserved bit too), so
  // merging never changes that bit of a later segment.
  await withRig({ vnetHdr: true, gro: false }, async (rig) => {
    const r = new Rand(7);
    const f = fixedFlow(r, 1000);
    const ds = inOrder(f, 2, r);
    ds.push({ data: tcpDatagram(f, { payload: 1000, frag: 0xc000 }, r), note: "RF|DF" });
    f.seq = (f.seq + 1000) >>> 0;
    ds.push(...inOrder(f, 2, r));
    await runAndCheck(rig, ds, r, "reserved bit", true);
  });
});
