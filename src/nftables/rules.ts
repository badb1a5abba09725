/**
 * What flannel's spec wants in nftables, as `nft -f -` input: table `ip flannel-ipv4` (and
 * `ip6 flannel-ipv6`) with chain `forward` (`--iptables-forward-rules`) and chain `postrtg`
 * (`--ip-masq`), each declared, flushed and refilled in the one script, so the kernel swaps the
 * whole rule set in one transaction (the old subnet's rules go with the flush). A switched-off
 * chain is declared and deleted in the same script: removed if present, no error if absent.
 * Table and chain comments are flanneld's, so either agent recognises the other's tables.
 * Pure functions; nothing here runs a command.
 *
 * @example
 * ```ts
 * const script = tableScript({
 *   family: "ip", network: "198.19.0.0/16", podSubnet: "198.19.7.0/24",
 *   ipMasq: true, forward: true, fullyRandom: true,
 * });
 * // feed to `nft -f -`
 * ```
 */

/** `ip` (IPv4) or `ip6` (IPv6): both the nftables family and the address match keyword. */
export type NftFamily = "ip" | "ip6";

/** flannel's table per family. */
export const NFT_TABLE: Record<NftFamily, string> = { ip: "flannel-ipv4", ip6: "flannel-ipv6" };
export const FORWARD_CHAIN = "forward";
export const POSTRTG_CHAIN = "postrtg";
/** kube-proxy marks packets it will masquerade itself; flannel skips them (equality, no mask). */
export const KUBE_PROXY_MARK = "0x4000";

const MULTICAST: Record<NftFamily, string> = { ip: "224.0.0.0/4", ip6: "ff00::/8" };

export interface NftTableParams {
  family: NftFamily;
  /** The cluster network, as CIDR text (an IPv6 one for `ip6`). */
  network: string;
  /** This node's subnet, as CIDR text. */
  podSubnet: string;
  /** Fill chain `postrtg` (flannel's `--ip-masq`); off, the chain is removed. */
  ipMasq: boolean;
  /** Fill chain `forward` (`--iptables-forward-rules`); off, the chain is removed. */
  forward: boolean;
  /** `masquerade fully-random`, else plain `masquerade`. */
  fullyRandom: boolean;
}

/** The `forward` chain's rules (without `add rule <table> <chain>`). */
export function forwardRules(p: Pick<NftTableParams, "family" | "network">): string[] {
  const f = p.family;
  return [`${f} saddr ${p.network} accept`, `${f} daddr ${p.network} accept`];
}

/** The `postrtg` chain's rules, in order (RETURNs before the masquerades). */
export function masqRules(p: Omit<NftTableParams, "ipMasq" | "forward">): string[] {
  const { family: f, network: net, podSubnet: pod } = p;
  const masq = p.fullyRandom ? "masquerade fully-random" : "masquerade";
  return [
    `meta mark ${KUBE_PROXY_MARK} return`,
    // Pod-to-pod traffic inside the overlay keeps its source address.
    `${f} saddr ${pod} ${f} daddr ${net} return`,
    `${f} saddr ${net} ${f} daddr ${pod} return`,
    // External traffic arriving for a local pod's address is not masqueraded.
    `${f} saddr != ${pod} ${f} daddr ${net} return`,
    // Pods talking to the outside world, except multicast.
    `${f} saddr ${net} ${f} daddr != ${MULTICAST[f]} ${masq}`,
    // The host talking to pods on other nodes.
    `${f} saddr != ${net} ${f} daddr ${net} ${masq}`,
  ];
}

interface ChainDecl {
  name: string;
  header: string;
  comment: string;
  rules: string[] | null;
}

/** The whole table as one `nft -f -` script (one transaction). */
export function tableScript(p: NftTableParams): string {
  const t = `${p.family} ${NFT_TABLE[p.family]}`;
  const chains: ChainDecl[] = [
    {
      name: FORWARD_CHAIN,
      header: "type filter hook forward priority filter;",
      comment: "chain to accept flannel traffic",
      rules: p.forward ? forwardRules(p) : null,
    },
    {
      name: POSTRTG_CHAIN,
      header: "type nat hook postrouting priority srcnat;",
      comment: "chain to manage traffic masquerading by flannel",
      rules: p.ipMasq ? masqRules(p) : null,
    },
  ];
  const out = [`add table ${t} { comment "rules for ${NFT_TABLE[p.family]}"; }`];
  for (const c of chains) {
    out.push(`add chain ${t} ${c.name} { ${c.header} comment "${c.comment}"; }`);
    if (c.rules === null) {
      out.push(`delete chain ${t} ${c.name}`);
      continue;
    }
    out.push(`flush chain ${t} ${c.name}`);
    for (const r of c.rules) out.push(`add rule ${t} ${c.name} ${r}`);
  }
  return out.join("\n") + "\n";
}

/**
 * The script that deletes the tables of `families` named in `present` (lines of `nft list
 * tables`, e.g. "table ip flannel-ipv4"); empty when none of them is there. Never another table.
 */
export function removalScript(present: string, families: NftFamily[] = ["ip", "ip6"]): string {
  const have = new Set(present.split("\n").map((l) => l.trim()));
  return families
    .filter((f) => have.has(`table ${f} ${NFT_TABLE[f]}`))
    .map((f) => `delete table ${f} ${NFT_TABLE[f]}\n`)
    .join("");
}
