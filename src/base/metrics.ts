/**
 * A minimal Prometheus metrics registry (text exposition format 0.0.4): counters, gauges and
 * histograms with optional labels. Modules create their metrics at import time from `metrics`.
 *
 * @example
 * ```ts
 * const applied = metrics.counter("weft_peer_events_applied_total", "Peer events applied.");
 * applied.inc();
 * metrics.render(); // "# HELP weft_peer_events_applied_total ..."
 * ```
 */

type Labels = Record<string, string>;

function labelKey(l?: Labels): string {
  if (!l) return "";
  const keys = Object.keys(l).sort();
  if (keys.length === 0) return "";
  return "{" +
    keys.map((k) =>
      `${k}="${String(l[k]).replace(/[\\"\n]/g, (c) => c === "\n" ? "\\n" : "\\" + c)}"`
    ).join(",") + "}";
}

function fmt(n: number): string {
  if (Number.isNaN(n)) return "NaN";
  if (n === Infinity) return "+Inf";
  if (n === -Infinity) return "-Inf";
  return String(n);
}

interface Metric {
  name: string;
  render(): string;
}

export class Counter implements Metric {
  #values = new Map<string, number>();
  constructor(readonly name: string, readonly help: string) {}
  inc(by = 1, labels?: Labels): void {
    const k = labelKey(labels);
    this.#values.set(k, (this.#values.get(k) ?? 0) + by);
  }
  get(labels?: Labels): number {
    return this.#values.get(labelKey(labels)) ?? 0;
  }
  render(): string {
    let s = `# HELP ${this.name} ${this.help}\n# TYPE ${this.name} counter\n`;
    if (this.#values.size === 0) s += `${this.name} 0\n`;
    for (const [k, v] of this.#values) s += `${this.name}${k} ${fmt(v)}\n`;
    return s;
  }
}

export class Gauge implements Metric {
  #values = new Map<string, number>();
  #fn?: () => number;
  /** Set with labels once: then no series is rendered as none, not as an unlabelled 0. */
  #labelled = false;
  constructor(readonly name: string, readonly help: string) {}
  set(v: number, labels?: Labels): void {
    const k = labelKey(labels);
    if (k) this.#labelled = true;
    this.#values.set(k, v);
  }
  /** Removes the series with these labels (a peer that is gone); true when it existed. */
  delete(labels: Labels): boolean {
    return this.#values.delete(labelKey(labels));
  }
  /** Computes the value at scrape time instead. */
  collect(fn: () => number): void {
    this.#fn = fn;
  }
  get(labels?: Labels): number {
    if (this.#fn && !labels) return this.#fn();
    return this.#values.get(labelKey(labels)) ?? 0;
  }
  render(): string {
    let s = `# HELP ${this.name} ${this.help}\n# TYPE ${this.name} gauge\n`;
    if (this.#fn) return s + `${this.name} ${fmt(this.#fn())}\n`;
    if (this.#values.size === 0 && !this.#labelled) s += `${this.name} 0\n`;
    for (const [k, v] of this.#values) s += `${this.name}${k} ${fmt(v)}\n`;
    return s;
  }
}

export class Histogram implements Metric {
  #counts: number[];
  #sum = 0;
  #count = 0;
  constructor(readonly name: string, readonly help: string, readonly buckets: number[]) {
    this.#counts = buckets.map(() => 0);
  }
  observe(v: number): void {
    this.#sum += v;
    this.#count++;
    for (let i = 0; i < this.buckets.length; i++) if (v <= this.buckets[i]) this.#counts[i]++;
  }
  get count(): number {
    return this.#count;
  }
  render(): string {
    let s = `# HELP ${this.name} ${this.help}\n# TYPE ${this.name} histogram\n`;
    this.buckets.forEach((b, i) => s += `${this.name}_bucket{le="${fmt(b)}"} ${this.#counts[i]}\n`);
    s += `${this.name}_bucket{le="+Inf"} ${this.#count}\n`;
    s += `${this.name}_sum ${fmt(this.#sum)}\n${this.name}_count ${this.#count}\n`;
    return s;
  }
}

export class MetricsRegistry {
  #metrics = new Map<string, Metric>();
  #beforeRender: (() => void)[] = [];

  /** Runs `fn` before every render, to pull values kept elsewhere (worker counters). */
  beforeRender(fn: () => void): void {
    this.#beforeRender.push(fn);
  }
  #get<T extends Metric>(name: string, make: () => T): T {
    const m = this.#metrics.get(name);
    if (m) return m as T;
    const n = make();
    this.#metrics.set(name, n);
    return n;
  }
  counter(name: string, help: string): Counter {
    return this.#get(name, () => new Counter(name, help));
  }
  gauge(name: string, help: string): Gauge {
    return this.#get(name, () => new Gauge(name, help));
  }
  histogram(name: string, help: string, buckets: number[]): Histogram {
    return this.#get(name, () => new Histogram(name, help, buckets));
  }
  render(): string {
    for (const fn of this.#beforeRender) fn();
    return [...this.#metrics.values()].map((m) => m.render()).join("");
  }
}

/** The process-wide registry served at /metrics. */
export const metrics: MetricsRegistry = new MetricsRegistry();
