/**
 * The underlay probe of a peer on its backend's own UDP port: an ICMP echo from our overlay
 * address to the peer's, framed by hand the way the backend carries it and sent as a plain UDP
 * datagram to `<PublicIP>:<Port>`. The peer's datapath takes it in as its own traffic and answers
 * through its own entries back to our overlay address, where the prober's raw socket reads the
 * reply. So an answer proves that UDP to the port reaches the peer and that the peer's path towards
 * us works, without using any of our own entries for the peer; no answer while the plain ICMP
 * underlay probe answers means the encapsulated traffic is dropped on the way (a firewall, a
 * blocked port). IPv4 only. This module holds what every backend shares (the inner IPv4 echo, the
 * socket); each backend adds its framing:
 * - udp (this module, {@link udpEchoFrame}): the datagram is the bare IPv4 packet, as weft's
 *   packet workers (src/backend/udp) read it; the peer's agent writes it into its TUN and sends the
 *   reply to our public IP's port, so our agent must be running to deliver it into our TUN.
 * - vxlan (vxlan_probe.ts): VXLAN header and inner Ethernet in front of it.
 *
 * @example
 * ```ts
 * const s = openEncapSender("198.18.0.11");
 * const send = s.sender("198.18.0.12", 8285, (id, seq, size) =>
 *   udpEchoFrame("198.19.1.0", "198.19.2.0", id, seq, size));
 * await prober.probe("198.19.2.0", opts, send); s.close();
 * ```
 */
import { closeFd } from "../../ffi/libc/fd.ts";
import { openUdpSocket, sendTo } from "../../ffi/libc/udp.ts";
import { echoRequest, inetChecksum } from "../../ffi/libc/icmp.ts";
import { parseIp } from "../base/ipv4.ts";
import type { EchoSender } from "./probe.ts";

const IP_HEADER = 20;
const IPPROTO_ICMP = 1;

/** Bytes of the backend's framing for one echo (`id`, `seq`, `size` IP bytes, as EchoSender). */
export type EchoFrame = (id: number, seq: number, size: number) => Uint8Array<ArrayBuffer>;

/**
 * An IPv4 echo packet (`src` → `dst`, TTL 64, no DF, IP id = seq; `size` IP bytes in all) behind
 * `headroom` zero bytes that the backend's framing fills in.
 */
export function ipv4Echo(
  src: string,
  dst: string,
  id: number,
  seq: number,
  size: number,
  headroom = 0,
): Uint8Array<ArrayBuffer> {
  const icmp = echoRequest(id, seq, size);
  const b = new Uint8Array(new ArrayBuffer(headroom + IP_HEADER + icmp.length));
  const v = new DataView(b.buffer);
  const ip = headroom;
  v.setUint8(ip, 0x45);
  v.setUint16(ip + 2, IP_HEADER + icmp.length);
  v.setUint16(ip + 4, seq);
  v.setUint8(ip + 8, 64);
  v.setUint8(ip + 9, IPPROTO_ICMP);
  v.setUint32(ip + 12, parseIp(src) >>> 0);
  v.setUint32(ip + 16, parseIp(dst) >>> 0);
  v.setUint16(ip + 10, inetChecksum(b.subarray(ip, ip + IP_HEADER)));
  b.set(icmp, ip + IP_HEADER);
  return b;
}

/** The udp backend's framing: the datagram is the IPv4 packet itself (`src` → `dst`). */
export function udpEchoFrame(
  src: string,
  dst: string,
  id: number,
  seq: number,
  size: number,
): Uint8Array<ArrayBuffer> {
  return ipv4Echo(src, dst, id, seq, size);
}

/** A UDP socket on our underlay address that sends crafted echo frames to peers' ports. */
export interface EncapSender {
  /** The EchoSender for one peer (for {@link Prober.probe}), framing each echo with `frame`. */
  sender(publicIP: string, port: number, frame: EchoFrame): EchoSender;
  close(): void;
}

/** Opens the socket on `localIp` (our underlay address: the udp backend's peers accept members' only). */
export function openEncapSender(localIp: string): EncapSender {
  const sock = openUdpSocket(parseIp(localIp), 0);
  return {
    sender: (publicIP, port, frame) => (id, seq, size) => {
      try {
        sendTo(sock.fd, frame(id, seq, size), parseIp(publicIP), port);
      } catch {
        // No route to the peer and the like: the probe is lost, as an ICMP one would be.
      }
      return true;
    },
    close: () => closeFd(sock.fd),
  };
}
