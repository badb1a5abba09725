/**
 * Reachability of every peer, per family the config serves: an overlay echo probe (ICMP, or
 * ICMPv6 for the IPv6 half) from this node to the peer's overlay address, and when that fails,
 * probes that tell the causes apart (what each proves, README "weft doctor"):
 * - vxlan, udp (IPv4): an echo framed by hand as the backend carries it (a VXLAN frame, a bare
 *   IPv4 packet) sent straight to the peer's UDP port (encap_probe.ts). Answered: the port and
 *   the peer are fine, our own path is not. Else:
 * - the underlay: an echo to the peer's public IP. Answered: encapsulated traffic is dropped
 *   between us; host-gw: the host is there but has no pod address to answer (no pods yet).
 * Then a full-size don't-fragment probe over the overlay finds MTU black holes. Bounded: a few
 * echoes per probe, a timeout each, at most {@link PARALLEL} peers at once over one prober.
 */
import { type CheckResult, fail, ok } from "./check.ts";
import type { Facts } from "./facts.ts";
import type { KernelSnapshot } from "./kernel_checks.ts";
import { vtepOf } from "./kernel_checks.ts";
import { describeProbe, IcmpProber, type ProbeResult } from "../health/probe.ts";
import { overlayTargets, type ProbeTarget } from "../health/targets.ts";
import { vxlanEchoFrame } from "../health/vxlan_probe.ts";
import {
  type EchoFrame,
  type EncapSender,
  openEncapSender,
  udpEchoFrame,
} from "../health/encap_probe.ts";
import { mapLimit } from "../health/parallel.ts";
import { formatIp } from "../base/ipv4.ts";
import { backendNumber } from "../config/network.ts";
import type { KnownLease } from "../lease/codec.ts";
import { vtepMacOf } from "../backend/vxlan/entries.ts";
import { leaseAddress } from "./facts.ts";

export const PARALLEL = 512;

/** Time the probe group may take for `peers` peers (a round of unreachable ones takes ~3 s). */
export function probeBudgetMs(peers: number): number {
  return 15_000 + Math.ceil(peers / PARALLEL) * 4_000;
}
const SMALL = { count: 3, intervalMs: 100, timeoutMs: 1000, size: 84 };
/** IPv6 header is 20 bytes longer: the same 56-byte echo payload. */
const SMALL6 = { ...SMALL, size: 104 };

/** The UDP port encapsulated traffic uses, for the firewall hint. */
function encapPort(f: Facts): number | null {
  if (f.backendType === "vxlan") return backendNumber(f.config!, "Port", 0) || 8472;
  if (f.backendType === "udp") return backendNumber(f.config!, "Port", 0) || 8285;
  return null;
}

/**
 * The first failed check about each subnet among `before` (kernel entries, leases): a lost probe
 * to that peer is explained by it, not by a firewall.
 */
export function explanations(f: Facts, before: readonly CheckResult[]): Map<string, string> {
  const out = new Map<string, string>();
  const byIp = new Map<string, number>();
  for (const l of f.leases) byIp.set(leaseAddress(l), (byIp.get(leaseAddress(l)) ?? 0) + 1);
  for (const l of f.leases) {
    if ((byIp.get(leaseAddress(l)) ?? 0) > 1) {
      for (const t of overlayTargets("", l)) out.set(t.subnet, "registry.duplicate-public-ip");
    }
  }
  for (const r of before) {
    if (r.status === "fail" && r.subnet && !out.has(r.subnet)) out.set(r.subnet, r.check);
  }
  return out;
}

/** What the probes need besides the peer: the prober, the crafted-echo sender, the full size. */
interface Probing {
  prober: IcmpProber;
  direct: EncapSender | null;
  /** Our VTEP's MAC (vxlan framing). */
  mac: string;
  fullSize: Record<4 | 6, number | null>;
}

