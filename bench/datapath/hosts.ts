/**
 * The datapath benchmark's view of the cluster's hosts: their leases and VTEPs
 * ({@link hostFacts}), weft's agents started per backend and stopped, weft's overlay entries
 * flushed, the same entries made by hand with `ip -batch`/`bridge -batch` ({@link handMade}),
 * and the kernel state of a host as comparable lines ({@link kernelState}, {@link stateDiff}).
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
// Hand-made routes carry weft's mark too, so the kernel states compare equal.
import { RTPROT_WEFT } from "../../src/backend/routes.ts";

export const REPO = new URL("../../", import.meta.url).pathname;
export const MAIN = `${REPO}main.ts`;
export const VNI_DEV = "flannel.1";

/** Runs `<tool> -n <ns> -batch -` with `lines`; returns its wall time in ms (process included). */
export async function ipBatch(ns: string, tool: "ip" | "bridge", lines: string[]): Promise<number> {
  if (lines.length === 0) return 0;
  const t = performance.now();
  await runOk([tool, "-n", ns, "-batch", "-"], {
    stdin: lines.join("\n") + "\n",
    timeoutMs: 120_000,
  });
  return performance.now() - t;
}

export interface HostFacts {
  name: string;
  netns: string;
  ip: string;
  /** "198.19.7.0/24" */
  cidr: string;
  subnetAddr: string;
  mac: string | null;
}

export async function hostFacts(c: Cluster, withMac: boolean): Promise<HostFacts[]> {
  return await Promise.all(c.hosts.map(async (h) => {
    const env = await c.readSubnetEnv(h);
    if (!env) throw new Error(`${h.name} has no subnet.env`);
    let mac: string | null = null;
    if (withMac) {
      const l = JSON.parse(await c.exec(h, ["ip", "-j", "link", "show", VNI_DEV]));
      mac = l[0].address;
    }
    return {
      name: h.name,
      netns: h.netns,
      ip: h.ip,
      cidr: formatCidr(env.subnet),
      subnetAddr: formatIp(env.subnet.ip),
      mac,
    };
  }));
}

/** Routes to the other hosts' subnets present on `h`. */
export async function peerRoutesPresent(
  c: Cluster,
  h: HostFacts,
  all: HostFacts[],
): Promise<boolean> {
  const have = new Set((await c.routes(h.name)).map((r) => r.dst));
  return all.filter((p) => p !== h).every((p) => have.has(p.cidr));
}

/** Removes weft's (or the hand-made) overlay entries from every host. */
export async function flush(c: Cluster, backend: string) {
  for (const h of c.hosts) {
    if (backend === "vxlan") {
      const r = await c.run(h, ["ip", "link", "del", VNI_DEV]);
      if (r.code !== 0 && !/Cannot find device/.test(r.stderr)) {
        throw new Error(`deleting ${VNI_DEV} on ${h.name}: ${r.stderr}`);
      }
    } else {
      await c.exec(h, ["ip", "route", "flush", "root", "198.19.0.0/16", "dev", "eth0"]);
    }
  }
}

/** flannel's entries for `backend`, made by hand with `ip -batch` / `bridge -batch`. */
export async function handMade(c: Cluster, backend: string, facts: HostFacts[]) {
  for (const h of facts) {
    const peers = facts.filter((p) => p !== h);
    if (backend === "vxlan") {
      await ipBatch(h.netns, "ip", [
        `link add ${VNI_DEV} address ${h.mac} mtu 1450 type vxlan id 1 local ${h.ip} dev eth0 ` +
        `dstport 8472 nolearning`,
        `link set ${VNI_DEV} up`,
        `addr add ${h.subnetAddr}/32 dev ${VNI_DEV}`,
        ...peers.map((p) =>
          `neigh replace ${p.subnetAddr} lladdr ${p.mac} dev ${VNI_DEV} nud permanent`
        ),
      ]);
      await ipBatch(
        h.netns,
        "bridge",
        peers.map((p) => `fdb replace ${p.mac} dev ${VNI_DEV} dst ${p.ip} self permanent`),
      );
      await ipBatch(
        h.netns,
        "ip",
        peers.map((p) =>
          `route replace ${p.cidr} via ${p.subnetAddr} dev ${VNI_DEV} proto ${RTPROT_WEFT} onlink`
        ),
      );
    } else {
      await ipBatch(
        h.netns,
        "ip",
        peers.map((p) => `route replace ${p.cidr} via ${p.ip} dev eth0 proto ${RTPROT_WEFT}`),
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
  const routes = await j(["ip", "-d", "-j", "route", "show", "root", "198.19.0.0/16"]);
  for (const r of routes.filter((r) => r.dev !== "cni0")) out.push(`route ${JSON.stringify(r)}`);
  if (backend !== "vxlan") return out.sort();
  for (const l of await j(["ip", "-d", "-j", "link", "show", VNI_DEV])) {
    for (const k of ["ifindex", "link_index", "stats64", "operstate", "flags", "qdisc"]) {
      delete l[k];
    }
    out.push(`link ${JSON.stringify(l)}`);
  }
  for (const n of await j(["ip", "-j", "neigh", "show", "dev", VNI_DEV])) {
    out.push(`neigh ${JSON.stringify(n)}`);
  }
  for (const f of await j(["bridge", "-j", "fdb", "show", "dev", VNI_DEV])) {
    if (f.dst) out.push(`fdb ${JSON.stringify(f)}`);
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
  for (const h of c.hosts) {
    if (h.agent && !h.agent.status) continue;
    // The registry's config says vxlan (seeded by the first start); --backend selects per node.
    c.startAgent(h, { backend: "vxlan", extraArgs: ["--backend", backend] });
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
