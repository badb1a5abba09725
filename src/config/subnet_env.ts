/**
 * subnet.env, the file CNI reads (flannel's exact format): the one home for rendering, writing,
 * parsing and reading it, used by the agent (writes it, reads its subnet back as a hint), the CNI
 * plugin, `weft cleanup` and the test kit. Written atomically: a temp file in the same directory,
 * then rename, mode 0644, so readers never see a half-written file. Parsed as flannel's CNI plugin
 * does: KEY=VALUE lines, FLANNEL_SUBNET given as first address/len (readers use its network),
 * FLANNEL_IPMASQ "true". A dual-stack node adds FLANNEL_IPV6_NETWORK and FLANNEL_IPV6_SUBNET (first
 * address/len); an IPv6-only node writes those instead of the two IPv4 lines, and its IPv4
 * fields read back as the empty network `0.0.0.0/0` (as in its lease key, `0.0.0.0-0&…`).
 *
 * @example
 * ```ts
 * await writeSubnetEnv("/run/flannel/subnet.env", {
 *   network: parseCidr("198.19.0.0/16"), subnet: parseCidr("198.19.5.0/24"), mtu: 1450, ipMasq: true,
 * });
 * const env = await readSubnetEnv("/run/flannel/subnet.env"); // throws SubnetEnvError
 * env.mtu; // 1450
 * ```
 */
import { dirname } from "node:path";
import { formatCidr, formatIp, type Ipv4Net, networkOf, parseCidr } from "../base/ipv4.ts";
import { formatCidr6, formatIp6, type Ipv6Net, networkOf6, parseCidr6 } from "../base/ipv6.ts";
import { ConfigError } from "../base/errors.ts";

/** The file's content. */
export interface SubnetEnv {
  /** FLANNEL_NETWORK; the empty network `0.0.0.0/0` on an IPv6-only node (no IPv4 lines). */
  network: Ipv4Net;
  /** The leased subnet (network address form: host bits of FLANNEL_SUBNET cleared). */
  subnet: Ipv4Net;
  /** FLANNEL_IPV6_NETWORK and FLANNEL_IPV6_SUBNET (network address form), when IPv6 is on. */
  ipv6?: { network: Ipv6Net; subnet: Ipv6Net };
  mtu: number;
  ipMasq: boolean;
}

/** The empty network: the IPv4 fields of an IPv6-only node. */
export const NO_IPV4: Ipv4Net = { ip: 0, prefix: 0 };

/** Whether `e` has an IPv4 half: all but an IPv6-only node's (IPv6 lines, empty IPv4 ones). */
export function hasIpv4(e: Pick<SubnetEnv, "network" | "subnet" | "ipv6">): boolean {
  return !e.ipv6 || e.subnet.prefix !== 0 || e.network.prefix !== 0;
}

/**
 * What is wrong with a subnet.env, so each reader can answer in its own terms (the CNI plugin
 * maps it to a CNI error code): "absent" (weft not running or not ready yet), "unreadable",
 * "incomplete" (keys missing), "invalid" (a value does not parse).
 */
export type SubnetEnvProblem = "absent" | "unreadable" | "incomplete" | "invalid";

/** A subnet.env that cannot be used; `summary` says what, `hint` (may be empty) what to do. */
export class SubnetEnvError extends Error {
  override name = "SubnetEnvError";
  constructor(
    readonly problem: SubnetEnvProblem,
    readonly summary: string,
    readonly hint = "",
  ) {
    super(hint ? `${summary}: ${hint}` : summary);
  }
}

const V4_KEYS = ["FLANNEL_NETWORK", "FLANNEL_SUBNET"];
const V6_KEYS = ["FLANNEL_IPV6_NETWORK", "FLANNEL_IPV6_SUBNET"];
const COMMON_KEYS = ["FLANNEL_MTU", "FLANNEL_IPMASQ"];

/** FLANNEL_SUBNET's address: the subnet's first usable address (the pods' gateway). */
export function gatewayOf(subnet: Ipv4Net): string {
  return formatIp(subnet.ip + 1);
}

