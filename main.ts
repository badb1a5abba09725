/**
 * weft: a node agent for container overlay networks, compatible with flanneld.
 * `deno run -A main.ts --help` lists the commands.
 */
import { main } from "./src/cli/main.ts";

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
