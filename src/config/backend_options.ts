/**
 * The backends weft serves and the options each reads from the config's Backend object, with
 * their rules: the one home for them. `parseNetworkConfig` checks a config against these before
 * anything is written or used, so the backends read their options without checking again.
 * Options a backend does not know are ignored, as flanneld's Go JSON decoding ignores them.
 *
 * @example
 * ```ts
 * checkBackendOptions("vxlan", { Type: "vxlan", VNI: 1 }); // ok
 * checkBackendOptions("vxlan", { VNI: 1 << 24 }); // ConfigError: Backend.VNI 16777216 …
 * ```
 */
import { ConfigError } from "../base/errors.ts";

/** Every Backend.Type weft serves (lower case), the one list of them. */
export const BACKEND_TYPES = ["vxlan", "host-gw", "udp", "alloc"] as const;
export type BackendType = typeof BACKEND_TYPES[number];

type OptionRule =
  | { kind: "bool" }
  | { kind: "int"; min: number; max: number; zero?: string; why?: string };

const bool: OptionRule = { kind: "bool" };
const port = (dflt: number): OptionRule => ({
  kind: "int",
  min: 1,
  max: 65535,
  zero: `the default ${dflt}`,
});

/**
 * Backend.MTU as flanneld reads it (pkg/backend/vxlan): the MTU of the underlay the VTEP is
 * derived from (default: the external interface's MTU); the VTEP gets MTU − 50. These bounds
 * hold under that meaning and under a device-MTU reading alike: the VTEP stays within the
 * kernel's 68..65485 for vxlan over IPv4.
 */
const VXLAN_MTU: OptionRule = {
  kind: "int",
  min: 118,
  max: 65485,
  zero: "derived from the external interface",
  why: "the VXLAN device MTU must stay within 68..65485 with 50 bytes of encapsulation",
};

/** The options each backend reads, by their flannel names. */
export const BACKEND_OPTIONS: Record<BackendType, Record<string, OptionRule>> = {
  vxlan: {
    VNI: { kind: "int", min: 0, max: 16777215, why: "a VXLAN network identifier has 24 bits" },
    Port: port(8472),
    MTU: VXLAN_MTU,
    GBP: bool,
    Learning: bool,
    DirectRouting: bool,
    TxChecksumOffload: bool,
  },
  "host-gw": {},
  udp: { Port: port(8285), TunOffload: bool },
  alloc: {},
};

/** Reads a field the way Go's encoding/json does: exact name first, then case-insensitively. */
export function field(obj: Record<string, unknown>, name: string): unknown {
  if (name in obj) return obj[name];
  const lower = name.toLowerCase();
  for (const k of Object.keys(obj)) if (k.toLowerCase() === lower) return obj[k];
  return undefined;
}

/** The backend type named by `Backend.Type` (case-insensitive, default udp), checked. */
export function backendTypeOf(backend: Record<string, unknown>): BackendType {
  const t = field(backend, "Type");
  if (t === undefined || t === null) return "udp";
  const known = (BACKEND_TYPES as readonly string[]).includes(String(t).toLowerCase());
  if (typeof t !== "string" || !known) {
    throw new ConfigError(
      `Backend.Type ${JSON.stringify(t)} is not a backend weft serves: expected one of ` +
        BACKEND_TYPES.join(", "),
    );
  }
  return t.toLowerCase() as BackendType;
}

/** Checks the options `type` reads from `backend`; throws a ConfigError naming the first bad one. */
export function checkBackendOptions(type: BackendType, backend: Record<string, unknown>): void {
  for (const [name, rule] of Object.entries(BACKEND_OPTIONS[type])) {
    const v = field(backend, name);
    if (v === undefined || v === null) continue;
    const got = `Backend.${name} ${JSON.stringify(v)}`;
    if (rule.kind === "bool") {
      if (typeof v !== "boolean") {
        throw new ConfigError(`${got} is not a boolean: expected true or false (JSON, unquoted)`);
      }
      continue;
    }
    if (typeof v === "number" && v === 0 && rule.zero) continue;
    if (typeof v !== "number" || !Number.isInteger(v) || v < rule.min || v > rule.max) {
      const zero = rule.zero ? ` (0 or absent: ${rule.zero})` : "";
      const why = rule.why ? `; ${rule.why}` : "";
      throw new ConfigError(
        `${got} is out of range: expected an integer ${rule.min}..${rule.max}${zero}${why}`,
      );
    }
  }
}
