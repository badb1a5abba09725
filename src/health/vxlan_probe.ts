/**
 * The underlay probe of a vxlan peer on the backend's own port: an ICMP echo to the peer's VTEP
 * address, wrapped by hand in a VXLAN frame (VNI, inner Ethernet from our VTEP's MAC to the
 * peer's) and sent as a plain UDP datagram to `<PublicIP>:<Port>` (8472). The peer's kernel
 * decapsulates it on its `flannel.<VNI>` and answers through its own route, neighbour and FDB
 * entry back to our VTEP, where the prober's raw socket reads the reply. So an answer proves that
 * UDP to the port reaches the peer's kernel and that the peer's entries towards us work, without
 * using any of our own entries for the peer (route, neighbour, FDB); no answer while the plain
 * ICMP underlay probe answers means the encapsulated traffic is dropped on the way (a firewall,
 * a blocked port) or the peer's VTEP is not what its lease says. IPv4 underlay only.
 *
 * @example
 * ```ts
 * const v = openVxlanSender({ vni: 1, port: 8472, localIp: "198.18.0.11", ... });
 * await prober.probe("198.19.2.0", opts, v.sender(peer)); v.close();
 * ```
 */
import { closeFd } from "../../ffi/libc/fd.ts";
import { openUdpSocket, sendTo } from "../../ffi/libc/udp.ts";
import { echoRequest, inetChecksum } from "../../ffi/libc/icmp.ts";
import { parseIp } from "../base/ipv4.ts";
import type { EchoSender } from "./probe.ts";

const VXLAN_HEADER = 8;
const ETH_HEADER = 14;
const IP_HEADER = 20;
const ETH_P_IP = 0x0800;
const IPPROTO_ICMP = 1;

/** Our side of the tunnel: the VTEP's MAC and address, and the underlay address to send from. */
export interface VxlanLocal {
  vni: number;
  /** Our VTEP's MAC (inner source). */
  mac: string;
  /** Our VTEP's address (inner source; the peer's reply comes back to it). */
  vtepIp: string;
  /** Our underlay address (outer source). */
  localIp: string;
}

/** The peer's side: its public IP and port, VTEP MAC and VTEP address. */
export interface VxlanPeer {
  publicIP: string;
  port: number;
  mac: string;
  vtepIp: string;
}

function macBytes(mac: string): number[] {
  return mac.split(":").map((x) => parseInt(x, 16));
}

/**
 * The UDP payload: VXLAN header (I flag, VNI), Ethernet (peer MAC ← our MAC, IPv4), IPv4 header
 * (our VTEP → the peer's, TTL 64, no DF) and an echo request of `size` IP bytes.
 */
export function vxlanEchoFrame(
  l: VxlanLocal,
  p: VxlanPeer,
  id: number,
  seq: number,
  size: number,
): Uint8Array<ArrayBuffer> {
  const icmp = echoRequest(id, seq, size);
  const b = new Uint8Array(new ArrayBuffer(VXLAN_HEADER + ETH_HEADER + IP_HEADER + icmp.length));
  const v = new DataView(b.buffer);
  v.setUint8(0, 0x08); // I: the VNI is valid
  v.setUint32(4, (l.vni & 0xffffff) << 8);
  b.set(macBytes(p.mac), VXLAN_HEADER);
  b.set(macBytes(l.mac), VXLAN_HEADER + 6);
  v.setUint16(VXLAN_HEADER + 12, ETH_P_IP);
  const ip = VXLAN_HEADER + ETH_HEADER;
  v.setUint8(ip, 0x45);
  v.setUint16(ip + 2, IP_HEADER + icmp.length);
  v.setUint16(ip + 4, seq);
  v.setUint8(ip + 8, 64);
  v.setUint8(ip + 9, IPPROTO_ICMP);
  v.setUint32(ip + 12, parseIp(l.vtepIp) >>> 0);
  v.setUint32(ip + 16, parseIp(p.vtepIp) >>> 0);
  v.setUint16(ip + 10, inetChecksum(b.subarray(ip, ip + IP_HEADER)));
  b.set(icmp, ip + IP_HEADER);
  return b;
}

/** A UDP socket on our underlay address that sends crafted VXLAN echo frames. */
export interface VxlanSender {
  /** The EchoSender for one peer (for {@link Prober.probe}). */
  sender(p: VxlanPeer): EchoSender;
  close(): void;
}

export function openVxlanSender(l: VxlanLocal): VxlanSender {
  const sock = openUdpSocket(parseIp(l.localIp), 0);
  return {
    sender: (p) => (id, seq, size) => {
      try {
        sendTo(sock.fd, vxlanEchoFrame(l, p, id, seq, size), parseIp(p.publicIP), p.port);
      } catch {
        // No route to the peer and the like: the probe is lost, as an ICMP one would be.
      }
      return true;
    },
    close: () => closeFd(sock.fd),
  };
}
