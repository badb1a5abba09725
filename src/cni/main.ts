/**
 * Process entry for the CNI plugin mode: reads the environment and stdin, runs the command and
 * writes the result to stdout. `weft cni` and a binary invoked as `weft-cni` call this.
 *
 * @example
 * ```ts
 * Deno.exit(await cniMain());
 * ```
 */
import { runCni } from "./plugin.ts";

export { runCni };

/** Returns the exit code; the caller exits with it. */
export async function cniMain(): Promise<number> {
  const stdin = await new Response(Deno.stdin.readable).text();
  const { code, stdout } = await runCni({ env: Deno.env.toObject(), stdin });
  const bytes = new TextEncoder().encode(stdout);
  let off = 0;
  while (off < bytes.length) off += await Deno.stdout.write(bytes.subarray(off));
  return code;
}
