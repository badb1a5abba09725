/**
 * CNI errors as the spec wants them on stdout: `{"cniVersion","code","msg","details"}` plus a
 * non-zero exit. Codes are the spec's well-known ones.
 *
 * @example
 * ```ts
 * throw new CniError(CniCode.TryAgainLater, "weft is not running", "start weft");
 * ```
 */
import type { SubnetEnvError } from "../config/subnet_env.ts";

export const CniCode = {
  IncompatibleVersion: 1,
  UnsupportedField: 2,
  UnknownContainer: 3,
  InvalidEnv: 4,
  IoFailure: 5,
  DecodingFailure: 6,
  InvalidConfig: 7,
  TryAgainLater: 11,
} as const;

export class CniError extends Error {
  override name = "CniError";
  constructor(readonly code: number, readonly msg: string, readonly details = "") {
    super(details ? `${msg}: ${details}` : msg);
  }
}

/** Codes for subnet.env problems: a missing file means weft is not ready yet (try again). */
const SUBNET_ENV_CODES = {
  absent: CniCode.TryAgainLater,
  unreadable: CniCode.IoFailure,
  incomplete: CniCode.InvalidConfig,
  invalid: CniCode.InvalidConfig,
} as const;

/** A subnet.env problem as the CNI error the runtime gets. */
export function subnetEnvCniError(e: SubnetEnvError): CniError {
  return new CniError(SUBNET_ENV_CODES[e.problem], e.summary, e.hint);
}

/** The error JSON for stdout. */
export function errorJson(e: CniError, cniVersion: string): string {
  return JSON.stringify({ cniVersion, code: e.code, msg: e.msg, details: e.details });
}
