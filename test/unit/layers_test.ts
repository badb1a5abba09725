/**
 * The layering rule, checked on every import in `src/`, `ffi/` and `main.ts`:
 * base ← ffi ← registry ← lease ← backend ← agent ← cli. An import may point to its own layer or
 * a lower one, never up; and no two folders import each other, directly or round a cycle, even
 * within one layer. Every folder must be placed in a layer, so a new folder is a conscious choice.
 */
import assert from "node:assert/strict";
import { join, relative } from "node:path";

/** Layers from the bottom up, each with the folders it holds. */
export const LAYERS: { name: string; folders: string[] }[] = [
  // Addresses, errors, logging, metrics registry, async helpers; flannel's file formats.
  { name: "base", folders: ["src/base", "src/config"] },
  // The bindings, and the host's interfaces as read through them.
  { name: "ffi", folders: ["ffi/libc", "ffi/libnl", "src/net"] },
  {
    name: "registry",
    folders: ["src/registry", "src/registry/contract", "src/registry/etcd", "src/registry/kv"],
  },
  { name: "lease", folders: ["src/lease"] },
  {
    name: "backend",
    folders: [
      "src/backend",
      "src/backend/alloc",
      "src/backend/hostgw",
      "src/backend/udp",
      "src/backend/vxlan",
      // flannel's iptables chains: a datapath part the agent keeps, like a backend.
      "src/iptables",
      // flannel's nftables tables ("EnableNFTables"), the same kind of part.
      "src/nftables",
    ],
  },
  {
    name: "agent",
    // src/health: the ICMP prober shared by the agent (peer health) and src/doctor.
    folders: ["src/health", "src/agent", "src/ops", "src/doctor"],
  },
  { name: "cli", folders: ["src/cli", "src/cni", "src/tools", "."] },
];

const IMPORT_RE =
  /(?:^|[\s;}])(?:import|export)\s+(?:type\s+)?(?:[^"';]*?\sfrom\s*)?["']([^"']+)["']|import\(\s*["']([^"']+)["']\s*\)|new\s+URL\(\s*["']([^"']+)["']\s*,\s*import\.meta\.url/g;

/** Relative module specifiers a source text imports (static, dynamic, Worker URLs). */
export function importsOf(text: string): string[] {
  const out: string[] = [];
  // Examples in doc comments are not imports.
  const code = text.replace(/\/\*[\s\S]*?\*\//g, "").replace(/^\s*\/\/.*$/gm, "");
  for (const m of code.matchAll(IMPORT_RE)) {
    const spec = m[1] ?? m[2] ?? m[3];
    if (spec.startsWith(".")) out.push(spec);
  }
  return out;
}

function* tsFiles(root: string, dir: string): Generator<string> {
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(join(root, dir))];
  } catch {
    return;
  }
  for (const e of entries) {
    const p = join(dir, e.name);
    if (e.isDirectory) yield* tsFiles(root, p);
    else if (e.name.endsWith(".ts")) yield p;
  }
}

function folderOf(file: string): string {
  const i = file.lastIndexOf("/");
  return i < 0 ? "." : file.slice(0, i);
}

