/**
 * `deno task compile`: builds the single `weft` executable with every permission and unstable
 * feature baked in and the npm packages embedded.
 *
 * `deno compile` needs the `denort` runtime for this Deno version. It normally downloads it; where
 * that is impossible, set DENORT_BIN to a denort binary of the same version (deno compile reads
 * it). Without either, this task says so plainly and exits 1 — it never produces a fake binary.
 *
 * Usage: deno task compile [--output PATH] [--target TRIPLE]
 */
import { V8_FLAGS } from "../base/v8_flags.ts";

const args = [...Deno.args];
const opt = (name: string, dflt: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};
const output = opt("--output", "weft");
const target = opt("--target", "");
const root = new URL("../../", import.meta.url).pathname;

const denort = Deno.env.get("DENORT_BIN");
if (denort) {
  try {
    Deno.statSync(denort);
  } catch {
    console.error(
      `compile: DENORT_BIN=${denort} does not exist; point it at a denort binary of Deno ${Deno.version.deno}`,
    );
    Deno.exit(1);
  }
}

const cmd = new Deno.Command(Deno.execPath(), {
  cwd: root,
  args: [
    "compile",
    "--allow-all",
    "--unstable-kv",
    "--no-check=remote",
    // Baked into the executable (see src/base/v8_flags.ts).
    `--v8-flags=${V8_FLAGS.join(",")}`,
    // The udp backend's packet workers are loaded by URL, so they must be embedded explicitly.
    "--include",
    "src/backend/udp/worker.ts",
    ...(target ? ["--target", target] : []),
    "--output",
    output,
    "main.ts",
  ],
  stdout: "inherit",
  stderr: "piped",
});
const out = await cmd.output();
const err = new TextDecoder().decode(out.stderr);
if (out.code !== 0) {
  Deno.stderr.writeSync(out.stderr);
  if (/denort|dl\.deno\.land|dns error|download/i.test(err) && !denort) {
    console.error(
      `\ncompile: cannot build weft: deno compile needs the denort runtime for Deno ` +
        `${Deno.version.deno}, and downloading it failed (no access to Deno's download server ` +
        `from this machine). Set DENORT_BIN to a denort ${Deno.version.deno} binary and run ` +
        `'deno task compile' again.`,
    );
  }
  Deno.exit(1);
}
console.error(`compile: wrote ${output}`);
