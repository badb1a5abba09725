/**
 * Sums a V8 heap snapshot (`.heapsnapshot`, as `heap_entry.ts` writes) by node type and name
 * (object constructor, "(string)", "(array)", ...): count and self size, largest first. Given two
 * snapshots, prints the difference (second − first): what an agent with 5000 peers holds that one
 * with 5 does not, per kind of object.
 *
 * @example
 * ```sh
 * deno run -A bench/lib/heap_summary.ts few.heapsnapshot many.heapsnapshot [--top 40]
 * ```
 */
import { parseArgs } from "node:util";

type Sums = Map<string, { count: number; bytes: number }>;

/** Count and self size per "type:name" of a snapshot's nodes. */
export function summarize(snap: {
  snapshot: { meta: { node_fields: string[]; node_types: (string | string[])[] } };
  nodes: number[];
  strings: string[];
}): Sums {
  const f = snap.snapshot.meta.node_fields;
  const types = snap.snapshot.meta.node_types[0] as string[];
  const [ti, ni, si] = ["type", "name", "self_size"].map((k) => f.indexOf(k));
  const out: Sums = new Map();
  for (let i = 0; i < snap.nodes.length; i += f.length) {
    const type = types[snap.nodes[i + ti]];
    const name = type === "object" || type === "closure" || type === "native"
      ? snap.strings[snap.nodes[i + ni]]
      : "";
    const k = `${type}:${name.slice(0, 60)}`;
    const s = out.get(k) ?? { count: 0, bytes: 0 };
    s.count++;
    s.bytes += snap.nodes[i + si];
    out.set(k, s);
  }
  return out;
}

if (import.meta.main) {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    options: { top: { type: "string", default: "40" } },
    allowPositionals: true,
  });
  const sums = positionals.map((p) => summarize(JSON.parse(Deno.readTextFileSync(p))));
  const [a, b] = sums.length > 1 ? sums : [new Map() as Sums, sums[0]];
  const rows = [...new Set([...a.keys(), ...b.keys()])].map((k) => {
    const x = a.get(k) ?? { count: 0, bytes: 0 };
    const y = b.get(k) ?? { count: 0, bytes: 0 };
    return { k, count: y.count - x.count, bytes: y.bytes - x.bytes };
  }).sort((p, q) => Math.abs(q.bytes) - Math.abs(p.bytes));
  const total = rows.reduce((s, r) => ({ c: s.c + r.count, b: s.b + r.bytes }), { c: 0, b: 0 });
  console.log(`total: ${total.c} objects, ${(total.b / 1048576).toFixed(2)} MiB`);
  for (const r of rows.slice(0, Number(values.top))) {
    console.log(
      `${String(r.count).padStart(9)} ${(r.bytes / 1024).toFixed(0).padStart(9)} KiB  ${r.k}`,
    );
  }
}
