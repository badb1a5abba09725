/**
 * Typed netlink errors: a libnl return code (plus the kernel errno and extended-ack text when the
 * kernel sent them) turned into a {@link NetlinkError} that says which operation failed, on what,
 * and what the operator can do.
 *
 * @example
 * ```ts
 * try {
 *   nlh.routeDel({ dst: "198.19.5.0/24" });
 * } catch (e) {
 *   if (!isNotFound(e)) throw e; // already gone: fine for a delete
 * }
 * ```
 */

/** libnl error codes (netlink/errno.h, libnl 3.7), code → symbolic name. */
export const NLE_NAMES: Record<number, string> = {
  0: "NLE_SUCCESS",
  1: "NLE_FAILURE",
  2: "NLE_INTR",
  3: "NLE_BAD_SOCK",
  4: "NLE_AGAIN",
  5: "NLE_NOMEM",
  6: "NLE_EXIST",
  7: "NLE_INVAL",
  8: "NLE_RANGE",
  9: "NLE_MSGSIZE",
  10: "NLE_OPNOTSUPP",
  11: "NLE_AF_NOSUPPORT",
  12: "NLE_OBJ_NOTFOUND",
  13: "NLE_NOATTR",
  14: "NLE_MISSING_ATTR",
  15: "NLE_AF_MISMATCH",
  16: "NLE_SEQ_MISMATCH",
  17: "NLE_MSG_OVERFLOW",
  18: "NLE_MSG_TRUNC",
  19: "NLE_NOADDR",
  20: "NLE_SRCRT_NOSUPPORT",
  21: "NLE_MSG_TOOSHORT",
  22: "NLE_MSGTYPE_NOSUPPORT",
  23: "NLE_OBJ_MISMATCH",
  24: "NLE_NOCACHE",
  25: "NLE_BUSY",
  26: "NLE_PROTO_MISMATCH",
  27: "NLE_NOACCESS",
  28: "NLE_PERM",
  29: "NLE_PKTLOC_FILE",
  30: "NLE_PARSE_ERR",
  31: "NLE_NODEV",
  32: "NLE_IMMUTABLE",
  33: "NLE_DUMP_INTR",
  34: "NLE_ATTRSIZE",
  35: "NLE_HOSTUNREACH",
};

export const NLE_FAILURE = 1;
export const NLE_EXIST = 6;
export const NLE_OBJ_NOTFOUND = 12;
export const NLE_NOADDR = 19;
export const NLE_NODEV = 31;
export const NLE_DUMP_INTR = 33;

/** Linux errno values that show up in netlink replies, for readable messages. */
const ERRNO_NAMES: Record<number, string> = {
  1: "EPERM",
  2: "ENOENT",
  3: "ESRCH",
  12: "ENOMEM",
  13: "EACCES",
  16: "EBUSY",
  17: "EEXIST",
  19: "ENODEV",
  22: "EINVAL",
  34: "ERANGE",
  93: "EPROTONOSUPPORT",
  95: "EOPNOTSUPP",
  97: "EAFNOSUPPORT",
  98: "EADDRINUSE",
  99: "EADDRNOTAVAIL",
  100: "ENETDOWN",
  101: "ENETUNREACH",
  105: "ENOBUFS",
  113: "EHOSTUNREACH",
};

export function errnoName(errno: number): string {
  return ERRNO_NAMES[errno] ?? `errno ${errno}`;
}

/** What the kernel said in its NLMSG_ERROR reply, captured by the socket's error callback. */
export interface KernelError {
  /** Positive errno, e.g. 101 for ENETUNREACH. */
  errno: number;
  /** Extended-ack text, e.g. "Nexthop has invalid gateway"; null when the kernel sent none. */
  message: string | null;
}

export interface NetlinkErrorInit {
  /** API verb that failed, e.g. "routeReplace". */
  op: string;
  /** The arguments as given, for logs and callers. */
  args: unknown;
  /** Human rendering of the arguments, e.g. "198.19.5.0/24 via 198.19.5.0 dev 12 onlink". */
  what: string;
  /** libnl error code, positive (libnl returns it negated). */
  code: number;
  /** nl_geterror text for the code. */
  libnlMessage: string;
  kernel?: KernelError | null;
  /** Extra advice for the operator, appended to the message. */
  hint?: string;
}

/**
 * A failed netlink request. `message` reads like
 * `netlink routeReplace 198.19.5.0/24 via 198.19.5.0 dev 12 onlink: Object exists (NLE_EXIST)`.
 */
export class NetlinkError extends Error {
  override name = "NetlinkError";
  readonly op: string;
  readonly args: unknown;
  readonly code: number;
  readonly codeName: string;
  readonly libnlMessage: string;
  /** Kernel errno (positive) when the kernel replied with an error; null for local failures. */
  readonly errno: number | null;
  readonly kernelMessage: string | null;

  constructor(init: NetlinkErrorInit) {
    const codeName = NLE_NAMES[init.code] ?? `NLE_${init.code}`;
    const k = init.kernel;
    let detail = `${init.libnlMessage} (${codeName}`;
    if (k) {
      detail += `; kernel ${errnoName(k.errno)}`;
      if (k.message) detail += `: ${k.message}`;
    }
    detail += ")";
    const what = init.what ? ` ${init.what}` : "";
    super(`netlink ${init.op}${what}: ${detail}${init.hint ? ` — ${init.hint}` : ""}`);
    this.op = init.op;
    this.args = init.args;
    this.code = init.code;
    this.codeName = codeName;
    this.libnlMessage = init.libnlMessage;
    this.errno = k?.errno ?? null;
    this.kernelMessage = k?.message ?? null;
  }

  /** The object already exists (EEXIST / EADDRINUSE). */
  get exists(): boolean {
    return this.code === NLE_EXIST;
  }

  /** The object (route, address, neighbour, link) does not exist. */
  get notFound(): boolean {
    return this.code === NLE_OBJ_NOTFOUND || this.code === NLE_NODEV ||
      this.code === NLE_NOADDR;
  }
}

/** True when `e` is a NetlinkError for an object that already exists. */
export function isExists(e: unknown): boolean {
  return e instanceof NetlinkError && e.exists;
}

/** True when `e` is a NetlinkError for an object that is not there (treat as done on delete). */
export function isNotFound(e: unknown): boolean {
  return e instanceof NetlinkError && e.notFound;
}