/** FLANNEL_IPV6_SUBNET's address: the IPv6 subnet's first address after the network's. */
export function gatewayOf6(subnet: Ipv6Net): string {
  return formatIp6(subnet.ip + 1n);
}

/**
 * The file's text, in flanneld's order: the IPv4 lines (FLANNEL_SUBNET the first usable address
 * with the lease's length), the IPv6 lines likewise, then MTU and IPMASQ.
 */
export function renderSubnetEnv(e: SubnetEnv): string {
  let s = "";
  if (hasIpv4(e)) {
    s += `FLANNEL_NETWORK=${formatCidr(e.network)}\n` +
      `FLANNEL_SUBNET=${gatewayOf(e.subnet)}/${e.subnet.prefix}\n`;
  }
  if (e.ipv6) {
    s += `FLANNEL_IPV6_NETWORK=${formatCidr6(e.ipv6.network)}\n` +
      `FLANNEL_IPV6_SUBNET=${gatewayOf6(e.ipv6.subnet)}/${e.ipv6.subnet.prefix}\n`;
  }
  return s + `FLANNEL_MTU=${e.mtu}\n` + `FLANNEL_IPMASQ=${e.ipMasq}\n`;
}

export async function writeSubnetEnv(path: string, e: SubnetEnv): Promise<void> {
  const dir = dirname(path);
  try {
    // 0755 explicitly: under umask 000 the default would leave it world-writable.
    await Deno.mkdir(dir, { recursive: true, mode: 0o755 });
  } catch (err) {
    throw new ConfigError(
      `cannot create the directory ${dir} for the subnet file: ${(err as Error).message}; ` +
        `create it (writable by weft) or point --subnet-file elsewhere`,
    );
  }
  const tmp = `${path}.tmp-${Deno.pid}`;
  try {
    await Deno.writeTextFile(tmp, renderSubnetEnv(e), { mode: 0o644 });
    await Deno.chmod(tmp, 0o644); // the umask may have narrowed the mode
    await Deno.rename(tmp, path);
  } catch (err) {
    await Deno.remove(tmp).catch(() => {});
    throw new ConfigError(
      `cannot write subnet file ${path}: ${(err as Error).message}; check --subnet-file and that ` +
        `its directory is writable`,
    );
  }
}

/** Parses KEY=VALUE lines (keys and values trimmed, `#` comments skipped); unknown keys are kept. */
export function parseSubnetEnvText(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split("\n")) {
    if (line.trimStart().startsWith("#")) continue;
    const i = line.indexOf("=");
    if (i > 0) out[line.slice(0, i).trim()] = line.slice(i + 1).trim();
  }
  return out;
}

/** Parses the file's text; `path` is only used in error messages. Throws SubnetEnvError. */
export function parseSubnetEnv(text: string, path: string): SubnetEnv {
  const kv = parseSubnetEnvText(text);
  // An IPv6-only node's file has no IPv4 lines; any other must have them (and both of a pair).
  const v6only = !("FLANNEL_NETWORK" in kv) && !("FLANNEL_SUBNET" in kv) &&
    V6_KEYS.some((k) => k in kv);
  const anyV6 = V6_KEYS.some((k) => k in kv);
  const keys = [...(v6only ? [] : V4_KEYS), ...(anyV6 ? V6_KEYS : []), ...COMMON_KEYS];
  const missing = keys.filter((k) => !(k in kv));
  if (missing.length) {
    throw new SubnetEnvError(
      "incomplete",
      `${path} is missing ${missing.join(", ")}`,
      "the file is written by weft; restart weft on this node to rewrite it",
    );
  }
  const bad = (k: string, why: string) =>
    new SubnetEnvError("invalid", `${path}: ${k}=${kv[k]} is invalid (${why})`);
  let network = NO_IPV4, subnet = NO_IPV4;
  if (!v6only) {
    try {
      network = parseCidr(kv.FLANNEL_NETWORK);
    } catch (e) {
      throw bad("FLANNEL_NETWORK", (e as Error).message);
    }
    try {
      subnet = networkOf(parseCidr(kv.FLANNEL_SUBNET, true));
    } catch (e) {
      throw bad("FLANNEL_SUBNET", (e as Error).message);
    }
  }
  let ipv6: SubnetEnv["ipv6"];
  if (anyV6) {
    let n6: Ipv6Net, s6: Ipv6Net;
    try {
      n6 = parseCidr6(kv.FLANNEL_IPV6_NETWORK);
    } catch (e) {
      throw bad("FLANNEL_IPV6_NETWORK", (e as Error).message);
    }
    try {
      s6 = networkOf6(parseCidr6(kv.FLANNEL_IPV6_SUBNET, true));
    } catch (e) {
      throw bad("FLANNEL_IPV6_SUBNET", (e as Error).message);
    }
    ipv6 = { network: n6, subnet: s6 };
  }
  // Decimal digits only, as flannel's CNI plugin reads it (strconv.ParseUint): not 1e3 or 0x5dc.
  const mtu = /^\d+$/.test(kv.FLANNEL_MTU) ? Number(kv.FLANNEL_MTU) : NaN;
  if (!(mtu >= 68 && mtu <= 65535)) throw bad("FLANNEL_MTU", "68..65535");
  return { network, subnet, ...(ipv6 ? { ipv6 } : {}), mtu, ipMasq: kv.FLANNEL_IPMASQ === "true" };
}

