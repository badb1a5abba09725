/**
 * The underlay probe of a vxlan peer on the backend's own port: an ICMP echo to the peer's VTEP
 * address, wrapped by hand in a VXLAN frame (VNI, inner Ethernet from our VTEP's MAC to the
 * peer's) and sent as a plain UDP datagram to `<PublicIP>:<Port>` (8472). The peer's kernel
 * decapsulates it on its `flannel.<VNI>` and answers through its own route, neighbour and FDB
 * entry back to our VTEP, where the prober's raw socket reads the reply. So an answer proves that
 * UDP to the port reaches the peer's kernel and that the peer's entries towards us work, without
 * using any of our own entries for the peer (route, neighbour, FDB); no answer while the plain
 * ICMP underlay probe answers means the encapsulated traffic is dropped on the way (a firewall,
 * a blocked port) or the peer's VTEP is not what its lease says. IPv4 underlay only. The inner
 * echo and the socket are encap_probe.ts's, shared with the udp backend's probe.
 *
 * @example
 * ```ts
 * const s = openEncapSender("198.18.0.11");
 * const send = s.sender(peer.publicIP, 8472, (id, seq, size) => vxlanEchoFrame(local, peer, id, seq, size));
 * await prober.probe(peer.vtepIp, opts, send); s.close();
 * ```
 */
import { ipv4Echo } from "./encap_probe.ts";

const VXLAN_HEADER = 8;
const ETH_HEADER = 14;
const ETH_P_IP = 0x0800;

/** Our side of the tunnel: the VTEP's MAC and address. */
export interface VxlanLocal {
  vni: number;
  /** Our VTEP's MAC (inner source). */
  mac: string;
  /** Our VTEP's address (inner source; the peer's reply comes back to it). */
  vtepIp: string;
  /** Our underlay address (outer source: the socket's, encap_probe.ts; not in the frame). */
  localIp?: string;
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
 * The UDP payload: VXLAN header (I flag, VNI), Ethernet (peer MAC ← our MAC, IPv4), then the
 * IPv4 echo (our VTEP → the peer's) of `size` IP bytes (encap_probe.ts).
 */
export function vxlanEchoFrame(
  l: VxlanLocal,
  p: VxlanPeer,
  id: number,
  seq: number,
  size: number,
): Uint8Array<ArrayBuffer> {
  const b = ipv4Echo(l.vtepIp, p.vtepIp, id, seq, size, VXLAN_HEADER + ETH_HEADER);
  const v = new DataView(b.buffer);
  v.setUint8(0, 0x08); // I: the VNI is valid
  v.setUint32(4, (l.vni & 0xffffff) << 8);
  b.set(macBytes(p.mac), VXLAN_HEADER);
  b.set(macBytes(l.mac), VXLAN_HEADER + 6);
  v.setUint16(VXLAN_HEADER + 12, ETH_P_IP);
  return b;
}
