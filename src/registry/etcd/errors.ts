/**
 * Which etcd errors are permanent and which are retried. Credential, permission and TLS
 * verification failures become a RegistryError saying what to fix (retrying cannot help); etcd
 * down, timeouts, cut connections and expired auth tokens stay as they are, for the caller to
 * retry. A compacted watch history is its own error: the watcher re-lists.
 */
import {
  EtcdAuthenticationFailedError,
  EtcdPermissionDeniedError,
  GRPCUnauthenticatedError,
} from "etcd3";
import { RegistryError } from "../contract/registry.ts";
import type { Connection } from "./client.ts";

/** The watch history we need is gone; the consumer must re-list. */
export class Compacted extends Error {
  constructor(readonly compactRevision: number) {
    super(`etcd compacted history up to revision ${compactRevision}`);
  }
}

/**
 * Turns credential and TLS failures into RegistryError saying what to fix; anything else
 * (etcd down, timeouts) is returned unchanged for the caller to retry.
 */
export function classify(e: unknown, c: Omit<Connection, "client">): unknown {
  if (!(e instanceof Error) || e instanceof RegistryError) return e;
  const at = c.endpoints.join(",");
  const msg = e.message;
  // An expired token (etcd forgets them after --auth-token-ttl and on restart) is renewed by the
  // next unary call; the watch makes one before each reconnect.
  if (/invalid auth token/i.test(msg)) return e;
  if (e instanceof EtcdAuthenticationFailedError) {
    return new RegistryError(
      `etcd at ${at} rejected user "${c.username}" or its password (${msg}); ` +
        `check --etcd-username/--etcd-password`,
    );
  }
  if (/authentication is not enabled/i.test(msg)) {
    return new RegistryError(
      `etcd at ${at} has authentication disabled but --etcd-username is set (${msg}); ` +
        `drop --etcd-username/--etcd-password or enable auth in etcd`,
    );
  }
  if (e instanceof EtcdPermissionDeniedError || /permission denied/i.test(msg)) {
    return new RegistryError(
      `etcd at ${at} denied access under ${c.prefix} for user ` +
        `"${c.username ?? "(none)"}" (${msg}); grant it readwrite on prefix ${c.prefix}/` +
        (c.username ? "" : " or set --etcd-username/--etcd-password"),
    );
  }
  if (e instanceof GRPCUnauthenticatedError || /user name is empty/i.test(msg)) {
    return new RegistryError(
      `etcd at ${at} requires authentication (${msg}); set --etcd-username/--etcd-password`,
    );
  }
  // Only verification failures: a connection cut mid-handshake (etcd restarting) is transient.
  if (/certificate|self[- ]signed|unknown ?ca|altnames|CERT_|wrong version number/i.test(msg)) {
    return new RegistryError(
      `TLS with etcd at ${at} failed (${msg}); ` +
        (c.tls
          ? "check --etcd-cafile, --etcd-certfile, --etcd-keyfile and the server's certificate"
          : "the server may expect TLS: use https:// endpoints with --etcd-cafile"),
    );
  }
  return e;
}

/** Runs `fn`, turning its permanent failures into RegistryErrors (see `classify`). */
export async function classified<T>(c: Omit<Connection, "client">, fn: () => Promise<T>) {
  try {
    return await fn();
  } catch (e) {
    throw classify(e, c);
  }
}
