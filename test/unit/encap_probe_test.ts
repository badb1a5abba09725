/** The crafted echo doctor sends through a backend's own UDP port (src/health/encap_probe.ts). */
import assert from "node:assert/strict";
import { ipv4Echo, udpEchoFrame } from "../../src/health/encap_probe.ts";
import { echoRequest, inetChecksum } from "../../ffi/libc/icmp.ts";
import { destination, ipv4Length, source } from "../../src/backend/udp/packet.ts";
import { headerChecksumOk } from "../../src/backend/udp/checksum.ts";
import { parseIp } from "../../src/base/ipv4.ts";

Deno.test("udp backend crafted probe: the datagram is an IPv4 echo weft's packet workers accept", () => {
  const pkt = udpEchoFrame("198.19.1.0", "198.19.2.0", 0x1234, 9, 84);
  assert.equal(pkt.length, 84);
  // What udp_to_tun checks before writing a datagram into the TUN.
  assert.equal(ipv4Length(pkt, 0, pkt.length), 84);
  assert.ok(headerChecksumOk(pkt, 0), "a valid IPv4 header checksum");
  assert.equal(source(pkt, 0), parseIp("198.19.1.0") >>> 0, "from our flannel0 address");
  assert.equal(destination(pkt, 0), parseIp("198.19.2.0") >>> 0, "to the peer's");
  assert.equal(pkt[8], 64, "TTL 64: the forwarders decrement it at each end");
  assert.equal(pkt[9], 1, "ICMP");
  assert.equal(pkt[6] & 0x40, 0, "no DF");
  assert.deepEqual([...pkt.subarray(20)], [...echoRequest(0x1234, 9, 84)]);
  assert.equal(inetChecksum(pkt.subarray(20)), 0, "a valid ICMP checksum");
});

Deno.test("crafted probe: the backend's framing goes in front of the same IPv4 echo", () => {
  const framed = ipv4Echo("198.19.1.0", "198.19.2.0", 7, 3, 84, 22);
  assert.equal(framed.length, 22 + 84);
  assert.deepEqual([...framed.subarray(0, 22)], new Array(22).fill(0), "room for the framing");
  assert.deepEqual(
    [...framed.subarray(22)],
    [...udpEchoFrame("198.19.1.0", "198.19.2.0", 7, 3, 84)],
  );
});