export async function reachChecks(
  f: Facts,
  k: KernelSnapshot,
  before: readonly CheckResult[] = [],
): Promise<CheckResult[]> {
  if (!f.peers.length || !f.backendType || f.backendType === "alloc") return [];
  const dev = vtepOf(f, k.links, 4);
  const dev6 = vtepOf(f, k.links, 6);
  const envMtu = f.subnetEnv?.mtu ?? null;
  const pr: Probing = {
    prober: new IcmpProber(),
    direct: null,
    mac: dev?.mac.toLowerCase() ?? "",
    fullSize: {
      4: dev?.mtu ?? (f.backendType === "vxlan" ? null : envMtu),
      6: dev6?.mtu ?? (f.backendType === "vxlan" ? null : envMtu),
    },
  };
  try {
    // The crafted-frame probe needs our overlay address, our underlay address and, for vxlan,
    // our VTEP.
    if ((dev || f.backendType === "udp") && f.own && f.ext && f.own.subnet.prefix > 0) {
      try {
        pr.direct = openEncapSender(f.ext.ifaceAddr);
      } catch { /* no crafted probe: the ICMP underlay probe still tells most causes apart */ }
    }
    const known = explanations(f, before);
    const ipv6 = f.config?.enableIPv6 ?? false;
    const jobs = f.peers.flatMap((p) =>
      overlayTargets(f.backendType!, p, ipv6)
        .filter((t) => t.family === 6 || f.config?.enableIPv4 !== false)
        .map((t) => ({ p, t }))
    );
    const per = await mapLimit(
      jobs,
      PARALLEL,
      ({ p, t }) => probePeer(f, pr, p, t, known.get(t.subnet)),
    );
    return per.flat();
  } finally {
    pr.prober.close();
    pr.direct?.close();
  }
}

/** The backend's framing of an echo from our overlay address to `t`'s, or null. */
function directFrame(f: Facts, pr: Probing, p: KnownLease, t: ProbeTarget): EchoFrame | null {
  const ours = formatIp(f.own!.subnet.ip);
  if (f.backendType === "udp") {
    return (id, seq, size) => udpEchoFrame(ours, t.address, id, seq, size);
  }
  const mac = vtepMacOf(p, 4);
  if (!("mac" in mac)) return null;
  const l = { vni: backendNumber(f.config!, "VNI", 1), mac: pr.mac, vtepIp: ours };
  const peer = { publicIP: p.attrs.publicIP, port: encapPort(f)!, mac: mac.mac, vtepIp: t.address };
  return (id, seq, size) => vxlanEchoFrame(l, peer, id, seq, size);
}

/** The crafted echo to `p` over its backend's UDP port, or null when it cannot be sent. */
async function directProbe(f: Facts, pr: Probing, p: KnownLease, t: ProbeTarget) {
  const frame = pr.direct && t.family === 4 ? directFrame(f, pr, p, t) : null;
  if (!frame) return null;
  const send = pr.direct!.sender(p.attrs.publicIP, encapPort(f)!, frame);
  return await pr.prober.probe(t.address, { ...SMALL, count: 2 }, send);
}