/** Every edge that breaks the rule, as "file: import 'spec' (folder a → folder b): why". */
export function layerViolations(root: string, layers = LAYERS): string[] {
  const rank = new Map<string, number>();
  layers.forEach((l, i) => l.folders.forEach((f) => rank.set(f, i)));
  const files = [...tsFiles(root, "src"), ...tsFiles(root, "ffi")];
  try {
    Deno.statSync(join(root, "main.ts"));
    files.push("main.ts");
  } catch { /* a tree without an entry point */ }
  const bad: string[] = [];
  const folderEdges = new Map<string, Map<string, string>>(); // from → to → first "file: spec"
  for (const file of files) {
    const from = folderOf(file);
    const fromRank = rank.get(from);
    if (fromRank === undefined) {
      bad.push(`${file}: folder ${from} is in no layer; place it in test/layers_test.ts LAYERS`);
      continue;
    }
    for (const spec of importsOf(Deno.readTextFileSync(join(root, file)))) {
      const target = relative(root, join(root, folderOf(file), spec));
      const to = folderOf(target);
      if (to === from) continue;
      const where = `${file}: import "${spec}"`;
      const toRank = rank.get(to);
      if (toRank === undefined) {
        bad.push(`${where} reaches ${to}, which is in no layer`);
        continue;
      }
      if (toRank > fromRank) {
        bad.push(
          `${where} points up: ${from} (${layers[fromRank].name}) → ${to} (${layers[toRank].name})`,
        );
      }
      const m = folderEdges.get(from) ?? new Map<string, string>();
      if (!m.has(to)) m.set(to, where);
      folderEdges.set(from, m);
    }
  }
  // Cycles between folders: depth-first search over the folder graph.
  const state = new Map<string, 1 | 2>();
  const stack: string[] = [];
  const visit = (f: string) => {
    state.set(f, 1);
    stack.push(f);
    for (const [to, where] of folderEdges.get(f) ?? []) {
      if (state.get(to) === 1) {
        const cycle = [...stack.slice(stack.indexOf(to)), to].join(" → ");
        bad.push(`folders import each other: ${cycle} (closing edge: ${where})`);
      } else if (!state.has(to)) visit(to);
    }
    stack.pop();
    state.set(f, 2);
  };
  for (const f of [...folderEdges.keys()].sort()) if (!state.has(f)) visit(f);
  return bad;
}

const ROOT = decodeURIComponent(new URL("../../", import.meta.url).pathname);

Deno.test("layers: every import in src/, ffi/ and main.ts points down the layers, no folder cycles", () => {
  const bad = layerViolations(ROOT);
  assert.deepEqual(bad, [], `layering broken:\n${bad.join("\n")}`);
});

Deno.test("layers: the check finds an upward import, a folder cycle and an unplaced folder", () => {
  const dir = Deno.makeTempDirSync({ prefix: "weft-layers-" });
  try {
    const write = (p: string, text: string) => {
      Deno.mkdirSync(join(dir, folderOf(p)), { recursive: true });
      Deno.writeTextFileSync(join(dir, p), text);
    };
    write("src/base/a.ts", 'import { x } from "../cli/b.ts";\nexport const a = x;\n');
    write("src/cli/b.ts", "export const x = 1;\n");
    write("src/backend/c.ts", 'export { d } from "./udp/d.ts";\n');
    write("src/backend/udp/d.ts", 'import type { c } from "../c.ts";\nexport const d = 1;\n');
    write("src/stray/e.ts", 'const w = new URL("../base/a.ts", import.meta.url);\n');
    write("main.ts", 'await import("./src/cli/b.ts");\n');
    const bad = layerViolations(dir);
    assert.equal(bad.length, 3, bad.join("\n"));
    assert.match(
      bad[0],
      /src\/base\/a\.ts: import "\.\.\/cli\/b\.ts" points up: src\/base \(base\)/,
    );
    assert.match(bad[1], /src\/stray is in no layer/);
    assert.match(
      bad[2],
      /folders import each other: src\/backend → src\/backend\/udp → src\/backend/,
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("layers: importsOf reads static, type-only, re-export, dynamic and Worker imports", () => {
  const text = [
    'import { a } from "./a.ts";',
    'import type { B } from "../b.ts";',
    'export { c } from "./c.ts";',
    'export * from "./d.ts";',
    'import "./e.ts";',
    'const f = await import("./f.ts");',
    'new Worker(new URL("./g.ts", import.meta.url), { type: "module" });',
    'import { getLogger } from "@logtape/logtape";',
    "import {\n  h,\n  i,\n} from './h.ts';",
    '/** @example\n * import { z } from "./z.ts";\n */',
    '// import { y } from "./y.ts";',
  ].join("\n");
  assert.deepEqual(importsOf(text), [
    "./a.ts",
    "../b.ts",
    "./c.ts",
    "./d.ts",
    "./e.ts",
    "./f.ts",
    "./g.ts",
    "./h.ts",
  ]);
});
