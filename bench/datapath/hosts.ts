/**
 * The datapath benchmark's view of the cluster's hosts: their leases and VTEPs
 * ({@link hostFacts}), weft's agents started per backend and stopped, weft's overlay entries
 * flushed, the same entries made by hand with `ip -batch`/`bridge -batch` ({@link handMade}),
 * and the kernel state of a host as comparable lines ({@link kernelState}, {@link stateDiff}).
 * On a dual-stack cluster (hosts with `ip6`, see {@link isDual}) each of these covers the IPv6
 * side too: weft's `flannel-v6.1` and its per-peer IPv6 neighbour, FDB entry and onlink route
 * (vxlan), routes via each peer's PublicIPv6 (host-gw); the hand-made copy uses `ip -6 -batch`.
 *
 * @example
 * ```ts
 * await startAgents(c, "vxlan");
 * const facts = await hostFacts(c, true);
 * await stopAgents(c);
 * await flush(c, "vxlan");
 * await handMade(c, "vxlan", facts);
 * ```
 */
import type { Cluster } from "../../test/kit/cluster.ts";
import { runOk, waitFor } from "../../test/kit/proc.ts";
import { formatCidr, formatIp } from "../../src/base/ipv4.ts";
import { formatCidr6, formatIp6 } from "../../src/base/ipv6.ts";
// Hand-made routes carry weft's mark too, so the kernel states compare equal.
import { RTPROT_WEFT } from "../../src/backend/routes.ts";

export const REPO = new URL("../../", import.meta.url).pathname;
export const MAIN = `${REPO}main.ts`;
export const VNI_DEV = "flannel.1";
export const VNI_DEV6 = "flannel-v6.1";

/**
 * Runs `<tool> -n <ns> -batch -` with `lines` (`family` 6: `ip -6 -batch`); returns its wall time
 * in ms (process included).
 */
export async function ipBatch(
  ns: string,
  tool: "ip" | "bridge",
  lines: string[],
  family: 4 | 6 = 4,
): Promise<number> {
  if (lines.length === 0) return 0;
  const t = performance.now();
  await runOk([tool, ...(family === 6 ? ["-6"] : []), "-n", ns, "-batch", "-"], {
    stdin: lines.join("\n") + "\n",
    timeoutMs: 120_000,
  });
  return performance.now() - t;
}

/** Whether the cluster was built dual stack (`--families` with 6): its hosts have IPv6. */
export const isDual = (c: Cluster): boolean => c.hosts.every((h) => h.ip6);

/** A VTEP's MAC and MTU as weft made it (the hand-made copy takes both). */
interface Vtep {
  mac: string;
  mtu: number;
}

export interface HostFacts {
  name: string;
  netns: string;
  ip: string;
  /** "198.19.7.0/24" */
  cidr: string;
  subnetAddr: string;
  /** vxlan: flannel.1's MAC and MTU. */
  vtep: Vtep | null;
  /** Dual stack: the IPv6 half (vxlan: with flannel-v6.1's MAC and MTU). */
  v6: { ip: string; cidr: string; subnetAddr: string; vtep: Vtep | null } | null;
}

async function vtepOf(c: Cluster, host: string, dev: string): Promise<Vtep> {
  const l = JSON.parse(await c.exec(host, ["ip", "-j", "link", "show", dev]))[0];
  return { mac: l.address, mtu: l.mtu };
}

export async function hostFacts(c: Cluster, withMac: boolean): Promise<HostFacts[]> {
  return await Promise.all(c.hosts.map(async (h) => {
    const env = await c.readSubnetEnv(h);
    if (!env) throw new Error(`${h.name} has no subnet.env`);
    if (isDual(c) && !env.ipv6) throw new Error(`${h.name}'s subnet.env has no IPv6 subnet`);
    const s6 = env.ipv6?.subnet;
    return {
      name: h.name,
      netns: h.netns,
      ip: h.ip,
      cidr: formatCidr(env.subnet),
      subnetAddr: formatIp(env.subnet.ip),
      vtep: withMac ? await vtepOf(c, h.name, VNI_DEV) : null,
      v6: s6 && h.ip6
        ? {
          ip: h.ip6,
          cidr: formatCidr6(s6),
          subnetAddr: formatIp6(s6.ip),
          vtep: withMac ? await vtepOf(c, h.name, VNI_DEV6) : null,
        }
        : null,
    };
  }));
}

