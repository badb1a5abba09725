/**
 * Agent checks: does an agent run here (its health port when --healthz-port is set, else a weft
 * process in this network namespace), is it ready, and does subnet.env (what CNI reads) match
 * the lease and the flags.
 */
import { type CheckResult, fail, ok } from "./check.ts";
import type { Facts } from "./facts.ts";
import { formatCidr, sameNet } from "../base/ipv4.ts";
import { formatCidr6, sameNet6 } from "../base/ipv6.ts";
import { hasIpv4 } from "../config/subnet_env.ts";
import { withTimeout } from "../base/async.ts";
import { healthBase } from "../ops/health.ts";

export async function agentChecks(f: Facts): Promise<CheckResult[]> {
  const out: CheckResult[] = [];
  if (f.opts.healthzPort > 0) out.push(...await healthChecks(f));
  else {
    const pid = findAgentPid();
    out.push(
      pid === null
        ? fail(
          "agent.running",
          "no weft agent runs in this network namespace (no --healthz-port given to ask)",
          "start it with these flags: weft run ... (or give --healthz-port of the running one)",
        )
        : ok("agent.running", `agent pid ${pid} runs here (readiness: give --healthz-port)`),
    );
  }
  out.push(...subnetEnvChecks(f));
  return out;
}

async function healthChecks(f: Facts): Promise<CheckResult[]> {
  const base = healthBase(f.opts.healthzIp, f.opts.healthzPort);
  const get = async (path: string) => {
    const r = await withTimeout(fetch(base + path), 5000, `GET ${base}${path}`);
    return { status: r.status, body: (await r.text()).trim().slice(0, 200) };
  };
  try {
    await get("/healthz");
  } catch (e) {
    return [fail(
      "agent.running",
      `no agent answers on ${base}/healthz: ${(e as Error).message}`,
      "start the agent with these flags (weft run ...), or check --healthz-ip/--healthz-port",
    )];
  }
  const out = [ok("agent.running", `agent answers on ${base}/healthz`)];
  try {
    const r = await get("/readyz");
    out.push(
      r.status === 200 ? ok("agent.ready", `${base}/readyz: ready`) : fail(
        "agent.ready",
        `${base}/readyz answers ${r.status}: ${r.body}`,
        "read the agent's log: it says what it waits for (registry, lease, datapath)",
      ),
    );
  } catch (e) {
    out.push(
      fail("agent.ready", `${base}/readyz: ${(e as Error).message}`, "read the agent's log"),
    );
  }
  return out;
}

/** A process in this network namespace started as `weft [run] ...` or `... main.ts run ...`. */
export function findAgentPid(): number | null {
  let myNs: string;
  try {
    myNs = Deno.readLinkSync("/proc/self/ns/net");
  } catch {
    return null;
  }
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name) || Number(e.name) === Deno.pid) continue;
    try {
      if (Deno.readLinkSync(`/proc/${e.name}/ns/net`) !== myNs) continue;
      const argv = Deno.readTextFileSync(`/proc/${e.name}/cmdline`).split("\0").filter(Boolean);
      if (isAgentCommand(argv)) return Number(e.name);
    } catch { /* gone, or not ours to read */ }
  }
  return null;
}

/** Whether a command line is the agent's: `weft`, `weft run …`, `weft --flag …`, `… main.ts run …`. */
export function isAgentCommand(argv: string[]): boolean {
  const i = argv.findIndex((a) => /(^|\/)weft$/.test(a) || /(^|\/)main\.ts$/.test(a));
  if (i < 0) return false;
  const next = argv[i + 1];
  return next === undefined || next === "run" || next.startsWith("-");
}

function subnetEnvChecks(f: Facts): CheckResult[] {
  const file = f.opts.subnetFile;
  const env = f.subnetEnv;
  if (!env) {
    return [fail(
      "agent.subnet-env",
      `${file}: ${f.subnetEnvError}`,
      "start the agent (it writes the file when ready), or pass the --subnet-file it uses",
    )];
  }
  const problems: string[] = [];
  if (f.own && !sameNet(env.subnet, f.own.subnet)) {
    problems.push(
      `FLANNEL_SUBNET is ${formatCidr(env.subnet)} but the lease is ${formatCidr(f.own.subnet)}`,
    );
  }
  if (f.config && !sameNet(env.network, f.config.network)) {
    problems.push(
      `FLANNEL_NETWORK is ${formatCidr(env.network)} but the config's is ${
        formatCidr(f.config.network)
      }`,
    );
  }
  // The IPv6 lines against the lease's IPv6 half and the config's IPv6Network.
  const l6 = f.own?.subnet6;
  if (f.config?.enableIPv6) {
    if (!env.ipv6) problems.push("no FLANNEL_IPV6_SUBNET although the config enables IPv6");
    else if (l6 && !sameNet6(env.ipv6.subnet, l6)) {
      problems.push(
        `FLANNEL_IPV6_SUBNET is ${formatCidr6(env.ipv6.subnet)} but the lease's IPv6 half is ${
          formatCidr6(l6)
        }`,
      );
    }
  }
  if (env.ipMasq !== f.opts.ipMasq) {
    problems.push(`FLANNEL_IPMASQ is ${env.ipMasq} but --ip-masq is ${f.opts.ipMasq}`);
  }
  if (problems.length) {
    return [fail(
      "agent.subnet-env",
      `${file}: ${problems.join("; ")}`,
      "give weft doctor the agent's flags; if they are, restart the agent with them: it rewrites " +
        "the file (and CNI hands out the right addresses)",
    )];
  }
  const subnets = [
    ...(hasIpv4(env) ? [formatCidr(env.subnet)] : []),
    ...(env.ipv6 ? [formatCidr6(env.ipv6.subnet)] : []),
  ];
  return [ok("agent.subnet-env", `${file}: subnet ${subnets.join(" + ")}, MTU ${env.mtu}`)];
}