async function probePeer(
  f: Facts,
  pr: Probing,
  p: KnownLease,
  t: ProbeTarget,
  known: string | undefined,
): Promise<CheckResult[]> {
  const { subnet, address: addr, publicIP: pub } = t;
  const small = t.family === 6 ? SMALL6 : SMALL;
  const who = `peer ${subnet} (${pub})`;
  const overlay = await pr.prober.probe(addr, small);
  const port = encapPort(f);
  const portText = port ? `UDP ${port}` : "the backend's traffic";
  if (overlay.received === 0) {
    // Both cause-finding probes at once: a dead peer costs one timeout, not two.
    const [direct, under] = await Promise.all([
      directProbe(f, pr, p, t),
      known ? null : pr.prober.probe(pub, { ...small, count: 2 }),
    ]);
    const framed = f.backendType === "udp" ? "a UDP datagram" : "a VXLAN frame";
    const directText = (d: ProbeResult) =>
      d.received > 0
        ? `; an echo in ${framed} sent straight to ${pub}:${port} is answered ` +
          `(${describeProbe(d)}): the port and the peer are fine`
        : `; an echo in ${framed} sent straight to ${pub}:${port} is not answered either`;
    if (known) {
      return [fail(
        "probe.overlay",
        `${who}: no answer from ${addr} over the overlay (${describeProbe(overlay)}), as the ` +
          `${known} failure above explains${direct ? directText(direct) : ""}`,
        `repair what the ${known} line says, then run weft doctor again`,
        subnet,
      )];
    }
    if (direct && direct.received > 0) {
      return [fail(
        "probe.overlay",
        `${who}: no answer from ${addr} over the overlay (${describeProbe(overlay)})${
          directText(direct)
        }, so this host's own path to it is broken (${
          f.backendType === "udp"
            ? "flannel0 or its route"
            : "its VTEP, route, neighbour or FDB entry"
        }, or a local firewall on outgoing traffic)`,
        "check the kernel.* lines for this peer and the OUTPUT/FORWARD chains here; restart the " +
          "agent (it re-adds its entries)",
        subnet,
      )];
    }
    if (under!.received > 0 && f.backendType === "host-gw") {
      // A host without pods has no bridge, so nothing holds <subnet>.1: nothing to probe. The
      // route via the host (kernel.route) is all this node's datapath has for it.
      return [ok(
        "probe.overlay",
        `${who}: no pod address to probe: ${addr} does not answer (no pod bridge there yet?) ` +
          `but the host answers on the underlay (${describeProbe(under!)})`,
        subnet,
      )];
    }
    if (under!.received > 0) {
      return [fail(
        "probe.overlay",
        `${who}: no answer from ${addr} over the overlay (${describeProbe(overlay)}) but ` +
          `${pub} answers on the underlay (${describeProbe(under!)})${
            direct ? directText(direct) : ""
          }: encapsulated traffic dropped between us (firewall or UDP port 8472/8285 blocked?)`,
        `allow ${portText} between ${
          t.family === 6 ? f.ext?.publicIPv6 : f.ext?.publicIP ?? "this host"
        } and ${pub} in every firewall on the path (iptables/nftables on both hosts, ` +
          "cloud security groups, VMware NSX); then check the kernel.* lines for this peer",
        subnet,
      )];
    }
    return [fail(
      "probe.overlay",
      `${who}: no answer from ${addr} over the overlay nor from ${pub} on the underlay`,
      `check that ${pub} is up and reachable; if the host is gone, its lease expires ` +
        "(or delete it)",
      subnet,
    )];
  }
  const out = [
    ok(
      "probe.overlay",
      `${who}: ${addr} answers over the overlay, ${describeProbe(overlay)}`,
      subnet,
    ),
  ];
  const fullSize = pr.fullSize[t.family];
  if (fullSize !== null && fullSize > small.size) {
    const big = await pr.prober.probe(addr, { ...small, count: 2, size: fullSize, df: true });
    if (big.tooBig) {
      out.push(fail(
        "probe.mtu",
        `${who}: a ${fullSize}-byte packet does not fit the local route to ${addr}`,
        "compare the mtu.* lines: a route or device MTU is below the overlay MTU",
        subnet,
      ));
    } else if (big.received === 0) {
      out.push(fail(
        "probe.mtu",
        `${who}: full-size ${fullSize}-byte don't-fragment packets to ${addr} are lost while ` +
          `small ones pass${
            big.fragNeededMtu ? ` (a router says MTU ${big.fragNeededMtu})` : ""
          }: an MTU black hole`,
        "lower the overlay MTU (Backend.MTU, or the underlay MTU on every host) to what the path " +
          "carries, and let ICMP 'fragmentation needed' through firewalls",
        subnet,
      ));
    } else {
      out.push(
        ok("probe.mtu", `${who}: ${fullSize}-byte DF packets pass, ${describeProbe(big)}`, subnet),
      );
    }
  }
  return out;
}