/** Routes to the other hosts' subnets present on `h` (and to their IPv6 subnets, if any). */
export async function peerRoutesPresent(
  c: Cluster,
  h: HostFacts,
  all: HostFacts[],
): Promise<boolean> {
  const have = new Set((await c.routes(h.name)).map((r) => r.dst));
  if (h.v6) {
    const r6 = JSON.parse(await c.exec(h.name, ["ip", "-6", "-j", "route"]));
    for (const r of r6 as { dst: string }[]) have.add(r.dst);
  }
  return all.filter((p) => p !== h).every((p) =>
    have.has(p.cidr) && (!p.v6 || have.has(p.v6.cidr))
  );
}

/** Removes weft's (or the hand-made) overlay entries from every host. */
export async function flush(c: Cluster, backend: string) {
  for (const h of c.hosts) {
    if (backend === "vxlan") {
      for (const dev of isDual(c) ? [VNI_DEV, VNI_DEV6] : [VNI_DEV]) {
        const r = await c.run(h, ["ip", "link", "del", dev]);
        if (r.code !== 0 && !/Cannot find device/.test(r.stderr)) {
          throw new Error(`deleting ${dev} on ${h.name}: ${r.stderr}`);
        }
      }
    } else {
      await c.exec(h, ["ip", "route", "flush", "root", "198.19.0.0/16", "dev", "eth0"]);
      if (isDual(c)) {
        await c.exec(h, ["ip", "-6", "route", "flush", "root", c.network6, "dev", "eth0"]);
      }
    }
  }
}

/** flannel's entries for `backend`, made by hand with `ip -batch` / `bridge -batch`. */
export async function handMade(c: Cluster, backend: string, facts: HostFacts[]) {
  for (const h of facts) {
    const peers = facts.filter((p) => p !== h);
    const peers6 = peers.flatMap((p) => p.v6 ? [p.v6] : []);
    if (backend === "vxlan") {
      const v = h.vtep!;
      await ipBatch(h.netns, "ip", [
        `link add ${VNI_DEV} address ${v.mac} mtu ${v.mtu} type vxlan id 1 local ${h.ip} ` +
        `dev eth0 dstport 8472 nolearning`,
        `link set ${VNI_DEV} up`,
        `addr add ${h.subnetAddr}/32 dev ${VNI_DEV}`,
        ...peers.map((p) =>
          `neigh replace ${p.subnetAddr} lladdr ${p.vtep!.mac} dev ${VNI_DEV} nud permanent`
        ),
      ]);
      if (h.v6) {
        const v6 = h.v6.vtep!;
        await ipBatch(h.netns, "ip", [
          `link add ${VNI_DEV6} address ${v6.mac} mtu ${v6.mtu} type vxlan id 1 ` +
          `local ${h.v6.ip} dev eth0 dstport 8472 nolearning`,
          `link set ${VNI_DEV6} up`,
        ]);
        await ipBatch(h.netns, "ip", [
          `addr add ${h.v6.subnetAddr}/128 dev ${VNI_DEV6}`,
          ...peers6.map((p) =>
            `neigh replace ${p.subnetAddr} lladdr ${p.vtep!.mac} dev ${VNI_DEV6} nud permanent`
          ),
        ], 6);
      }
      await ipBatch(h.netns, "bridge", [
        ...peers.map((p) => `fdb replace ${p.vtep!.mac} dev ${VNI_DEV} dst ${p.ip} self permanent`),
        ...peers6.map((p) =>
          `fdb replace ${p.vtep!.mac} dev ${VNI_DEV6} dst ${p.ip} self permanent`
        ),
      ]);
      await ipBatch(
        h.netns,
        "ip",
        peers.map((p) =>
          `route replace ${p.cidr} via ${p.subnetAddr} dev ${VNI_DEV} proto ${RTPROT_WEFT} onlink`
        ),
      );
      await ipBatch(
        h.netns,
        "ip",
        peers6.map((p) =>
          `route replace ${p.cidr} via ${p.subnetAddr} dev ${VNI_DEV6} proto ${RTPROT_WEFT} onlink`
        ),
        6,
      );
    } else {
      await ipBatch(
        h.netns,
        "ip",
        peers.map((p) => `route replace ${p.cidr} via ${p.ip} dev eth0 proto ${RTPROT_WEFT}`),
      );
      await ipBatch(
        h.netns,
        "ip",
        peers6.map((p) => `route replace ${p.cidr} via ${p.ip} dev eth0 proto ${RTPROT_WEFT}`),
        6,
      );
    }
  }
  for (const h of facts) {
    if (!await peerRoutesPresent(c, h, facts)) {
      throw new Error(`hand-made routes missing on ${h.name}`);
    }
  }
}

