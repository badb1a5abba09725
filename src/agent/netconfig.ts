/**
 * Loads the network config from the registry, seeding it from --net-config-path when the registry
 * has none. A different config already in the registry is an error naming both, so one node's
 * stale file never silently overrides the cluster.
 */
import { getLogger } from "@logtape/logtape";
import { type NetworkConfig, parseNetworkConfig, sameConfig } from "../config/network.ts";
import { ConfigError, FatalError } from "../base/errors.ts";
import type { Registry } from "../registry/contract/registry.ts";
import { Backoff, sleep } from "../base/async.ts";

const log = getLogger(["weft", "config"]);

/** Reads and validates a config file, with errors that name the file. */
export async function readConfigFile(path: string): Promise<string> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new ConfigError(`cannot read network config ${path}: ${(e as Error).message}`);
  }
  try {
    parseNetworkConfig(text);
  } catch (e) {
    throw new ConfigError(`${path}: ${(e as Error).message}`);
  }
  return text;
}

/**
 * Returns the cluster's config. Waits (logging every 10 s) while the registry has none and no
 * seed file was given, as flanneld does. Transient registry errors are retried; a FatalError
 * (a RegistryError for bad credentials or TLS settings) is thrown, since retrying cannot fix it.
 */
export async function loadNetworkConfig(
  registry: Registry,
  seedPath: string | undefined,
  signal: AbortSignal,
): Promise<NetworkConfig | null> {
  const seed = seedPath ? await readConfigFile(seedPath) : null;
  let lastLog = 0;
  const backoff = new Backoff(200);
  while (!signal.aborted) {
    let stored: string | null;
    try {
      stored = await registry.getConfig();
    } catch (e) {
      // Bad credentials or TLS settings: retrying cannot help, so the operator hears at once.
      if (e instanceof FatalError) throw e;
      if (Date.now() - lastLog > 10_000) {
        lastLog = Date.now();
        log.warn("cannot read the network config from the {kind} registry: {error}; retrying", {
          kind: registry.kind,
          error: (e as Error).message,
        });
      }
      await sleep(backoff.next(), signal);
      continue;
    }
    if (stored === null && seed !== null) {
      await registry.putConfig(seed);
      log.info("seeded the registry with the network config from {path}", { path: seedPath });
      return parseNetworkConfig(seed);
    }
    if (stored !== null) {
      if (seed !== null && !sameConfig(stored, seed)) {
        throw new ConfigError(
          `the registry already holds a different network config than ${seedPath}:\n` +
            `  registry: ${stored.trim()}\n  ${seedPath}: ${seed.trim()}\n` +
            `change it with 'weft config set' or drop --net-config-path`,
        );
      }
      try {
        return parseNetworkConfig(stored);
      } catch (e) {
        throw new ConfigError(
          `the network config in the registry is invalid: ${(e as Error).message}; fix it with ` +
            `'weft config set FILE'`,
        );
      }
    }
    if (Date.now() - lastLog > 10_000) {
      lastLog = Date.now();
      log.warn(
        "no network config in the registry yet; waiting (set one with 'weft config set FILE' or " +
          "start with --net-config-path)",
      );
    }
    await sleep(1000, signal);
  }
  return null;
}
