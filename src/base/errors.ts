/**
 * The errors retrying cannot fix. Code that retries (the agent's start-up, its config wait) checks
 * `instanceof FatalError` and stops; the operator reads the message, which says what failed, with
 * which value, and what to change. Each layer subclasses it for its own cause (`OutOfSubnetsError`
 * in the lease layer, `RegistryError`, `InterfaceError`); everything an operator configured wrong
 * is a {@link ConfigError}.
 *
 * @example
 * ```ts
 * try {
 *   await acquire();
 * } catch (e) {
 *   if (e instanceof FatalError) throw e; // bad config, no interface, out of subnets
 *   await sleep(backoff.next()); // registry outage: try again
 * }
 * ```
 */

/** An error that retrying cannot fix: the agent stops and the operator reads the message. */
export class FatalError extends Error {
  override name = "FatalError";
}

/** A bad setting (network config, flag, file): the message names it and what is expected. */
export class ConfigError extends FatalError {
  override name = "ConfigError";
}