/**
 * What the kernel of `host` holds for the overlay, as comparable text lines: the vxlan device
 * (`ip -d -j link`, minus ifindex/stats), the routes into the cluster network except the pod
 * bridge's, and the vxlan neighbours and FDB entries. Used to show weft's entries and the
 * hand-made ones are the same, so a throughput difference cannot come from them.
 */
export async function kernelState(c: Cluster, host: string, backend: string): Promise<string[]> {
  const j = async (cmd: string[]) => {
    const r = await c.run(host, cmd);
    return r.code === 0 && r.stdout.trim() ? JSON.parse(r.stdout) as Record<string, unknown>[] : [];
  };
  const out: string[] = [];
  const dual = isDual(c);
  const routes = [
    ...await j(["ip", "-d", "-j", "route", "show", "root", "198.19.0.0/16"]),
    ...dual ? await j(["ip", "-6", "-d", "-j", "route", "show", "root", c.network6]) : [],
  ];
  for (const r of routes.filter((r) => r.dev !== "cni0")) out.push(`route ${JSON.stringify(r)}`);
  if (backend !== "vxlan") return out.sort();
  for (const dev of dual ? [VNI_DEV, VNI_DEV6] : [VNI_DEV]) {
    for (const l of await j(["ip", "-d", "-j", "link", "show", dev])) {
      for (const k of ["ifindex", "link_index", "stats64", "operstate", "flags", "qdisc"]) {
        delete l[k];
      }
      out.push(`link ${JSON.stringify(l)}`);
    }
    // IPv6: only the permanent (peer) entries; the kernel's own come and go with traffic.
    const neigh = dev === VNI_DEV
      ? ["ip", "-j", "neigh", "show", "dev", dev]
      : ["ip", "-6", "-j", "neigh", "show", "dev", dev, "nud", "permanent"];
    for (const n of await j(neigh)) out.push(`neigh ${JSON.stringify(n)}`);
    for (const f of await j(["bridge", "-j", "fdb", "show", "dev", dev])) {
      if (f.dst) out.push(`fdb ${JSON.stringify(f)}`);
    }
  }
  return out.sort();
}

/** Lines only one side has ("weft only: …", "hand only: …"); empty when identical. */
export function stateDiff(weft: string[], hand: string[]): string[] {
  const w = new Set(weft);
  const h = new Set(hand);
  return [
    ...weft.filter((x) => !h.has(x)).map((x) => `weft only: ${x}`),
    ...hand.filter((x) => !w.has(x)).map((x) => `hand only: ${x}`),
  ];
}

export async function startAgents(c: Cluster, backend: string) {
  const netConfig = isDual(c) ? { EnableIPv6: true, IPv6Network: c.network6 } : undefined;
  for (const h of c.hosts) {
    if (h.agent && !h.agent.status) continue;
    // The registry's config says vxlan (seeded by the first start); --backend selects per node.
    c.startAgent(h, { backend: "vxlan", netConfig, extraArgs: ["--backend", backend] });
  }
  await Promise.all(c.hosts.map((h) => h.agent!.waitReady(30_000)));
}

export async function stopAgents(c: Cluster) {
  await Promise.all(
    c.hosts.map((h) => h.agent && !h.agent.status ? h.agent.stop("SIGTERM") : null),
  );
}

/** Waits (bounded, 20 s per host) until every host has routes to all other hosts' subnets. */
export async function waitPeerRoutes(c: Cluster, facts: HostFacts[]): Promise<void> {
  for (const h of facts) {
    await waitFor(`peer routes on ${h.name}`, () => peerRoutesPresent(c, h, facts), {
      timeoutMs: 20_000,
    });
  }
}
