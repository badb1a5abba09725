/**
 * Tables and result files for weft's benchmarks. A benchmark collects sections (a title, column
 * names, rows, notes), prints each as an aligned text table, and writes everything — plus the
 * machine context (cores, memory, load) — to `bench/results/<name>-<timestamp>.json`.
 *
 * @example
 * ```ts
 * const r = new Report("control_plane", { sizes: [50, 200] });
 * r.section("convergence", ["registry", "N", "weft s", "baseline s", "ratio"], [
 *   ["kv", 50, 4.1, 2.9, 1.41],
 * ], ["baseline: N × `main.ts version` started in the same waves"]);
 * await r.write(); // prints nothing; returns the JSON path
 * ```
 */

export type Cell = string | number | null | undefined;

export interface Section {
  title: string;
  columns: string[];
  rows: Cell[][];
  notes: string[];
}

/** Summary of a sample: count, percentiles and extremes (NaN-free; empty input gives nulls). */
export interface Summary {
  n: number;
  p50: number | null;
  p99: number | null;
  min: number | null;
  max: number | null;
  mean: number | null;
}

/** Nearest-rank percentile (p in 0..100) of an unsorted sample; null when empty. */
export function percentile(xs: number[], p: number): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * s.length);
  return s[Math.min(s.length - 1, Math.max(0, rank - 1))];
}

export function median(xs: number[]): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export function summarize(xs: number[]): Summary {
  return {
    n: xs.length,
    p50: median(xs),
    p99: percentile(xs, 99),
    min: xs.length ? Math.min(...xs) : null,
    max: xs.length ? Math.max(...xs) : null,
    mean: xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null,
  };
}

/** a / b, or null when either is missing or b is 0 (a ratio must never print as Infinity). */
export function ratio(a: number | null | undefined, b: number | null | undefined): number | null {
  if (a == null || b == null || b === 0 || !Number.isFinite(a) || !Number.isFinite(b)) return null;
  return a / b;
}

/** A number rounded for a table: 3 significant digits below 100, integers above. */
export function round(x: number | null | undefined): number | null {
  if (x == null || !Number.isFinite(x)) return null;
  if (Math.abs(x) >= 100) return Math.round(x);
  return Number(x.toPrecision(3));
}

function cellText(c: Cell): string {
  if (c === null || c === undefined) return "-";
  if (typeof c === "number") return String(round(c));
  return c;
}

/** An aligned plain-text table (numbers right-aligned). */
export function formatTable(columns: string[], rows: Cell[][]): string {
  const text = rows.map((r) => columns.map((_, i) => cellText(r[i])));
  const width = columns.map((c, i) => Math.max(c.length, ...text.map((r) => r[i].length)));
  const numeric = columns.map((_, i) => rows.every((r) => typeof r[i] !== "string"));
  const line = (cells: string[]) =>
    cells.map((c, i) => numeric[i] ? c.padStart(width[i]) : c.padEnd(width[i])).join("  ")
      .trimEnd();
  return [line(columns), line(width.map((w) => "-".repeat(w))), ...text.map(line)].join("\n");
}

/** Machine context stored with every result: results from a loaded machine read differently. */
export function machineContext(): Record<string, unknown> {
  const read = (p: string) => {
    try {
      return Deno.readTextFileSync(p);
    } catch {
      return "";
    }
  };
  const mem = /MemTotal:\s+(\d+)/.exec(read("/proc/meminfo"));
  const model = /model name\s*:\s*(.+)/.exec(read("/proc/cpuinfo"));
  return {
    host: Deno.hostname(),
    kernel: read("/proc/sys/kernel/osrelease").trim(),
    cpus: navigator.hardwareConcurrency,
    cpuModel: model?.[1] ?? null,
    memTotalMiB: mem ? Math.round(Number(mem[1]) / 1024) : null,
    loadavg: read("/proc/loadavg").trim(),
    deno: Deno.version.deno,
  };
}

export class Report {
  readonly sections: Section[] = [];
  readonly data: Record<string, unknown> = {};
  readonly startedAt = new Date();
  readonly problems: string[] = [];

  constructor(readonly name: string, readonly params: Record<string, unknown>) {}

  /** Adds a section and prints it at once (a long run shows results as they come). */
  section(title: string, columns: string[], rows: Cell[][], notes: string[] = []): void {
    const s = { title, columns, rows, notes };
    this.sections.push(s);
    console.log(`\n## ${title}\n${formatTable(columns, rows)}`);
    for (const n of notes) console.log(`  · ${n}`);
  }

  /** Something that went wrong but did not stop the run; printed now and kept in the JSON. */
  problem(msg: string): void {
    this.problems.push(msg);
    console.error(`! ${msg}`);
  }

  /**
   * Writes `bench/results/<name>-<timestamp>.json` (`-2`, `-3`… when a bench started in the same
   * second already wrote that name: never overwrites another run's results); returns its path.
   */
  async write(): Promise<string> {
    const dir = new URL("../results/", import.meta.url).pathname;
    await Deno.mkdir(dir, { recursive: true });
    const stamp = this.startedAt.toISOString().replace(/[:]/g, "-").replace(/\.\d+Z$/, "Z");
    const body = {
      benchmark: this.name,
      startedAt: this.startedAt.toISOString(),
      finishedAt: new Date().toISOString(),
      wallSeconds: (Date.now() - this.startedAt.getTime()) / 1000,
      params: this.params,
      machine: machineContext(),
      sections: this.sections,
      problems: this.problems,
      data: this.data,
    };
    const text = JSON.stringify(body, null, 2) + "\n";
    for (let n = 1; n <= 100; n++) {
      const path = `${dir}${this.name}-${stamp}${n === 1 ? "" : `-${n}`}.json`;
      try {
        await Deno.writeTextFile(path, text, { createNew: true });
        return path;
      } catch (e) {
        if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
      }
    }
    throw new Error(`bench results: 100 files named ${this.name}-${stamp}*.json in ${dir}`);
  }
}
