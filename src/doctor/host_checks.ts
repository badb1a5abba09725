/**
 * Host settings that silently break overlays: ip_forward, strict rp_filter on the overlay device,
 * br_netfilter with a bridge, FORWARD policy DROP without forward rules, masquerade rules under
 * --ip-masq, and the vxlan TX checksum offload behind NAT (flannel issue 1279). Reading the
 * settings ({@link readHostSettings}) is separate from judging them ({@link hostChecks}).
 */
import { type CheckResult, fail, ok, warn } from "./check.ts";
import type { Facts } from "./facts.ts";
import type { KernelSnapshot } from "./kernel_checks.ts";
import { vtepOf } from "./kernel_checks.ts";
import { formatCidr } from "../base/ipv4.ts";
import { detectBinary } from "../iptables/exec.ts";
import { commandRunner } from "../backend/command.ts";
import { FWD_CHAIN, MASQ_CHAIN } from "../iptables/rules.ts";
import { vxlanOptions } from "../backend/vxlan/device.ts";
import { txChecksum } from "../../ffi/libc/ethtool.ts";

export interface HostSettings {
  ipForward: string | null;
  /** max(all, device) rp_filter of the overlay device; null without one. */
  rpFilter: number | null;
  /** bridge-nf-call-iptables; null when br_netfilter is not loaded. */
  bridgeNfCallIptables: string | null;
  /** `iptables -S` of the filter and nat tables; null when iptables could not run. */
  filterRules: string[] | null;
  natRules: string[] | null;
  iptablesError: string | null;
  /** TX checksum offload of the vxlan device; null without one. */
  txChecksum: boolean | null;
}

function readSys(path: string): string | null {
  try {
    return Deno.readTextFileSync(path).trim();
  } catch {
    return null;
  }
}

export async function readHostSettings(f: Facts, k: KernelSnapshot): Promise<HostSettings> {
  const dev = vtepOf(f, k.links);
  const rp = (name: string) => Number(readSys(`/proc/sys/net/ipv4/conf/${name}/rp_filter`) ?? 0);
  const s: HostSettings = {
    ipForward: readSys("/proc/sys/net/ipv4/ip_forward"),
    rpFilter: dev ? Math.max(rp("all"), rp(dev.name)) : null,
    bridgeNfCallIptables: readSys("/proc/sys/net/bridge/bridge-nf-call-iptables"),
    filterRules: null,
    natRules: null,
    iptablesError: null,
    txChecksum: null,
  };
  if (dev) {
    try {
      s.txChecksum = txChecksum(dev.name);
    } catch { /* reported as unknown */ }
  }
  const run = commandRunner([], 10_000);
  const bin = await detectBinary(run);
  const [filter, nat] = await Promise.all([
    run([bin, "-w", "5", "-S"]),
    run([bin, "-w", "5", "-t", "nat", "-S"]),
  ]);
  if (filter.code !== 0) s.iptablesError = `${bin} -S: ${filter.stderr}`;
  else s.filterRules = filter.stdout.split("\n");
  if (nat.code === 0) s.natRules = nat.stdout.split("\n");
  return s;
}

