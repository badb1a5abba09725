/**
 * Switching the same hosts to another backend: the agents are stopped, `weft cleanup` runs in
 * each host namespace, `weft config set` stores the next config (inside h1's namespace: the
 * underlay exists only there), the agents start again and must keep their subnets, and the
 * pods get the new FLANNEL_MTU. So every backend is measured on the same namespaces.
 *
 * @example
 * ```ts
 * await c.startAll(agentOptions("udp"));
 * const mtu = await switchBackend(rig, "vxlan");
 * ```
 */
import { CLUSTER_NETWORK } from "../../test/kit/names.ts";
import { runOk } from "../../test/kit/proc.ts";
import { formatCidr } from "../../src/base/ipv4.ts";
import { BACKEND_CONFIGS, HEALTHZ } from "./flags.ts";
import type { Rig } from "./measure.ts";

/** The harness agent options of `backend` (its config, /metrics on HEALTHZ). */
export function agentOptions(backend: string) {
  // Inside harness hosts iptables rules would be allowed; off, so both backends run the same
  // (empty) FORWARD chain and no xtables lock is taken during measurements.
  const cfg = BACKEND_CONFIGS[backend];
  return {
    backend: cfg.Type as string,
    netConfig: { Backend: cfg },
    healthzPort: HEALTHZ,
    extraArgs: ["--iptables-forward-rules=false"],
  };
}

/** Stops the agents, cleans up, stores `backend`'s config, restarts; returns the new MTU. */
export async function switchBackend(r: Rig, backend: string): Promise<number> {
  const { c } = r;
  const t0 = performance.now();
  const before = await Promise.all(c.hosts.map((h) => c.readSubnetEnv(h)));
  await Promise.all(c.hosts.map((h) => h.agent!.stop("SIGTERM")));
  for (const h of c.hosts) {
    await c.weftOk(h, [
      "cleanup",
      ...c.registryArgs(),
      "--iface",
      "eth0",
      "--subnet-file",
      h.subnetFile,
    ], { timeoutMs: 30_000 });
    const left = await c.exec(h, ["ip", "-br", "link", "show"]);
    if (/^flannel/m.test(left)) {
      throw new Error(`weft cleanup left a flannel device on ${h.name}:\n${left}`);
    }
  }
  // The same JSON the harness writes for --net-config-path, so the agents find it unchanged.
  const cfgFile = `${c.dir}/net-config-${backend}.json`;
  await Deno.writeTextFile(
    cfgFile,
    JSON.stringify({ Network: CLUSTER_NETWORK, Backend: BACKEND_CONFIGS[backend] }),
  );
  await c.weftOk(c.hosts[0], ["config", "set", cfgFile, ...c.registryArgs()], {
    timeoutMs: 30_000,
  });
  const envs = await Promise.all(
    c.hosts.map((h) => c.startAgent(h, agentOptions(backend)).waitReady()),
  );
  for (const [i, h] of c.hosts.entries()) {
    const was = before[i] ? formatCidr(before[i]!.subnet) : "?";
    const now = formatCidr(envs[i].subnet);
    if (was !== now) {
      throw new Error(
        `${h.name} leased ${now} after the switch to ${backend}, not its old ${was}; the pods ` +
          `were wired for the old subnet, so the comparison would not be on the same setup`,
      );
    }
  }
  // The pods keep their namespaces and addresses; only the MTU follows the new backend.
  for (const [i, h] of c.hosts.entries()) {
    const mtu = String(envs[i].mtu);
    for (const p of h.pods) {
      await runOk(["ip", "-n", p.netns, "link", "set", "eth0", "mtu", mtu]);
      await runOk(["ip", "-n", h.netns, "link", "set", p.hostVeth, "mtu", mtu]);
      p.mtu = envs[i].mtu;
    }
    await runOk(["ip", "-n", h.netns, "link", "set", "cni0", "mtu", mtu]);
  }
  // Bounded wait for the datapath (peers' leases are rewritten as each agent starts).
  const end = Date.now() + 20_000;
  for (;;) {
    const p = await c.ping(r.p1, r.p2.ip, { count: 1, timeoutS: 1 });
    if (p.received === 1) break;
    if (Date.now() > end) throw new Error(`p1 cannot reach p2 20 s after switching to ${backend}`);
  }
  console.log(
    `\n# switched to ${backend} in ${((performance.now() - t0) / 1000).toFixed(1)} s ` +
      `(same subnets: ${envs.map((e) => formatCidr(e.subnet)).join(", ")})`,
  );
  return envs[0].mtu;
}
