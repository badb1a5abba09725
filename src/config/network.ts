/**
 * The cluster network config (flannel's `<prefix>/config` JSON): parsing with Go's
 * case-insensitive field matching, flannel's defaults and validation with operator-readable errors.
 *
 * @example
 * ```ts
 * const cfg = parseNetworkConfig('{"Network":"198.19.0.0/16","Backend":{"Type":"vxlan"}}');
 * cfg.subnetLen; // 24
 * ```
 */
import { formatCidr, type Ipv4Net, maskOf, parseCidr, sizeOf } from "../base/ipv4.ts";
import {
  contains6,
  formatCidr6,
  formatIp6,
  type Ipv6Net,
  parseCidr6,
  parseIp6,
  sizeOf6,
} from "../base/ipv6.ts";
import { ConfigError } from "../base/errors.ts";
import { backendTypeOf, checkBackendOptions, field } from "./backend_options.ts";
import { nonUnicastOverlap, nonUnicastOverlap6 } from "./unicast.ts";

export { field };

/**
 * The largest config the registries store: Deno KV's 64 KiB value limit (the smaller of the two;
 * etcd takes 1.5 MiB requests), less 16 bytes for the value's encoding header.
 */
export const MAX_CONFIG_BYTES = 65_520;

/**
 * A config's size as stored: its UTF-8 bytes (etcd), or Deno KV's string encoding (one byte per
 * character for Latin-1 text, two otherwise), whichever is larger.
 */
export function storedSize(text: string): number {
  const utf8 = new TextEncoder().encode(text).length;
  // deno-lint-ignore no-control-regex
  const latin1 = /^[\u0000-\u00ff]*$/.test(text);
  return Math.max(utf8, latin1 ? text.length : 2 * text.length);
}

/** The IPv6 half of a config (EnableIPv6): IPv6Network, IPv6SubnetLen, IPv6SubnetMin/Max. */
export interface Ipv6Config {
  network: Ipv6Net;
  subnetLen: number;
  /** First and last subnet network addresses that may be leased. */
  subnetMin: bigint;
  subnetMax: bigint;
}

/**
 * A parsed config. With EnableIPv4 false (IPv6-only) the IPv4 fields hold the empty network
 * `0.0.0.0/0` with subnetLen 0, as flanneld's IPv6-only lease keys do (`0.0.0.0-0&…`): read
 * them only when `enableIPv4` is true.
 */
export interface NetworkConfig {
  network: Ipv4Net;
  subnetLen: number;
  /** First and last subnet network addresses that may be leased. */
  subnetMin: number;
  subnetMax: number;
  enableIPv4: boolean;
  enableIPv6: boolean;
  /** Masquerade/forward rules through nftables instead of iptables (flannel ≥ 0.26). */
  enableNFTables: boolean;
  /** The IPv6 half, present exactly when `enableIPv6` is true. */
  ipv6?: Ipv6Config;
  /** Lower-cased backend type. */
  backendType: string;
  /** The Backend object as written, with its original field names. */
  backend: Record<string, unknown>;
  /** The config text as read, for comparisons and `config get`. */
  raw: string;
}

function str(obj: Record<string, unknown>, name: string): string | undefined {
  const v = field(obj, name);
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string") {
    throw new ConfigError(`${name} must be a string, got ${JSON.stringify(v)}`);
  }
  return v;
}

function num(obj: Record<string, unknown>, name: string): number | undefined {
  const v = field(obj, name);
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0) {
    throw new ConfigError(
      `${name} must be a non-negative integer, got ${JSON.stringify(v)}`,
    );
  }
  return v;
}

function bool(obj: Record<string, unknown>, name: string, dflt: boolean): boolean {
  const v = field(obj, name);
  if (v === undefined || v === null) return dflt;
  if (typeof v !== "boolean") {
    throw new ConfigError(
      `${name} ${JSON.stringify(v)} is not a boolean: expected true or false (JSON, unquoted)`,
    );
  }
  return v;
}

/**
 * Reads a boolean option of the Backend object (e.g. `DirectRouting`). The config was checked
 * by {@link parseNetworkConfig} against the backend's rules (backend_options.ts): no re-check.
 */
export function backendBool(cfg: NetworkConfig, name: string, dflt = false): boolean {
  const v = field(cfg.backend, name);
  return typeof v === "boolean" ? v : dflt;
}

/** Reads a numeric option of the Backend object (e.g. `VNI`, `Port`), checked like backendBool. */
export function backendNumber(cfg: NetworkConfig, name: string, dflt: number): number {
  const v = field(cfg.backend, name);
  return typeof v === "number" ? v : dflt;
}

