/**
 * systemd readiness notification (`Type=notify` units): sends `READY=1` as one datagram to the
 * unix socket named by `$NOTIFY_SOCKET` (a path, or an abstract name when it starts with "@").
 * Without `$NOTIFY_SOCKET` (not started by systemd) it does nothing.
 *
 * @example
 * ```ts
 * // after subnet.env and the iptables rules are in place:
 * await notifyReady(); // true when systemd was told
 * ```
 */
import { getLogger } from "@logtape/logtape";
import { AF_UNIX, MSG_NOSIGNAL, sdNotifyLibc, SOCKADDR_UN_SIZE } from "../../ffi/libc/sd_notify.ts";
import { errno, MSG_DONTWAIT, SOCK_CLOEXEC, SOCK_DGRAM } from "../../ffi/libc/mod.ts";

const log = getLogger(["weft", "sdnotify"]);

/** A failed notification: the message names the socket, the errno and what to check. */
export class NotifyError extends Error {
  override name = "NotifyError";
}

/**
 * Encodes `struct sockaddr_un` for `socket` and returns it with the address length to pass:
 * for a path, family + path + NUL; for an abstract name, family + NUL + name (no terminator,
 * the length delimits it, as systemd's sd_notify does).
 */
export function sockaddrUn(socket: string): { addr: Uint8Array; len: number } {
  const abstract = socket.startsWith("@");
  const name = new TextEncoder().encode(abstract ? socket.slice(1) : socket);
  const pathLen = name.length + 1; // leading NUL (abstract) or trailing NUL (path)
  if (pathLen > SOCKADDR_UN_SIZE - 2) {
    throw new NotifyError(
      `NOTIFY_SOCKET "${socket}" is ${name.length} bytes, longer than a unix socket address ` +
        `allows (${SOCKADDR_UN_SIZE - 3}); check the unit's environment`,
    );
  }
  const addr = new Uint8Array(SOCKADDR_UN_SIZE);
  new DataView(addr.buffer).setUint16(0, AF_UNIX, true); // sa_family_t, host order (little-endian)
  addr.set(name, abstract ? 3 : 2);
  return { addr, len: 2 + pathLen };
}

/**
 * Sends `state` (e.g. "READY=1", "STOPPING=1", "STATUS=...") to `$NOTIFY_SOCKET`.
 * Returns false when the variable is unset; throws a `NotifyError` when sending fails.
 */
export function notify(
  state: string,
  env: string | undefined = Deno.env.get("NOTIFY_SOCKET"),
): boolean {
  if (!env) return false;
  if (!env.startsWith("/") && !env.startsWith("@")) {
    throw new NotifyError(
      `NOTIFY_SOCKET "${env}" is neither an absolute path nor an abstract name ("@..."); ` +
        `check the unit's environment`,
    );
  }
  const { addr, len } = sockaddrUn(env);
  const c = sdNotifyLibc();
  const fd = c.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw new NotifyError(`socket(AF_UNIX, SOCK_DGRAM) failed: errno ${errno()}`);
  try {
    const msg = new TextEncoder().encode(state);
    const n = c.sendto(fd, msg, BigInt(msg.length), MSG_DONTWAIT | MSG_NOSIGNAL, addr, len);
    if (Number(n) !== msg.length) {
      const e = errno();
      throw new NotifyError(
        `sending "${state}" to NOTIFY_SOCKET ${env} failed: errno ${e}` +
          (e === 2 || e === 111 ? " (no listener: is systemd's notify socket still there?)" : "") +
          (e === 13 ? " (permission denied: check NotifyAccess= in the unit)" : ""),
      );
    }
  } finally {
    c.close(fd);
  }
  return true;
}

/** Tells systemd the node is ready; logs instead of throwing, readiness is best effort. */
export function notifyReady(env: string | undefined = Deno.env.get("NOTIFY_SOCKET")): boolean {
  try {
    const sent = notify("READY=1", env);
    if (sent) log.info("told systemd we are ready (NOTIFY_SOCKET {socket})", { socket: env });
    return sent;
  } catch (e) {
    log.warn("could not notify systemd: {error}", { error: (e as Error).message });
    return false;
  }
}
