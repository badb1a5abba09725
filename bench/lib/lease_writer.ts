/**
 * Writes (or deletes) a planned set of leases in a registry on a fixed schedule and reports when
 * each write started and was acknowledged, so observers elsewhere can measure event latency.
 * Usable in-process ({@link writeLeases}) or as a child process inside a network namespace (the
 * harness's etcd is only reachable from the namespaces), printing one JSON line per lease.
 *
 * @example
 * ```sh
 * ip netns exec wharn-w3k9z1-reg deno run -A bench/lib/lease_writer.ts --registry etcd \
 *   --endpoint http://198.18.0.2:2379 --prefix /weft-w3k9z1 --count 100 --interval-ms 50 \
 *   --first-subnet 128 --backend vxlan --public-base 198.18.0.100
 * # {"key":"198.19.128.0-24","t0":1764086719747.5,"t1":1764086719751.2,"revision":12,"ok":true}
 * ```
 */
import { parseArgs } from "node:util";
import type { Registry } from "../../src/registry/contract/registry.ts";
import { openEtcdRegistry } from "../../src/registry/etcd/mod.ts";
import { openKvRegistry } from "../../src/registry/kv/mod.ts";
import { leasePlan, type PlannedLease } from "./leases.ts";
import { nowMs } from "./sys.ts";

export interface WriteResult {
  key: string;
  /** Epoch ms just before the registry call. */
  t0: number;
  /** Epoch ms when the registry acknowledged it. */
  t1: number;
  revision: number | null;
  ok: boolean;
  error?: string;
}

export interface WriteOptions {
  /** Spacing between write starts; 0 = as fast as possible with `concurrency` writers. */
  intervalMs: number;
  /** TTL of created leases; null = no TTL. */
  ttlSeconds: number | null;
  /** Delete the planned keys instead of creating them. */
  delete?: boolean;
  concurrency?: number;
}

async function one(reg: Registry, p: PlannedLease, o: WriteOptions): Promise<WriteResult> {
  const t0 = nowMs();
  try {
    if (o.delete) {
      const ok = await reg.deleteLease(p.key);
      return { key: p.key, t0, t1: nowMs(), revision: null, ok, error: ok ? undefined : "absent" };
    }
    const l = await reg.createLease(p.key, p.value, o.ttlSeconds);
    return {
      key: p.key,
      t0,
      t1: nowMs(),
      revision: l?.revision ?? null,
      ok: l !== null,
      error: l ? undefined : "key exists",
    };
  } catch (e) {
    return { key: p.key, t0, t1: nowMs(), revision: null, ok: false, error: String(e) };
  }
}

/** Writes `plan` on schedule; never throws for a single failed write (it is reported). */
export async function writeLeases(
  reg: Registry,
  plan: PlannedLease[],
  o: WriteOptions,
): Promise<WriteResult[]> {
  const out: WriteResult[] = new Array(plan.length);
  if (o.intervalMs <= 0) {
    let next = 0;
    const worker = async () => {
      while (next < plan.length) {
        const i = next++;
        out[i] = await one(reg, plan[i], o);
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, o.concurrency ?? 1) }, worker));
    return out;
  }
  const start = nowMs();
  for (let i = 0; i < plan.length; i++) {
    const wait = start + i * o.intervalMs - nowMs();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    out[i] = await one(reg, plan[i], o);
  }
  return out;
}

async function cli(argv: string[]): Promise<number> {
  const { values: v } = parseArgs({
    args: argv,
    options: {
      registry: { type: "string", default: "etcd" },
      endpoint: { type: "string", default: "" },
      "kv-path": { type: "string", default: "" },
      prefix: { type: "string", default: "/coreos.com/network" },
      count: { type: "string", default: "100" },
      "interval-ms": { type: "string", default: "50" },
      concurrency: { type: "string", default: "1" },
      "first-subnet": { type: "string", default: "128" },
      "subnet-len": { type: "string", default: "24" },
      backend: { type: "string", default: "vxlan" },
      "public-base": { type: "string", default: "198.18.0.100" },
      ttl: { type: "string", default: "600" },
      delete: { type: "boolean", default: false },
      "max-seconds": { type: "string", default: "120" },
    },
  });
  // Bounded whatever happens to the registry: a stuck write must not leave this child behind.
  const guard = setTimeout(() => {
    console.error(`lease_writer: still running after ${v["max-seconds"]} s; giving up`);
    Deno.exit(3);
  }, Number(v["max-seconds"]) * 1000);
  const reg: Registry = v.registry === "kv"
    ? await openKvRegistry({ path: v["kv-path"], prefix: v.prefix })
    : await openEtcdRegistry({ endpoints: [v.endpoint], prefix: v.prefix });
  try {
    const plan = leasePlan({
      count: Number(v.count),
      firstSubnet: Number(v["first-subnet"]),
      subnetLen: Number(v["subnet-len"]),
      publicBase: v["public-base"],
      backend: v.backend,
    });
    const results = await writeLeases(reg, plan, {
      intervalMs: Number(v["interval-ms"]),
      ttlSeconds: Number(v.ttl) > 0 ? Number(v.ttl) : null,
      delete: v.delete,
      concurrency: Number(v.concurrency),
    });
    console.log(results.map((r) => JSON.stringify(r)).join("\n"));
    return results.every((r) => r.ok) ? 0 : 1;
  } finally {
    clearTimeout(guard);
    await reg.close();
  }
}

if (import.meta.main) Deno.exit(await cli(Deno.args));