/**
 * Parses and validates a network config, applying flannel's defaults: the one validator, run
 * before a config is written (`config set`, seeding from --net-config-path) and when the agent
 * loads it. It checks the whole config, the backend's options included (backend_options.ts), and
 * its size against what the registry can store.
 */
export function parseNetworkConfig(text: string): NetworkConfig {
  const size = storedSize(text);
  if (size > MAX_CONFIG_BYTES) {
    throw new ConfigError(`config too large (${size} bytes; at most ${MAX_CONFIG_BYTES})`);
  }
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch (e) {
    throw new ConfigError(`network config is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof obj !== "object" || obj === null || Array.isArray(obj)) {
    throw new ConfigError(`network config must be a JSON object like {"Network":"198.19.0.0/16"}`);
  }
  const o = obj as Record<string, unknown>;
  const enableIPv4 = bool(o, "EnableIPv4", true);
  const enableIPv6 = bool(o, "EnableIPv6", false);
  const enableNFTables = bool(o, "EnableNFTables", false);
  if (!enableIPv4 && !enableIPv6) {
    throw new ConfigError(
      "EnableIPv4 and EnableIPv6 are both false: there is no network to serve; set EnableIPv4 " +
        'to true (the default) with Network, or EnableIPv6 to true with IPv6Network ("2001:db8:1::/56")',
    );
  }
  const v4 = enableIPv4 ? parseIpv4Half(o) : NO_IPV4;
  const backendRaw = field(o, "Backend");
  let backend: Record<string, unknown> = {};
  if (backendRaw !== undefined && backendRaw !== null) {
    if (typeof backendRaw !== "object" || Array.isArray(backendRaw)) {
      throw new ConfigError(`Backend must be an object like {"Type":"vxlan"}`);
    }
    backend = backendRaw as Record<string, unknown>;
  }
  const backendType = backendTypeOf(backend);
  checkBackendOptions(backendType, backend);
  const ipv6 = enableIPv6 ? parseIpv6Half(o) : undefined;
  if (ipv6 && backendType === "udp") {
    // flanneld accepts this and serves no IPv6 at all; weft says so instead.
    throw new ConfigError(
      'EnableIPv6 is true with the udp backend, which carries IPv4 only: use Backend "vxlan" or ' +
        '"host-gw" for IPv6, or set EnableIPv6 to false',
    );
  }
  return {
    ...v4,
    enableIPv4,
    enableIPv6,
    enableNFTables,
    ...(ipv6 ? { ipv6 } : {}),
    backendType,
    backend,
    raw: text,
  };
}

/** The IPv4 fields of an IPv6-only config: the empty network, as in its lease keys. */
const NO_IPV4 = { network: { ip: 0, prefix: 0 }, subnetLen: 0, subnetMin: 0, subnetMax: 0 };

/** Network, SubnetLen, SubnetMin/Max with flannel's defaults (EnableIPv4). */
function parseIpv4Half(o: Record<string, unknown>) {
  const netText = str(o, "Network");
  if (!netText) throw new ConfigError(`Network is required (an IPv4 CIDR such as "198.19.0.0/16")`);
  let network: Ipv4Net;
  try {
    network = parseCidr(netText);
  } catch (e) {
    throw new ConfigError(`Network: ${(e as Error).message}`);
  }
  const special = nonUnicastOverlap(network);
  if (special) {
    // Every subnet becomes a route (and addresses) on every host: routes over this-network,
    // loopback or multicast space shadow the hosts' own, 0.0.0.0/0 their default route.
    throw new ConfigError(
      `Network ${formatCidr(network)} overlaps ${special}: its subnets would become routes ` +
        `and addresses on every host, shadowing the hosts' own routes; use a unicast range ` +
        `such as 10.244.0.0/16`,
    );
  }
  let subnetLen = num(o, "SubnetLen") ?? 0;
  if (subnetLen === 0) {
    if (network.prefix <= 22) subnetLen = 24;
    else if (network.prefix <= 28) subnetLen = network.prefix + 2;
    else {
      throw new ConfigError(
        `Network ${formatCidr(network)} is too small: use a prefix of /28 or shorter`,
      );
    }
  } else if (subnetLen > 30 || subnetLen < network.prefix + 2) {
    throw new ConfigError(
      `SubnetLen ${subnetLen} does not fit Network ${formatCidr(network)}: it must be between ${
        network.prefix + 2
      } and 30`,
    );
  }
  const step = sizeOf(subnetLen);
  const lastSubnet = network.ip + sizeOf(network.prefix) - step;
  const bound = (name: string, dflt: number): number => {
    const t = str(o, name);
    if (t === undefined) return dflt;
    let ip: number;
    try {
      ip = parseCidr(`${t}/32`).ip;
    } catch {
      throw new ConfigError(`${name} "${t}" is not an IPv4 address`);
    }
    if (((ip & maskOf(network.prefix)) >>> 0) !== network.ip) {
      throw new ConfigError(`${name} ${t} is not inside Network ${formatCidr(network)}`);
    }
    if ((ip - network.ip) % step !== 0) {
      throw new ConfigError(`${name} ${t} is not aligned to SubnetLen /${subnetLen}`);
    }
    return ip;
  };
  const subnetMin = bound("SubnetMin", network.ip + step);
  const subnetMax = bound("SubnetMax", lastSubnet);
  if (subnetMin > subnetMax) {
    throw new ConfigError("SubnetMin is above SubnetMax: no subnet can be leased");
  }
  return { network, subnetLen, subnetMin, subnetMax };
}

