/**
 * Host settings that silently break overlays: ip_forward, strict rp_filter on the overlay device,
 * br_netfilter with a bridge, FORWARD policy DROP without forward rules, masquerade rules under
 * --ip-masq, and the vxlan TX checksum offload behind NAT (flannel issue 1279). Per family the
 * config serves: IPv6 forwarding and ip6tables (or, with EnableNFTables, the `ip6 flannel-ipv6`
 * table) beside the IPv4 ones; an IPv6-only network gets no IPv4 checks. Reading the settings
 * ({@link readHostSettings}) is separate from judging them ({@link hostChecks}).
 */
import { type CheckResult, fail, ok, warn } from "./check.ts";
import type { Facts } from "./facts.ts";
import type { KernelSnapshot } from "./kernel_checks.ts";
import { vtepOf } from "./kernel_checks.ts";
import { formatCidr } from "../base/ipv4.ts";
import { detectBinary } from "../iptables/exec.ts";
import { commandRunner } from "../backend/command.ts";
import { FWD_CHAIN, MASQ_CHAIN } from "../iptables/rules.ts";
import { NFT_TABLE } from "../nftables/rules.ts";
import { formatCidr6 } from "../base/ipv6.ts";
import { servesFamily } from "./kernel_checks.ts";
import type { Runner } from "../backend/command.ts";
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
  /** The IPv6 half (read when the config enables IPv6): net.ipv6.conf.all.forwarding, ip6tables. */
  ipv6?: {
    forwarding: string | null;
    filterRules: string[] | null;
    natRules: string[] | null;
    iptablesError: string | null;
    /** bridge-nf-call-ip6tables; null (or absent) when br_netfilter is not loaded. */
    bridgeNfCallIp6tables?: string | null;
  };
  /** With EnableNFTables: `nft list table` of each family's table (null: absent). */
  nft?: { ip: string | null; ip6: string | null };
}

/** `<bin> -S` of the filter and nat tables of one family. */
async function readRules(run: Runner, family: 4 | 6) {
  const bin = await detectBinary(run, family);
  const [filter, nat] = await Promise.all([
    run([bin, "-w", "5", "-S"]),
    run([bin, "-w", "5", "-t", "nat", "-S"]),
  ]);
  return {
    filterRules: filter.code === 0 ? filter.stdout.split("\n") : null,
    natRules: nat.code === 0 ? nat.stdout.split("\n") : null,
    iptablesError: filter.code === 0 ? null : `${bin} -S: ${filter.stderr}`,
  };
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
  Object.assign(s, await readRules(run, 4));
  if (f.config?.enableIPv6) {
    s.ipv6 = {
      forwarding: readSys("/proc/sys/net/ipv6/conf/all/forwarding"),
      bridgeNfCallIp6tables: readSys("/proc/sys/net/bridge/bridge-nf-call-ip6tables"),
      ...await readRules(run, 6),
    };
  }
  if (f.config?.enableNFTables) {
    const table = async (fam: "ip" | "ip6") => {
      const r = await run(["nft", "list", "table", fam, NFT_TABLE[fam]]);
      return r.code === 0 ? r.stdout : null;
    };
    s.nft = { ip: await table("ip"), ip6: await table("ip6") };
  }
  return s;
}

