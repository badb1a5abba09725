/**
 * Argument checks shared by every verb: they run before anything is allocated or sent, and throw
 * a RangeError that names the bad value and what a good one looks like.
 *
 * @example
 * ```ts
 * checkIndex(e.dev, "neighbour dev"); // RangeError: neighbour dev 0 is not a valid interface index ...
 * checkMac("zz");                     // RangeError: "zz" is not a MAC address ...
 * ```
 */

/** Throws unless `index` is an ifindex (1..2^31-1); `what` names the argument in the message. */
export function checkIndex(index: number, what = "ifindex"): void {
  if (!Number.isInteger(index) || index <= 0 || index > 0x7fffffff) {
    throw new RangeError(`${what} ${index} is not a valid interface index (a positive integer)`);
  }
}

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;

/** Throws unless `mac` is six colon-separated hex octets. */
export function checkMac(mac: string): void {
  if (!MAC_RE.test(mac)) {
    throw new RangeError(
      `"${mac}" is not a MAC address (expected six hex octets, aa:bb:cc:dd:ee:ff)`,
    );
  }
}