export function hostChecks(f: Facts, k: KernelSnapshot, s: HostSettings): CheckResult[] {
  const out: CheckResult[] = [];
  out.push(
    s.ipForward === "1" ? ok("host.ip-forward", "net.ipv4.ip_forward = 1") : fail(
      "host.ip-forward",
      `net.ipv4.ip_forward = ${s.ipForward ?? "unreadable"}: this host routes no pod traffic`,
      "sysctl -w net.ipv4.ip_forward=1, and persist it in /etc/sysctl.d/",
    ),
  );
  const dev = vtepOf(f, k.links);
  if (dev && s.rpFilter !== null) {
    out.push(
      s.rpFilter === 1
        ? warn(
          "host.rp-filter",
          `rp_filter on ${dev.name} is strict (1): replies that come back by another path are dropped`,
          `sysctl -w net.ipv4.conf.${dev.name}.rp_filter=2 (and net.ipv4.conf.all.rp_filter ≠ 1)`,
        )
        : ok("host.rp-filter", `rp_filter on ${dev.name} = ${s.rpFilter}`),
    );
  }
  const bridges = k.links.filter((l) => l.kind === "bridge").map((l) => l.name);
  if (bridges.length) {
    out.push(
      s.bridgeNfCallIptables === "1"
        ? ok("host.br-netfilter", `bridge ${bridges.join(", ")}; bridge-nf-call-iptables = 1`)
        : warn(
          "host.br-netfilter",
          `bridge ${bridges.join(", ")} exists but ${
            s.bridgeNfCallIptables === null
              ? "br_netfilter is not loaded"
              : "bridge-nf-call-iptables = 0"
          }: iptables (kube-proxy's Services) does not see traffic between pods on this host`,
          "modprobe br_netfilter && sysctl -w net.bridge.bridge-nf-call-iptables=1",
        ),
    );
  }
  if (s.filterRules === null) {
    out.push(
      warn(
        "host.iptables",
        `cannot read iptables: ${s.iptablesError}`,
        "install iptables, run as root",
      ),
    );
    return out;
  }
  if (f.config) out.push(...forwardCheck(f, s.filterRules));
  if (f.opts.ipMasq) {
    const jump = s.natRules?.some((l) =>
      l.startsWith("-A POSTROUTING") && l.includes(`-j ${MASQ_CHAIN}`)
    );
    const masq = s.natRules?.some((l) =>
      l.startsWith(`-A ${MASQ_CHAIN}`) && l.includes("MASQUERADE")
    );
    out.push(
      jump && masq
        ? ok("host.masquerade", `nat POSTROUTING jumps to ${MASQ_CHAIN}, which masquerades`)
        : fail(
          "host.masquerade",
          `--ip-masq is on but the nat table lacks ${
            jump ? `MASQUERADE rules in ${MASQ_CHAIN}` : `the POSTROUTING jump to ${MASQ_CHAIN}`
          }: pods cannot reach outside the cluster`,
          "restart the agent with --ip-masq (it re-adds the rules every --iptables-resync)",
        ),
    );
  }
  if (dev && f.ext && f.config && s.txChecksum !== null) {
    const want = vxlanOptions(f.config, f.ext).txChecksum;
    const nat = f.ext.publicIP !== f.ext.ifaceAddr;
    if (s.txChecksum && !want) {
      out.push(fail(
        "host.tx-checksum",
        `TX checksum offload is on for ${dev.name}${
          nat ? ` behind NAT (public IP ${f.ext.publicIP} ≠ ${f.ext.ifaceAddr})` : ""
        }: receivers drop the packets (flannel issue 1279)`,
        `ethtool -K ${dev.name} tx-checksum-ip-generic off (the agent does it at start)`,
      ));
    } else {
      out.push(
        ok(
          "host.tx-checksum",
          `TX checksum offload on ${dev.name}: ${s.txChecksum ? "on" : "off"}${
            nat ? " (behind NAT)" : ""
          }`,
        ),
      );
    }
  }
  return out;
}

function forwardCheck(f: Facts, rules: string[]): CheckResult[] {
  const net = formatCidr(f.config!.network);
  const policy = rules.find((l) => l.startsWith("-P FORWARD "))?.split(" ")[2] ?? "ACCEPT";
  // Accepted directly in FORWARD, or in FLANNEL-FWD with FORWARD jumping to it.
  const jump = rules.some((l) => l.startsWith("-A FORWARD ") && l.includes(`-j ${FWD_CHAIN}`));
  const accepts = (flag: string) =>
    rules.some((l) =>
      (l.startsWith("-A FORWARD ") || (jump && l.startsWith(`-A ${FWD_CHAIN} `))) &&
      l.includes(`${flag} ${net}`) && l.includes("-j ACCEPT")
    );
  const both = accepts("-s") && accepts("-d");
  if (policy !== "ACCEPT" && !both) {
    return [fail(
      "host.forward",
      `FORWARD policy is ${policy} and no rule accepts the cluster network ${net}: pod traffic between hosts is dropped`,
      `run the agent with --iptables-forward-rules (the default), or: iptables -A FORWARD -s ${net} -j ACCEPT; iptables -A FORWARD -d ${net} -j ACCEPT`,
    )];
  }
  if (f.opts.forwardRules && !jump) {
    return [warn(
      "host.forward",
      `--iptables-forward-rules is on but FORWARD does not jump to ${FWD_CHAIN} (policy ${policy} ` +
        "lets traffic through today; a policy DROP, e.g. from docker, would cut pods off)",
      "restart the agent with these flags (it adds the rules and re-checks them every --iptables-resync)",
    )];
  }
  return [ok("host.forward", `FORWARD policy ${policy}${both ? `, ${net} accepted` : ""}`)];
}