/**
 * IPv6Network, IPv6SubnetLen (0: 64 when the prefix is /62 or shorter, else prefix + 2; at most
 * 126), IPv6SubnetMin/Max (default: the second subnet and the last one), as flannel has them.
 */
function parseIpv6Half(o: Record<string, unknown>): Ipv6Config {
  const netText = str(o, "IPv6Network");
  if (!netText) {
    throw new ConfigError(
      `IPv6Network is required when EnableIPv6 is true (an IPv6 CIDR such as "2001:db8:1::/56")`,
    );
  }
  let network: Ipv6Net;
  try {
    network = parseCidr6(netText);
  } catch (e) {
    throw new ConfigError(`IPv6Network: ${(e as Error).message}`);
  }
  const special = nonUnicastOverlap6(network);
  if (special) {
    throw new ConfigError(
      `IPv6Network ${formatCidr6(network)} overlaps ${special}: its subnets would become routes ` +
        `and addresses on every host; use a unicast range such as 2001:db8:1::/56`,
    );
  }
  let subnetLen = num(o, "IPv6SubnetLen") ?? 0;
  if (subnetLen === 0) {
    if (network.prefix <= 62) subnetLen = 64;
    else if (network.prefix <= 124) subnetLen = network.prefix + 2;
    else {
      throw new ConfigError(
        `IPv6Network ${formatCidr6(network)} is too small: use a prefix of /124 or shorter`,
      );
    }
  } else if (subnetLen > 126 || subnetLen < network.prefix + 2) {
    throw new ConfigError(
      `IPv6SubnetLen ${subnetLen} does not fit IPv6Network ${formatCidr6(network)}: it must be ` +
        `between ${network.prefix + 2} and 126`,
    );
  }
  const step = sizeOf6(subnetLen);
  const lastSubnet = network.ip + sizeOf6(network.prefix) - step;
  const bound = (name: string, dflt: bigint): bigint => {
    const t = str(o, name);
    if (t === undefined) return dflt;
    let ip: bigint;
    try {
      ip = parseIp6(t);
    } catch {
      throw new ConfigError(`${name} "${t}" is not an IPv6 address (e.g. 2001:db8:1:5::)`);
    }
    if (!contains6(network, ip)) {
      throw new ConfigError(`${name} ${t} is not inside IPv6Network ${formatCidr6(network)}`);
    }
    if ((ip - network.ip) % step !== 0n) {
      throw new ConfigError(
        `${name} ${t} is not aligned to IPv6SubnetLen /${subnetLen} (e.g. ${
          formatIp6(ip - (ip - network.ip) % step)
        })`,
      );
    }
    return ip;
  };
  const subnetMin = bound("IPv6SubnetMin", network.ip + step);
  const subnetMax = bound("IPv6SubnetMax", lastSubnet);
  if (subnetMin > subnetMax) {
    throw new ConfigError("IPv6SubnetMin is above IPv6SubnetMax: no IPv6 subnet can be leased");
  }
  return { network, subnetLen, subnetMin, subnetMax };
}

/** Compares two configs by meaning (parsed values), not by whitespace or key order. */
export function sameConfig(a: string, b: string): boolean {
  try {
    return JSON.stringify(canon(JSON.parse(a))) === JSON.stringify(canon(JSON.parse(b)));
  } catch {
    return a.trim() === b.trim();
  }
}

function canon(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(canon);
  if (v && typeof v === "object") {
    const o = v as Record<string, unknown>;
    return Object.fromEntries(
      Object.keys(o).sort((x, y) => x.toLowerCase().localeCompare(y.toLowerCase())).map((
        k,
      ) => [k.toLowerCase(), canon(o[k])]),
    );
  }
  return v;
}
