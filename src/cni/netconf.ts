/**
 * The plugin's own config (flannel's CNI plugin keys) and the delegate config built from it and
 * subnet.env, with flannel's semantics: keys in `delegate` win, `name`/`ipam` in it are refused,
 * the top-level `ipam` is the base of the delegate's IPAM, whose ranges and network route are
 * always set from subnet.env.
 *
 * @example
 * ```ts
 * const conf = parseNetConf('{"cniVersion":"1.0.0","name":"cbr0","type":"weft"}');
 * const delegate = buildDelegate(conf, await readSubnetEnv(conf.subnetFile));
 * delegate.type; // "bridge"
 * ```
 */
import { formatCidr } from "../base/ipv4.ts";
import { CniCode, CniError } from "./errors.ts";
import { hasIpv4, type SubnetEnv } from "../config/subnet_env.ts";
import { formatCidr6 } from "../base/ipv6.ts";

export const DEFAULT_SUBNET_FILE = "/run/flannel/subnet.env";
export const DEFAULT_DATA_DIR = "/var/lib/cni/flannel";

type Obj = Record<string, unknown>;

export interface NetConf {
  name: string;
  cniVersion: string;
  type: string;
  subnetFile: string;
  dataDir: string;
  delegate?: Obj;
  ipam?: Obj;
  runtimeConfig?: Obj;
  prevResult?: unknown;
  /** The whole parsed object. */
  raw: Obj;
}

const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);

function optObj(raw: Obj, key: string): Obj | undefined {
  const v = raw[key];
  if (v === undefined || v === null) return undefined;
  if (!isObj(v)) {
    throw new CniError(
      CniCode.InvalidConfig,
      `"${key}" must be an object, got ${JSON.stringify(v)}`,
    );
  }
  return v;
}

function optStr(raw: Obj, key: string, dflt: string): string {
  const v = raw[key];
  if (v === undefined || v === null || v === "") return dflt;
  if (typeof v !== "string") {
    throw new CniError(
      CniCode.InvalidConfig,
      `"${key}" must be a string, got ${JSON.stringify(v)}`,
    );
  }
  return v;
}

/** Parses stdin; bad JSON is a decoding failure, bad field types an invalid config. */
export function parseNetConf(stdin: string): NetConf {
  let raw: unknown;
  try {
    raw = JSON.parse(stdin);
  } catch (e) {
    throw new CniError(
      CniCode.DecodingFailure,
      "cannot parse the network config on stdin as JSON",
      (e as Error).message,
    );
  }
  if (!isObj(raw)) {
    throw new CniError(CniCode.DecodingFailure, "the network config must be an object");
  }
  return {
    name: optStr(raw, "name", ""),
    cniVersion: optStr(raw, "cniVersion", ""),
    type: optStr(raw, "type", "weft"),
    subnetFile: optStr(raw, "subnetFile", DEFAULT_SUBNET_FILE),
    dataDir: optStr(raw, "dataDir", DEFAULT_DATA_DIR),
    delegate: optObj(raw, "delegate"),
    ipam: optObj(raw, "ipam"),
    runtimeConfig: optObj(raw, "runtimeConfig"),
    prevResult: raw.prevResult,
    raw,
  };
}

/** The delegate plugin's config for ADD (saved and reused for DEL/CHECK). */
export function buildDelegate(conf: NetConf, env: SubnetEnv): Obj {
  const d: Obj = structuredClone(conf.delegate ?? {});
  if ("type" in d && typeof d.type !== "string") {
    throw new CniError(CniCode.InvalidConfig, `"delegate.type" must be a string plugin name`);
  }
  for (const k of ["name", "ipam"]) {
    if (k in d) {
      throw new CniError(
        CniCode.InvalidConfig,
        `"delegate" must not have a "${k}" field: weft sets it (use the top-level "${k}")`,
      );
    }
  }
  if (!conf.name) throw new CniError(CniCode.InvalidConfig, `the network config has no "name"`);
  d.name = conf.name;
  d.type ??= "bridge";
  // When weft does not masquerade (no --ip-masq), the bridge plugin should.
  d.ipMasq ??= !env.ipMasq;
  d.mtu ??= env.mtu;
  if (d.type === "bridge") {
    d.isGateway ??= true;
    d.isDefaultGateway ??= true;
    d.hairpinMode ??= true;
  }
  if (conf.cniVersion) d.cniVersion = conf.cniVersion;
  if (conf.runtimeConfig) d.runtimeConfig = conf.runtimeConfig;

  const ipam: Obj = structuredClone(conf.ipam ?? {});
  ipam.type ??= "host-local";
  // One range per family, so host-local gives a dual-stack pod one address of each.
  const v4 = hasIpv4(env);
  ipam.ranges = [
    ...(v4 ? [[{ subnet: formatCidr(env.subnet) }]] : []),
    ...(env.ipv6 ? [[{ subnet: formatCidr6(env.ipv6.subnet) }]] : []),
  ];
  const routes = ipam.routes ?? [];
  if (!Array.isArray(routes)) {
    throw new CniError(CniCode.InvalidConfig, `"ipam.routes" must be a list of {"dst": ...}`);
  }
  ipam.routes = [
    ...routes,
    ...(v4 ? [{ dst: formatCidr(env.network) }] : []),
    ...(env.ipv6 ? [{ dst: formatCidr6(env.ipv6.network) }] : []),
  ];
  d.ipam = ipam;
  return d;
}
