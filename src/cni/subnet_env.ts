/**
 * Reads weft's (flannel's) subnet.env for the CNI plugin, with flannel's parsing: KEY=VALUE lines,
 * FLANNEL_SUBNET given as first address/len (the plugin uses its network), FLANNEL_IPMASQ "true".
 * IPv6 keys are ignored: weft does not serve IPv6 yet.
 *
 * @example
 * ```ts
 * const env = await readSubnetEnv("/run/flannel/subnet.env");
 * env.mtu; // 1450
 * ```
 */
import { type Ipv4Net, networkOf, parseCidr } from "../base/ipv4.ts";
import { CniCode, CniError } from "./errors.ts";

export interface SubnetEnv {
  network: Ipv4Net;
  /** The node's subnet as a network (host bits of FLANNEL_SUBNET cleared). */
  subnet: Ipv4Net;
  mtu: number;
  ipMasq: boolean;
}

/** Parses the file's text; `path` is only used in error messages. */
export function parseSubnetEnv(text: string, path: string): SubnetEnv {
  const kv = new Map<string, string>();
  for (const line of text.split("\n")) {
    const i = line.indexOf("=");
    if (i > 0) kv.set(line.slice(0, i).trim(), line.slice(i + 1).trim());
  }
  const missing = ["FLANNEL_NETWORK", "FLANNEL_SUBNET", "FLANNEL_MTU", "FLANNEL_IPMASQ"]
    .filter((k) => !kv.has(k));
  if (missing.length) {
    throw new CniError(
      CniCode.InvalidConfig,
      `${path} is missing ${missing.join(", ")}`,
      "the file is written by weft; restart weft on this node to rewrite it",
    );
  }
  const bad = (k: string, why: string) =>
    new CniError(CniCode.InvalidConfig, `${path}: ${k}=${kv.get(k)} is invalid (${why})`);
  let network: Ipv4Net, subnet: Ipv4Net;
  try {
    network = parseCidr(kv.get("FLANNEL_NETWORK")!);
  } catch (e) {
    throw bad("FLANNEL_NETWORK", (e as Error).message);
  }
  try {
    subnet = networkOf(parseCidr(kv.get("FLANNEL_SUBNET")!, true));
  } catch (e) {
    throw bad("FLANNEL_SUBNET", (e as Error).message);
  }
  const mtu = Number(kv.get("FLANNEL_MTU"));
  if (!Number.isInteger(mtu) || mtu < 68 || mtu > 65535) throw bad("FLANNEL_MTU", "68..65535");
  return {
    network,
    subnet,
    mtu,
    ipMasq: kv.get("FLANNEL_IPMASQ") === "true",
  };
}

/** Reads and parses the file; a missing file means weft is not (yet) running here. */
export async function readSubnetEnv(path: string): Promise<SubnetEnv> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new CniError(
        CniCode.TryAgainLater,
        `weft is not running or not ready on this node (no ${path})`,
        "start weft on this node or check its logs; the file appears once weft holds a subnet lease",
      );
    }
    throw new CniError(CniCode.IoFailure, `cannot read ${path}: ${(e as Error).message}`);
  }
  return parseSubnetEnv(text, path);
}