/** Reads and parses the file; a missing file means weft is not (yet) running here. */
export async function readSubnetEnv(path: string): Promise<SubnetEnv> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new SubnetEnvError(
        "absent",
        `weft is not running or not ready on this node (no ${path})`,
        "start weft on this node or check its logs; the file appears once weft holds a subnet lease",
      );
    }
    throw new SubnetEnvError("unreadable", `cannot read ${path}: ${(e as Error).message}`);
  }
  return parseSubnetEnv(text, path);
}

/** What a possibly damaged subnet.env still tells; a field is null when absent or unparsable. */
export interface SubnetEnvHints {
  exists: boolean;
  network: Ipv4Net | null;
  subnet: Ipv4Net | null;
  /** FLANNEL_IPV6_SUBNET's network and FLANNEL_IPV6_NETWORK, when present and parsable. */
  subnet6?: Ipv6Net | null;
  network6?: Ipv6Net | null;
}

/**
 * Reads subnet.env leniently (cleanup, and the agent's hint for re-using its subnet): never throws,
 * each field stands on its own.
 */
export async function readSubnetEnvHints(path: string): Promise<SubnetEnvHints> {
  let vars: Record<string, string>;
  try {
    vars = parseSubnetEnvText(await Deno.readTextFile(path));
  } catch {
    return { exists: false, network: null, subnet: null };
  }
  const cidr = (s: string | undefined, host: boolean) => {
    try {
      return s ? networkOf(parseCidr(s, host)) : null;
    } catch {
      return null;
    }
  };
  const cidr6 = (s: string | undefined, host: boolean) => {
    try {
      return s ? networkOf6(parseCidr6(s, host)) : null;
    } catch {
      return null;
    }
  };
  const subnet6 = cidr6(vars.FLANNEL_IPV6_SUBNET, true);
  const network6 = cidr6(vars.FLANNEL_IPV6_NETWORK, false);
  return {
    exists: true,
    network: cidr(vars.FLANNEL_NETWORK, false),
    subnet: cidr(vars.FLANNEL_SUBNET, true),
    ...(subnet6 ? { subnet6 } : {}),
    ...(network6 ? { network6 } : {}),
  };
}

/**
 * The subnet named by FLANNEL_SUBNET in an existing file, or null (missing, unreadable, bad).
 * Only that key matters: the agent asks for the same subnet back after a restart.
 */
export async function readSubnetHint(path: string): Promise<Ipv4Net | null> {
  return (await readSubnetEnvHints(path)).subnet;
}

/** The IPv6 subnet named by FLANNEL_IPV6_SUBNET in an existing file, or null. */
export async function readSubnetHint6(path: string): Promise<Ipv6Net | null> {
  return (await readSubnetEnvHints(path)).subnet6 ?? null;
}
