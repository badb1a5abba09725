/** weft's V8 flags (src/base/v8_flags.ts) reach every way weft is started from this repo. */
import assert from "node:assert/strict";
import { V8_FLAGS } from "../../src/base/v8_flags.ts";

const ROOT = new URL("../../", import.meta.url);

Deno.test("v8 flags: deno task weft and deno task compile pass weft's V8 flags", async () => {
  const want = `--v8-flags=${V8_FLAGS.join(",")}`;
  const cfg = JSON.parse(await Deno.readTextFile(new URL("deno.json", ROOT)));
  assert.ok(String(cfg.tasks.weft).split(" ").includes(want), `deno.json task weft lacks ${want}`);
  const compile = await Deno.readTextFile(new URL("src/tools/compile.ts", ROOT));
  assert.match(compile, /`--v8-flags=\$\{V8_FLAGS\.join\(","\)\}`/);
});
