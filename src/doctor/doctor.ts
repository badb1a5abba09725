/**
 * `weft doctor`: gathers the facts once, reads the kernel through netlink, then runs the check
 * groups in report order (registry, interface, agent, kernel, MTU, host, reachability), each
 * bounded in time. Returns the results; printing and the exit code are the caller's.
 *
 * @example
 * ```ts
 * const results = await runDoctor(opts);
 * console.log(renderText(results));
 * ```
 */
import { type CheckResult, fail, ok } from "./check.ts";
import { type DoctorOptions, type Facts, gatherFacts } from "./facts.ts";
import { registryChecks } from "./registry_checks.ts";
import { agentChecks } from "./agent_checks.ts";
import { kernelChecks, type KernelSnapshot, vtepOf } from "./kernel_checks.ts";
import { mtuChecks } from "./mtu_checks.ts";
import { hostChecks, readHostSettings } from "./host_checks.ts";
import { probeBudgetMs, reachChecks } from "./reach_checks.ts";
import { runGroups } from "./runner.ts";
import { netlink, RT_TABLE_MAIN } from "../../ffi/libnl/mod.ts";

export type { DoctorOptions };

/** The kernel state the checks compare against. */
export function readKernel(f: Facts): KernelSnapshot {
  const nl = netlink();
  const links = nl.linkList();
  const dev = vtepOf(f, links);
  const k: KernelSnapshot = {
    links,
    routes: f.config?.enableIPv4 === false ? [] : nl.routeList({ table: RT_TABLE_MAIN }),
    neigh: dev ? nl.neighList(dev.index) : [],
    fdb: dev ? nl.fdbList(dev.index) : [],
    vtepAddrs: dev ? nl.addrList(dev.index).map((a) => a.cidr) : [],
  };
  if (f.config?.enableIPv6) {
    const dev6 = vtepOf(f, links, 6);
    k.routes6 = nl.routeList({ table: RT_TABLE_MAIN, family: 6 });
    k.neigh6 = dev6 ? nl.neighList(dev6.index, 6) : [];
    k.fdb6 = dev6 ? nl.fdbList(dev6.index) : [];
    k.vtepAddrs6 = dev6 ? nl.addrList(dev6.index, 6).map((a) => a.cidr) : [];
  }
  return k;
}

function ifaceChecks(f: Facts): CheckResult[] {
  if (!f.ext) {
    return [
      fail(
        "iface.external",
        `no external interface: ${f.extError}`,
        "check --iface / --iface-regex / --iface-can-reach",
      ),
    ];
  }
  const e = f.ext;
  // Only the families the network serves: an IPv6-only host may have no IPv4 address at all.
  const v4 = f.config?.enableIPv4 ?? true;
  const v6 = f.config?.enableIPv6 && e.publicIPv6;
  const addrs = [
    ...(v4 ? [`${e.ifaceAddr}, public IP ${e.publicIP}`] : []),
    ...(v6 ? [`${e.ifaceAddr6 ?? "(no global IPv6 address)"}, public IPv6 ${e.publicIPv6}`] : []),
  ];
  return [ok("iface.external", `${e.name} ${addrs.join("; ")}, MTU ${e.mtu}`)];
}

export async function runDoctor(o: DoctorOptions, groupTimeoutMs = 15_000): Promise<CheckResult[]> {
  const f = await gatherFacts(o);
  let k: KernelSnapshot | null = null;
  let kernelError = "";
  try {
    k = readKernel(f);
  } catch (e) {
    kernelError = (e as Error).message;
  }
  const withKernel = (
    fn: (
      k: KernelSnapshot,
      before: readonly CheckResult[],
    ) => CheckResult[] | Promise<CheckResult[]>,
  ) =>
  (before: readonly CheckResult[]) =>
    k ? fn(k, before) : [
      fail(
        "kernel.read",
        `cannot read the kernel's state: ${kernelError}`,
        "run weft doctor as root (netlink, libnl)",
      ),
    ];
  return await runGroups([
    { name: "registry", run: () => registryChecks(f) },
    { name: "iface", run: () => ifaceChecks(f) },
    { name: "agent", run: () => agentChecks(f) },
    { name: "kernel", run: withKernel((k) => kernelChecks(f, k)) },
    { name: "mtu", run: withKernel((k) => mtuChecks(f, k)) },
    { name: "host", run: withKernel(async (k) => hostChecks(f, k, await readHostSettings(f, k))) },
    {
      name: "probe",
      timeoutMs: probeBudgetMs(f.peers.length * (f.config?.enableIPv6 ? 2 : 1)),
      run: withKernel((k, before) => reachChecks(f, k, before)),
    },
  ], groupTimeoutMs);
}
