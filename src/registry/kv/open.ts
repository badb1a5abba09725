/**
 * Opening a Deno KV registry on a local file (`path`) or a KV Connect endpoint (`url`). Errors
 * that retrying cannot fix (no token, bad URL, unwritable directory) are RegistryErrors.
 */
import { dirname } from "node:path";
import { Deadline, sleep } from "../../base/async.ts";
import { RegistryError } from "../contract/registry.ts";
import { isLocked, lockBackoff, lockRetries } from "./commit.ts";
import { KvRegistry, type KvRegistryOptions } from "./registry.ts";
import { FileGuard } from "./file_guard.ts";

/** What Deno.openKv takes: the URL (token checked) or the path (directory created). */
async function target(opts: KvRegistryOptions): Promise<string> {
  if (opts.path && opts.url) {
    throw new RegistryError(
      `Deno KV: both a file path (${opts.path}) and a URL (${opts.url}) were given; pick one`,
    );
  }
  if (opts.url) {
    let u: URL;
    try {
      u = new URL(opts.url);
    } catch {
      throw new RegistryError(`Deno KV Connect URL "${opts.url}" is not a valid URL`);
    }
    if (u.protocol !== "https:" && u.protocol !== "http:") {
      throw new RegistryError(
        `Deno KV Connect URL "${opts.url}" must be http(s)://; for a local file give a path`,
      );
    }
    let token: string | undefined;
    try {
      token = Deno.env.get("DENO_KV_ACCESS_TOKEN");
    } catch (e) {
      throw new RegistryError(
        `cannot read DENO_KV_ACCESS_TOKEN for ${opts.url} (${(e as Error).message}); ` +
          `run with --allow-env`,
      );
    }
    if (!token) {
      throw new RegistryError(
        `Deno KV Connect URL ${opts.url} needs an access token: set DENO_KV_ACCESS_TOKEN`,
      );
    }
    return opts.url;
  }
  if (opts.path) {
    try {
      await Deno.mkdir(dirname(opts.path), { recursive: true, mode: 0o755 }); // whatever the umask
    } catch (e) {
      throw new RegistryError(
        `cannot create the directory for KV file ${opts.path}: ${(e as Error).message}`,
      );
    }
    return opts.path;
  }
  throw new RegistryError("Deno KV registry needs a file path or a KV Connect URL");
}

/** Opens a KV registry on a local file (`path`) or a KV Connect endpoint (`url`). */
export async function openKvRegistry(opts: KvRegistryOptions): Promise<KvRegistry> {
  const where = await target(opts);
  // A fresh file opened by several processes at once can hit the lock while creating its schema.
  const deadline = new Deadline(opts.retryMs ?? 10_000);
  const backoff = lockBackoff();
  while (true) {
    try {
      const kv = await Deno.openKv(where);
      let writeKv = kv;
      try {
        const writeHandle = !!opts.path && opts.writeHandle !== false;
        if (writeHandle) writeKv = await Deno.openKv(where);
        const file = opts.path
          ? { guard: FileGuard.of(where), open: () => Deno.openKv(where), writeHandle }
          : null;
        return new KvRegistry(kv, opts, file, writeKv);
      } catch (e) {
        kv.close();
        if (writeKv !== kv) writeKv.close();
        throw e;
      }
    } catch (e) {
      if (e instanceof RegistryError) throw e;
      if (isLocked(e) && !deadline.expired()) {
        lockRetries.inc();
        await sleep(backoff.next());
        continue;
      }
      throw new RegistryError(`cannot open Deno KV ${where}: ${(e as Error).message}`);
    }
  }
}
