/**
 * Netlink route and neighbour messages as the kernel dumps them (struct nlmsghdr, rtmsg or
 * ndmsg, attributes), for unit tests of what reads dumps (ffi/libnl's scans, the full diff)
 * without a kernel. Only the fields those readers use; addresses IPv4 or IPv6, MACs 6 bytes.
 *
 * @example
 * ```ts
 * const b = messages(
 *   routeMsg({ dst: "198.19.5.0/24", gw: "198.19.5.0", dev: 7, onlink: true, protocol: 87 }),
 *   neighMsg({ family: 2, dev: 7, ip: "198.19.5.0", mac: "02:00:00:00:00:05", state: 0x80 }),
 * );
 * ```
 */
import { parseIp } from "../../src/base/ipv4.ts";
import { parseIp6 } from "../../src/base/ipv6.ts";

const RTM_NEWROUTE = 24;
const RTM_NEWNEIGH = 28;

/** A route message's fields; omitted: main table, unicast, protocol boot, no attribute. */
export interface RouteMsg {
  dst: string;
  gw?: string;
  dev?: number;
  onlink?: boolean;
  protocol?: number;
  table?: number;
  metric?: number;
  src?: string;
  type?: number;
}

/** A neighbour (family 2 or 10) or FDB (family 7) message's fields. */
export interface NeighMsg {
  family: number;
  dev: number;
  ip?: string;
  mac?: string;
  state: number;
  flags?: number;
}

function addr(text: string): Uint8Array {
  if (text.includes(":")) {
    const n = parseIp6(text);
    const b = new Uint8Array(16);
    for (let i = 0; i < 16; i++) b[i] = Number((n >> BigInt(8 * (15 - i))) & 0xffn);
    return b;
  }
  const n = parseIp(text);
  return Uint8Array.of(n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255);
}

const u32 = (n: number) => {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n, true);
  return b;
};

/** One message: header, `body`, then attributes [type, payload], each padded to 4 bytes. */
function message(type: number, body: Uint8Array, attrs: [number, Uint8Array][]): Uint8Array {
  const size = 16 + body.length + attrs.reduce((n, [, p]) => n + ((4 + p.length + 3) & ~3), 0);
  const b = new Uint8Array(size);
  const v = new DataView(b.buffer);
  v.setUint32(0, size, true);
  v.setUint16(4, type, true);
  v.setUint16(6, 2, true); // NLM_F_MULTI
  b.set(body, 16);
  let at = 16 + body.length;
  for (const [t, p] of attrs) {
    v.setUint16(at, 4 + p.length, true);
    v.setUint16(at + 2, t, true);
    b.set(p, at + 4);
    at += (4 + p.length + 3) & ~3;
  }
  return b;
}

export function routeMsg(r: RouteMsg): Uint8Array {
  const [ip, len] = r.dst.split("/");
  const v6 = ip.includes(":");
  const table = r.table ?? 254;
  const body = new Uint8Array(12);
  body[0] = v6 ? 10 : 2;
  body[1] = Number(len);
  body[4] = table < 256 ? table : 252; // RT_TABLE_COMPAT; RTA_TABLE has the real one
  body[5] = r.protocol ?? 3;
  body[6] = r.gw ? 0 : 253;
  body[7] = r.type ?? 1;
  new DataView(body.buffer).setUint32(8, r.onlink ? 4 : 0, true);
  const attrs: [number, Uint8Array][] = [[15, u32(table)]];
  if (Number(len) > 0) attrs.push([1, addr(ip)]);
  if (r.metric !== undefined) attrs.push([6, u32(r.metric)]);
  if (r.src !== undefined) attrs.push([7, addr(r.src)]);
  if (r.gw !== undefined) attrs.push([5, addr(r.gw)]);
  if (r.dev !== undefined) attrs.push([4, u32(r.dev)]);
  return message(RTM_NEWROUTE, body, attrs);
}

export function neighMsg(n: NeighMsg): Uint8Array {
  const body = new Uint8Array(12);
  const v = new DataView(body.buffer);
  body[0] = n.family;
  v.setInt32(4, n.dev, true);
  v.setUint16(8, n.state, true);
  body[10] = n.flags ?? 0;
  const attrs: [number, Uint8Array][] = [];
  if (n.ip !== undefined) attrs.push([1, addr(n.ip)]);
  if (n.mac !== undefined) {
    attrs.push([2, Uint8Array.from(n.mac.split(":").map((x) => parseInt(x, 16)))]);
  }
  return message(RTM_NEWNEIGH, body, attrs);
}

/** Messages back to back, as one dump (each is a multiple of 4 bytes long). */
export function messages(...ms: Uint8Array[]): Uint8Array {
  const b = new Uint8Array(ms.reduce((n, m) => n + m.length, 0));
  let at = 0;
  for (const m of ms) b.set(m, at), at += m.length;
  return b;
}
