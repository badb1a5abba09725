/**
 * The compiled single executable passes the same CLI smoke checks as `deno run`. Building needs
 * the denort runtime (downloaded by deno compile, or DENORT_BIN); when it cannot be built the
 * tests are skipped with the reason printed — never faked.
 */
import assert from "node:assert/strict";
import { denoRun } from "../kit/netns.ts";
import { run as kitRun } from "../kit/proc.ts";

const root = new URL("../../", import.meta.url).pathname;
const dir = await Deno.makeTempDir({ prefix: "weft-bin-" });
const bin = `${dir}/weft`;
const build = await kitRun(denoRun([`${root}src/tools/compile.ts`, "--output", bin]), {
  cwd: root,
  timeoutMs: 300_000,
});
const built = build.code === 0;
const reason = build.timedOut
  ? "the build took over 300 s and was killed"
  : build.stderr.trim().split("\n").filter((l) => l.startsWith("compile:")).join(" ");
if (!built) {
  console.log(`SKIP compiled-binary tests: ${reason || "deno task compile failed"}`);
  await Deno.remove(dir, { recursive: true });
}

/** The compiled binary with `args` to completion (bounded by the kit). */
function run(args: string[], stdin?: string) {
  return kitRun([bin, ...args], { stdin, timeoutMs: 30_000 });
}

Deno.test({
  name: "compiled weft: version, usage errors, config and leases on a KV file",
  ignore: !built,
  async fn() {
    try {
      const v = await run(["version"]);
      assert.equal(v.code, 0);
      assert.match(v.stdout, /^weft \d/);
      const bad = await run(["--nope"]);
      assert.equal(bad.code, 2);
      assert.match(bad.stderr, /unknown flag --nope/);
      const kv = ["--kv-path", `${dir}/r.kv`];
      const set = await run(["config", "set", "-", ...kv], `{"Network":"198.19.0.0/16"}`);
      assert.equal(set.code, 0, set.stderr);
      const get = await run(["config", "get", ...kv]);
      assert.equal(get.stdout.trim(), `{"Network":"198.19.0.0/16"}`);
      const l = await run(["leases", ...kv]);
      assert.equal(l.code, 0, l.stderr);
      assert.match(l.stdout, /^SUBNET/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
