/**
 * Names and addresses of one harness run. Everything a run creates carries its run id, so runs
 * can share a machine and a crashed run's leftovers can be found by prefix.
 *
 * @example
 * ```ts
 * const id = newRunId();               // "w3k9z1"
 * const n = runNames(id);
 * n.hostNs("h1");                      // "wharn-w3k9z1-h1"
 * n.hostIp(1);                         // "198.18.0.11"
 * ```
 */

/** Prefix of every network namespace the harness creates; {@link cleanupStale} keys on it. */
export const HARNESS_PREFIX = "wharn-";

/** Underlay L2 segment (the "switch"). Inside 198.18.0.0/15 (RFC 2544 benchmarking space). */
export const UNDERLAY_PREFIX_LEN = 24;
export const REGISTRY_IP = "198.18.0.2";
/** Default cluster network handed to agents. */
export const CLUSTER_NETWORK = "198.19.0.0/16";
/** The hosts' IPv6 underlay (dual-stack clusters): `2001:db8:ffff::<10+i, hex>/64`. */
export const UNDERLAY6_PREFIX_LEN = 64;
/** IPv6Network of dual-stack clusters. */
export const CLUSTER_NETWORK6 = "2001:db8:1::/56";
/** Highest host count: host i gets 198.18.0.(10+i), and .255 is broadcast. */
export const MAX_HOSTS = 200;

/**
 * Run ids are lower-case alphanumerics, at most 8 chars: interface names that embed them
 * (`<run>v12`, `<run>h3`) must stay within Linux's 15-char limit.
 */
export const RUN_ID_RE = /^[a-z0-9]{1,8}$/;

/** A fresh run id: "w" + 5 random base36 chars (60 million values; collisions are negligible). */
export function newRunId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(5));
  return "w" + Array.from(bytes, (b) => (b % 36).toString(36)).join("");
}

export function checkRunId(id: string): string {
  if (!RUN_ID_RE.test(id)) {
    throw new RangeError(
      `run id "${id}" is not 1-8 lower-case letters/digits; interface names embed it and must stay <= 15 chars`,
    );
  }
  return id;
}

/** Logical host names are "h1".."hN"; pods are named by the caller or "p<N>". */
const NAME_RE = /^[a-z0-9]{1,12}$/;

export function checkName(kind: string, name: string): string {
  if (!NAME_RE.test(name)) {
    throw new RangeError(`${kind} name "${name}" must be 1-12 lower-case letters/digits`);
  }
  return name;
}

export interface RunNames {
  runId: string;
  switchNs: string;
  registryNs: string;
  /** Bridge in the switch netns that joins all underlay ports. */
  switchBridge: string;
  hostNs(host: string): string;
  podNs(host: string, pod: string): string;
  /** Switch-side veth of a host (or "reg"). */
  switchPort(host: string): string;
  /** Host-side veth of the n-th pod of the run. */
  podVeth(n: number): string;
  hostIp(i: number): string;
  /** Host i's IPv6 underlay address (dual-stack clusters). */
  hostIp6(i: number): string;
}

export function runNames(runId: string): RunNames {
  checkRunId(runId);
  const ns = `${HARNESS_PREFIX}${runId}`;
  return {
    runId,
    switchNs: `${ns}-sw`,
    registryNs: `${ns}-reg`,
    switchBridge: `${runId}br`,
    hostNs: (host) => `${ns}-${host}`,
    podNs: (host, pod) => `${ns}-${host}-${pod}`,
    switchPort: (host) => `${runId}${host}`.slice(0, 15),
    podVeth: (n) => `${runId}v${n}`,
    hostIp: (i) => {
      if (!Number.isInteger(i) || i < 1 || i > MAX_HOSTS) {
        throw new RangeError(`host index ${i} is outside 1..${MAX_HOSTS}`);
      }
      return `198.18.0.${10 + i}`;
    },
    hostIp6: (i) => {
      if (!Number.isInteger(i) || i < 1 || i > MAX_HOSTS) {
        throw new RangeError(`host index ${i} is outside 1..${MAX_HOSTS}`);
      }
      return `2001:db8:ffff::${(10 + i).toString(16)}`;
    },
  };
}

/** The run id embedded in a harness namespace name, or null when the name is not the harness's. */
export function runIdOfNs(name: string, prefix = HARNESS_PREFIX): string | null {
  if (!name.startsWith(prefix)) return null;
  const m = /^([a-z0-9]+)-/.exec(name.slice(prefix.length));
  return m ? m[1] : null;
}
