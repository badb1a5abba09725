/**
 * The packet workers' counters in one SharedArrayBuffer of float64 slots: each worker is the only
 * writer of its own slots (tx at 0.., rx at 16.., a cache line apart so the two threads do not
 * share one), the main thread reads them at any time without messages.
 *
 * @example
 * ```ts
 * const sab = newCounterBuffer();
 * const c = new Float64Array(sab);
 * c[TX.PACKETS] += 1;            // in a worker
 * readCounters(c).txPackets;     // 1, on the main thread
 * ```
 */

/** Slots written by the TUN → UDP worker. */
export const TX = {
  /** Packets read from the TUN. */
  TUN_PACKETS: 0,
  /** Datagrams sent to peers, and their payload bytes. */
  PACKETS: 1,
  BYTES: 2,
  NO_ROUTE: 3,
  TTL: 4,
  MALFORMED: 5,
  SEND_ERROR: 6,
  ICMP_SENT: 7,
  /** sendmmsg calls that sent something (PACKETS / BATCHES = mean batch). */
  BATCHES: 8,
  /** errno of the latest send failure (0: none yet). */
  LAST_SEND_ERRNO: 9,
  /** Non-IPv4 packets (the kernel's IPv6 router solicitations on flannel0, mostly). */
  NOT_IPV4: 10,
  /** Sends that carried several packets as one UDP GSO message. */
  GSO_MESSAGES: 11,
  /** 1 when UDP GSO is off (disabled by option, or the kernel or device refused it). */
  GSO_OFF: 12,
  /** 1 when the TUN carries virtio_net_hdr (TUN offloads on). */
  VNET_HDR: 13,
  /** TCP super-packets read from the TUN (TSO), and the segments they were cut into. */
  TSO_PACKETS: 14,
  TSO_SEGMENTS: 15,
} as const;

/** Slots written by the UDP → TUN worker. */
export const RX = {
  /** Datagrams received on the socket. */
  UDP_PACKETS: 16,
  /** Packets written into the TUN, and their bytes. */
  PACKETS: 17,
  BYTES: 18,
  NOT_MEMBER: 19,
  TTL: 20,
  MALFORMED: 21,
  TUN_WRITE_ERROR: 22,
  /** recvmmsg calls that returned something. */
  BATCHES: 23,
  LAST_WRITE_ERRNO: 24,
  NOT_IPV4: 25,
  /** 1 when UDP_GRO is on for the socket. */
  GRO_ON: 26,
  /** Super-packets written into the TUN (coalesced TCP segments), and the segments in them. */
  COALESCED_PACKETS: 27,
  COALESCED_SEGMENTS: 28,
  /** Packets whose inner IPv4 header checksum is wrong (the kernel would drop them unseen). */
  BAD_CHECKSUM: 29,
} as const;

const SLOTS = 32;

export function newCounterBuffer(): SharedArrayBuffer {
  return new SharedArrayBuffer(SLOTS * 8);
}

/** Drop reasons, as used in the weft_udp_dropped_packets_total{reason} metric. */
export type DropReason =
  | "no_route"
  | "not_member"
  | "malformed"
  | "not_ipv4"
  | "bad_checksum"
  | "ttl"
  | "send_error"
  | "tun_write_error";

export interface ForwarderCounters {
  /** Datagrams sent to peers and their bytes (raw IP packets, UDP payload). */
  txPackets: number;
  txBytes: number;
  /** Packets from peers written into the TUN, and their bytes. */
  rxPackets: number;
  rxBytes: number;
  /** Packets read from the TUN / datagrams read from the socket, before any drop. */
  tunReadPackets: number;
  udpReadPackets: number;
  /** ICMP net-unreachable messages written back into the TUN. */
  icmpUnreachableSent: number;
  drops: Record<DropReason, number>;
  /** Syscalls that moved a batch: sendmmsg (tx) and recvmmsg (rx). */
  batches: { tx: number; rx: number };
  /** UDP GSO: messages that carried several packets; whether it is in use. */
  gso: { messages: number; active: boolean };
  /** Whether the socket receives with UDP GRO (coalesced datagrams). */
  gro: boolean;
  /**
   * TUN offloads (virtio_net_hdr): whether on; TCP super-packets read (tso) and the segments cut
   * from them; super-packets written (coalesced) and the segments merged into them.
   */
  tunOffload: {
    active: boolean;
    tsoPackets: number;
    tsoSegments: number;
    coalescedPackets: number;
    coalescedSegments: number;
  };
  /** errno of the latest failed send / TUN write (0: none). */
  lastErrno: { send: number; tunWrite: number };
}

/** A consistent-enough snapshot (each slot is read once; the writers never go backwards). */
export function readCounters(c: Float64Array): ForwarderCounters {
  return {
    txPackets: c[TX.PACKETS],
    txBytes: c[TX.BYTES],
    rxPackets: c[RX.PACKETS],
    rxBytes: c[RX.BYTES],
    tunReadPackets: c[TX.TUN_PACKETS],
    udpReadPackets: c[RX.UDP_PACKETS],
    icmpUnreachableSent: c[TX.ICMP_SENT],
    drops: {
      no_route: c[TX.NO_ROUTE],
      not_member: c[RX.NOT_MEMBER],
      malformed: c[TX.MALFORMED] + c[RX.MALFORMED],
      not_ipv4: c[TX.NOT_IPV4] + c[RX.NOT_IPV4],
      bad_checksum: c[RX.BAD_CHECKSUM],
      ttl: c[TX.TTL] + c[RX.TTL],
      send_error: c[TX.SEND_ERROR],
      tun_write_error: c[RX.TUN_WRITE_ERROR],
    },
    batches: { tx: c[TX.BATCHES], rx: c[RX.BATCHES] },
    gso: { messages: c[TX.GSO_MESSAGES], active: c[TX.GSO_OFF] === 0 },
    gro: c[RX.GRO_ON] === 1,
    tunOffload: {
      active: c[TX.VNET_HDR] === 1,
      tsoPackets: c[TX.TSO_PACKETS],
      tsoSegments: c[TX.TSO_SEGMENTS],
      coalescedPackets: c[RX.COALESCED_PACKETS],
      coalescedSegments: c[RX.COALESCED_SEGMENTS],
    },
    lastErrno: { send: c[TX.LAST_SEND_ERRNO], tunWrite: c[RX.LAST_WRITE_ERRNO] },
  };
}

/** Slots of the control Int32Array shared with the workers. */
export const CTL = {
  /** Set to 1 to make the workers leave their loops. */
  STOP: 0,
  /** Bumped after each peer table message; a worker awaits the message when it differs. */
  PEER_GEN: 1,
} as const;

export function newControlBuffer(): SharedArrayBuffer {
  return new SharedArrayBuffer(16 * 4);
}