export function hostChecks(f: Facts, k: KernelSnapshot, s: HostSettings): CheckResult[] {
  const out: CheckResult[] = [];
  const v4 = servesFamily(f, 4);
  if (v4) {
    out.push(
      s.ipForward === "1" ? ok("host.ip-forward", "net.ipv4.ip_forward = 1") : fail(
        "host.ip-forward",
        `net.ipv4.ip_forward = ${s.ipForward ?? "unreadable"}: this host routes no pod traffic`,
        "sysctl -w net.ipv4.ip_forward=1, and persist it in /etc/sysctl.d/",
      ),
    );
  }
  if (s.ipv6) {
    const fw = s.ipv6.forwarding;
    out.push(
      fw === "1" ? ok("host.ip-forward6", "net.ipv6.conf.all.forwarding = 1") : fail(
        "host.ip-forward6",
        `net.ipv6.conf.all.forwarding = ${
          fw ?? "unreadable"
        }: this host routes no IPv6 pod traffic`,
        "sysctl -w net.ipv6.conf.all.forwarding=1, and persist it in /etc/sysctl.d/",
      ),
    );
  }
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
    // The sysctl of each family the network serves (IPv6-only: bridge-nf-call-ip6tables alone).
    const knobs = [
      ...(v4 ? [["bridge-nf-call-iptables", s.bridgeNfCallIptables] as const] : []),
      ...(s.ipv6
        ? [["bridge-nf-call-ip6tables", s.ipv6.bridgeNfCallIp6tables ?? null] as const]
        : []),
    ];
    const off = knobs.filter(([, val]) => val !== "1");
    const tables = off.map(([name]) =>
      name === "bridge-nf-call-iptables" ? "iptables" : "ip6tables"
    );
    out.push(
      !off.length
        ? ok(
          "host.br-netfilter",
          `bridge ${bridges.join(", ")}; ${knobs.map(([n]) => `${n} = 1`).join(", ")}`,
        )
        : warn(
          "host.br-netfilter",
          `bridge ${bridges.join(", ")} exists but ${
            off.some(([, val]) => val === null)
              ? "br_netfilter is not loaded"
              : off.map(([n, val]) => `${n} = ${val}`).join(", ")
          }: ${tables.join(" and ")} (kube-proxy's Services) ${
            tables.length > 1 ? "do" : "does"
          } not see traffic between pods on this host`,
          `modprobe br_netfilter && ${
            knobs.map(([n]) => `sysctl -w net.bridge.${n}=1`).join(" && ")
          }`,
        ),
    );
  }
  const families = [
    ...(v4 ? [{ fam: 4 as const, ...s }] : []),
    ...(s.ipv6 ? [{ fam: 6 as const, ...s.ipv6 }] : []),
  ];
  for (const r of families) {
    const sfx = r.fam === 6 ? "6" : "";
    const bin = r.fam === 6 ? "ip6tables" : "iptables";
    if (r.filterRules === null) {
      out.push(warn(
        `host.iptables${sfx}`,
        `cannot read ${bin}: ${r.iptablesError}`,
        `install ${bin}, run as root`,
      ));
      continue;
    }
    if (f.config) out.push(...forwardCheck(f, r.filterRules, r.fam));
    if (!f.opts.ipMasq) continue;
    const nft = s.nft?.[r.fam === 6 ? "ip6" : "ip"];
    if (s.nft) {
      const table = `${r.fam === 6 ? "ip6" : "ip"} ${NFT_TABLE[r.fam === 6 ? "ip6" : "ip"]}`;
      out.push(
        nft?.includes("masquerade")
          ? ok(`host.masquerade${sfx}`, `nft table ${table} masquerades`)
          : fail(
            `host.masquerade${sfx}`,
            `--ip-masq is on but nft table ${table} ${
              nft ? "has no masquerade rule" : "is missing"
            }: pods cannot reach outside the cluster`,
            "restart the agent with --ip-masq (it re-adds the rules every --iptables-resync)",
          ),
      );
      continue;
    }
    const jump = r.natRules?.some((l) =>
      l.startsWith("-A POSTROUTING") && l.includes(`-j ${MASQ_CHAIN}`)
    );
    const masq = r.natRules?.some((l) =>
      l.startsWith(`-A ${MASQ_CHAIN}`) && l.includes("MASQUERADE")
    );
    out.push(
      jump && masq
        ? ok(
          `host.masquerade${sfx}`,
          `${bin} nat POSTROUTING jumps to ${MASQ_CHAIN}, which masquerades`,
        )
        : fail(
          `host.masquerade${sfx}`,
          `--ip-masq is on but the ${bin} nat table lacks ${
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

function forwardCheck(f: Facts, rules: string[], family: 4 | 6 = 4): CheckResult[] {
  const net = family === 6 ? formatCidr6(f.config!.ipv6!.network) : formatCidr(f.config!.network);
  const check = family === 6 ? "host.forward6" : "host.forward";
  const bin = family === 6 ? "ip6tables" : "iptables";
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
      check,
      `${
        family === 6 ? "ip6tables " : ""
      }FORWARD policy is ${policy} and no rule accepts the cluster network ${net}: pod traffic between hosts is dropped`,
      `run the agent with --iptables-forward-rules (the default), or: ${bin} -A FORWARD -s ${net} -j ACCEPT; ${bin} -A FORWARD -d ${net} -j ACCEPT`,
    )];
  }
  // With EnableNFTables the forward rules live in the nft tables, not in a FLANNEL-FWD chain.
  if (f.opts.forwardRules && !jump && !f.config!.enableNFTables) {
    return [warn(
      check,
      `--iptables-forward-rules is on but FORWARD does not jump to ${FWD_CHAIN} (policy ${policy} ` +
        "lets traffic through today; a policy DROP, e.g. from docker, would cut pods off)",
      "restart the agent with these flags (it adds the rules and re-checks them every --iptables-resync)",
    )];
  }
  return [ok(check, `${bin} FORWARD policy ${policy}${both ? `, ${net} accepted` : ""}`)];
}
