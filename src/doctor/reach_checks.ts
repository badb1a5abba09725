/**
 * Reachability of every peer: an overlay echo probe (own overlay address to the peer's), and
 * when that fails, an underlay probe of the peer's public IP to tell "host down" from
 * "encapsulated traffic dropped between us"; then a full-size don't-fragment probe over the
 * overlay that finds MTU black holes. Bounded: a few echoes per peer, a timeout each, at most
 * {@link PARALLEL} peers at once over one socket.
 */
import { type CheckResult, fail, ok } from "./check.ts";
import type { Facts } from "./facts.ts";
import type { KernelSnapshot } from "./kernel_checks.ts";
import { vtepOf } from "./kernel_checks.ts";
import { describeProbe, IcmpProber, overlayAddress } from "../health/probe.ts";
import { mapLimit } from "../health/parallel.ts";
import { formatCidr } from "../base/ipv4.ts";
import { backendNumber } from "../config/network.ts";
import type { KnownLease } from "../lease/codec.ts";

export const PARALLEL = 512;

/** Time the probe group may take for `peers` peers (a round of unreachable ones takes ~3 s). */
export function probeBudgetMs(peers: number): number {
  return 15_000 + Math.ceil(peers / PARALLEL) * 4_000;
}
const SMALL = { count: 3, intervalMs: 100, timeoutMs: 1000, size: 84 };

/** The UDP port encapsulated traffic uses, for the firewall hint. */
function encapPort(f: Facts): string {
  if (f.backendType === "vxlan") return `UDP ${backendNumber(f.config!, "Port", 0) || 8472}`;
  if (f.backendType === "udp") return `UDP ${backendNumber(f.config!, "Port", 0) || 8285}`;
  return "";
}

/**
 * The first failed check about each subnet among `before` (kernel entries, leases): a lost probe
 * to that peer is explained by it, not by a firewall.
 */
export function explanations(f: Facts, before: readonly CheckResult[]): Map<string, string> {
  const out = new Map<string, string>();
  const byIp = new Map<string, number>();
  for (const l of f.leases) byIp.set(l.attrs.publicIP, (byIp.get(l.attrs.publicIP) ?? 0) + 1);
  for (const l of f.leases) {
    if ((byIp.get(l.attrs.publicIP) ?? 0) > 1) {
      out.set(formatCidr(l.subnet), "registry.duplicate-public-ip");
    }
  }
  for (const r of before) {
    if (r.status === "fail" && r.subnet && !out.has(r.subnet)) out.set(r.subnet, r.check);
  }
  return out;
}

export async function reachChecks(
  f: Facts,
  k: KernelSnapshot,
  before: readonly CheckResult[] = [],
): Promise<CheckResult[]> {
  if (!f.peers.length || !f.backendType || f.backendType === "alloc") return [];
  const dev = vtepOf(f, k.links);
  const fullSize = dev?.mtu ?? f.subnetEnv?.mtu ?? null;
  const prober = new IcmpProber();
  try {
    const known = explanations(f, before);
    const per = await mapLimit(
      f.peers,
      PARALLEL,
      (p) => probePeer(f, prober, p, fullSize, known.get(formatCidr(p.subnet))),
    );
    return per.flat();
  } finally {
    prober.close();
  }
}

async function probePeer(
  f: Facts,
  prober: IcmpProber,
  p: KnownLease,
  fullSize: number | null,
  known: string | undefined,
): Promise<CheckResult[]> {
  const subnet = formatCidr(p.subnet);
  const addr = overlayAddress(f.backendType!, p);
  const who = `peer ${subnet} (${p.attrs.publicIP})`;
  const overlay = await prober.probe(addr, SMALL);
  if (overlay.received === 0) {
    if (known) {
      return [fail(
        "probe.overlay",
        `${who}: no answer from ${addr} over the overlay (${describeProbe(overlay)}), as the ` +
          `${known} failure above explains`,
        `repair what the ${known} line says, then run weft doctor again`,
        subnet,
      )];
    }
    const under = await prober.probe(p.attrs.publicIP, { ...SMALL, count: 2 });
    const port = encapPort(f);
    if (under.received > 0 && f.backendType === "host-gw") {
      return [fail(
        "probe.overlay",
        `${who}: ${p.attrs.publicIP} answers (${describeProbe(under)}) but its bridge ${addr} ` +
          "does not: no pod bridge there yet, or that host drops forwarded traffic",
        `on ${p.attrs.publicIP}: check that a pod runs (cni0 holds ${addr}), ip_forward and ` +
          "the FORWARD chain (weft doctor there says which)",
        subnet,
      )];
    }
    if (under.received > 0) {
      return [fail(
        "probe.overlay",
        `${who}: no answer from ${addr} over the overlay (${describeProbe(overlay)}) but ` +
          `${p.attrs.publicIP} answers on the underlay (${describeProbe(under)}): encapsulated ` +
          "traffic dropped between us (firewall or UDP port 8472/8285 blocked?)",
        `allow ${port || "the backend's traffic"} between ${f.ext?.publicIP ?? "this host"} and ` +
          `${p.attrs.publicIP} in every firewall on the path (iptables/nftables on both hosts, ` +
          "cloud security groups, VMware NSX); then check the kernel.* lines for this peer",
        subnet,
      )];
    }
    return [fail(
      "probe.overlay",
      `${who}: no answer from ${addr} over the overlay nor from ${p.attrs.publicIP} on the underlay`,
      `check that ${p.attrs.publicIP} is up and reachable; if the host is gone, its lease expires ` +
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
  if (fullSize !== null && fullSize > SMALL.size) {
    const big = await prober.probe(addr, { ...SMALL, count: 2, size: fullSize, df: true });
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
