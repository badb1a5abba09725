/**
 * What flannel's spec wants in iptables, as data: the masquerade chain FLANNEL-POSTRTG in nat
 * (`--ip-masq`) and the forward chain FLANNEL-FWD in filter (`--iptables-forward-rules`), each
 * with the jump from its built-in chain. Pure functions; nothing here runs a command.
 *
 * @example
 * ```ts
 * const specs = chainSpecs({ network, podSubnet, ipMasq: true, forward: true, randomFully: true });
 * // [{ table: "nat", chain: "FLANNEL-POSTRTG", rules: [jump, ...] }, { table: "filter", ... }]
 * ```
 */
import { formatCidr, type Ipv4Net, networkOf } from "../base/ipv4.ts";
import { formatCidr6, type Ipv6Net, networkOf6 } from "../base/ipv6.ts";

export const MASQ_CHAIN = "FLANNEL-POSTRTG";
export const FWD_CHAIN = "FLANNEL-FWD";
export const MASQ_COMMENT = "flanneld masq";
export const FWD_COMMENT = "flanneld forward";
/** kube-proxy marks packets it will masquerade itself; flannel skips them to avoid double NAT. */
export const KUBE_PROXY_MARK = "0x4000/0x4000";

export type Table = "nat" | "filter";

/** The chains weft owns, per table: what `weft cleanup` removes with their jumps. */
export const OWNED_CHAINS: { table: Table; chain: string }[] = [
  { table: "nat", chain: MASQ_CHAIN },
  { table: "filter", chain: FWD_CHAIN },
];

/** One rule: `-A <chain> <args...>` in `table`. */
export interface Rule {
  table: Table;
  chain: string;
  args: string[];
}

/** An IPv4 or IPv6 network: the same chains serve ip6tables with the IPv6 halves. */
export type IpNet = Ipv4Net | Ipv6Net;

export interface RuleParams {
  /** The cluster network (FLANNEL_NETWORK; FLANNEL_IPV6_NETWORK for ip6tables). */
  network: IpNet;
  /** This node's leased subnet (its IPv6 half for ip6tables). */
  podSubnet: IpNet;
  /** Add `--random-fully` to MASQUERADE (only when the iptables binary supports it). */
  randomFully: boolean;
}

const isV6 = (n: IpNet): n is Ipv6Net => typeof n.ip === "bigint";
const cidr = (n: IpNet) => isV6(n) ? formatCidr6(networkOf6(n)) : formatCidr(networkOf(n));

/** flannel's masquerade rules: the POSTROUTING jump first, then the FLANNEL-POSTRTG chain. */
export function masqRules(p: RuleParams): Rule[] {
  const net = cidr(p.network);
  const pod = cidr(p.podSubnet);
  const c = ["-m", "comment", "--comment", MASQ_COMMENT];
  const masq = p.randomFully ? ["-j", "MASQUERADE", "--random-fully"] : ["-j", "MASQUERADE"];
  const r = (args: string[]): Rule => ({ table: "nat", chain: MASQ_CHAIN, args });
  return [
    { table: "nat", chain: "POSTROUTING", args: [...c, "-j", MASQ_CHAIN] },
    r(["-m", "mark", "--mark", KUBE_PROXY_MARK, ...c, "-j", "RETURN"]),
    // Pod-to-pod traffic inside the overlay keeps its source address.
    r(["-s", pod, "-d", net, ...c, "-j", "RETURN"]),
    r(["-s", net, "-d", pod, ...c, "-j", "RETURN"]),
    // External traffic arriving for a local pod (e.g. via a NodePort) is not masqueraded.
    r(["!", "-s", net, "-d", pod, ...c, "-j", "RETURN"]),
    // Pods talking to the outside world, except multicast.
    r(["-s", net, "!", "-d", isV6(p.network) ? "ff00::/8" : "224.0.0.0/4", ...c, ...masq]),
    // The host talking to pods on other nodes.
    r(["!", "-s", net, "-d", net, ...c, ...masq]),
  ];
}

/** flannel's forward rules: the FORWARD jump first, then the FLANNEL-FWD chain. */
export function forwardRules(network: IpNet): Rule[] {
  const net = cidr(network);
  const c = ["-m", "comment", "--comment", FWD_COMMENT];
  return [
    { table: "filter", chain: "FORWARD", args: [...c, "-j", FWD_CHAIN] },
    { table: "filter", chain: FWD_CHAIN, args: ["-s", net, ...c, "-j", "ACCEPT"] },
    { table: "filter", chain: FWD_CHAIN, args: ["-d", net, ...c, "-j", "ACCEPT"] },
  ];
}

/** Our part of one table: the chain we own, its rules, and the built-in chain that jumps to it. */
export interface ChainSpec {
  table: Table;
  chain: string;
  /** `-A` lines, the jump rule first. Empty: the chain must not exist (feature turned off). */
  rules: Rule[];
}

/** Both chains as the switches want them; a switched-off chain is specified empty (removed). */
export function chainSpecs(
  p: RuleParams & { ipMasq: boolean; forward: boolean },
): ChainSpec[] {
  return [
    { table: "nat", chain: MASQ_CHAIN, rules: p.ipMasq ? masqRules(p) : [] },
    { table: "filter", chain: FWD_CHAIN, rules: p.forward ? forwardRules(p.network) : [] },
  ];
}
