/**
 * Baseline observer for the Deno KV registry: the least a cross-process KV watcher can do. It
 * polls the registry's revision counter at the agents' interval and prints each change-log entry
 * it finds with the time it found it, nothing else (no decoding, no peer bookkeeping). Run as a
 * child process so it does not share an event loop with the writer.
 *
 * Reads weft's KV layout directly (`["weft", prefix, "rev"]`, `["weft", prefix, "log", rev]`,
 * see src/registry/kv/layout.ts); if that layout changes, this baseline must follow.
 *
 * @example
 * ```sh
 * deno run -A --unstable-kv bench/lib/kv_poll_child.ts --path /tmp/x/registry.kv \
 *   --prefix /coreos.com/network --poll-ms 50 --max-seconds 60
 * # ready 17
 * # 1764086719752.1 put 198.19.128.0-24
 * ```
 */
import { parseArgs } from "node:util";

const { values: v } = parseArgs({
  args: Deno.args,
  options: {
    path: { type: "string" },
    prefix: { type: "string", default: "/coreos.com/network" },
    "poll-ms": { type: "string", default: "50" },
    "max-seconds": { type: "string", default: "120" },
  },
});
if (!v.path) {
  console.error("kv_poll_child: --path FILE is required");
  Deno.exit(2);
}
const pollMs = Number(v["poll-ms"]);
const end = Date.now() + Number(v["max-seconds"]) * 1000;
const prefix = v.prefix.replace(/\/+$/, "");
const kv = await Deno.openKv(v.path);
const counter = ["weft", prefix, "rev"];
const now = () => performance.timeOrigin + performance.now();

let last = Number((await kv.get<number>(counter)).value ?? 0);
console.log(`ready ${last}`);
// Bounded by --max-seconds; the parent normally kills it much earlier.
while (Date.now() < end) {
  await new Promise((r) => setTimeout(r, pollMs));
  let rev: number;
  try {
    rev = Number((await kv.get<number>(counter)).value ?? 0);
  } catch {
    continue; // "database is locked": try again next tick, as the registry does
  }
  if (rev <= last) continue;
  const seenAt = now();
  const keys: Deno.KvKey[] = [];
  for (let r = last + 1; r <= rev; r++) keys.push(["weft", prefix, "log", r]);
  const lines: string[] = [];
  for (let i = 0; i < keys.length; i += 10) {
    const got = await kv.getMany<{ type: string; key: string }[]>(keys.slice(i, i + 10));
    for (const e of got) if (e.value) lines.push(`${seenAt} ${e.value.type} ${e.value.key}`);
  }
  if (lines.length) console.log(lines.join("\n"));
  last = rev;
}
kv.close();
