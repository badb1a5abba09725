/**
 * Faults for the fault matrix (test/e2e/fault_*_test.ts) and the exact end state every fault must
 * come back to. Faults: an underlay partition of one host ({@link partition}), a subnet.env
 * directory on a small tmpfs that can be made read-only or full ({@link mountSubnetDir}); a frozen
 * agent is `AgentProc.signal("SIGSTOP")`, an etcd outage `EtcdProc.kill()`/`restart()`. Checks:
 * the registry's leases as the test sees them ({@link listLeases}, {@link deleteLease}), the
 * readiness every agent reported during a fault ({@link recordReadyz}), and
 * {@link waitConverged}: one lease per running agent, its subnet in the agent's subnet.env, and on
 * every host exactly the peers' routes, neighbours and FDB entries on flannel.1 — nothing
 * missing, nothing stale.
 *
 * @example
 * ```ts
 * const heal = await partition(c, "h3");        // h3's eth0 drops everything
 * const rec = recordReadyz(c);                  // /readyz of every agent, every 500 ms
 * await sleep(10_000);
 * await heal();
 * const samples = await rec.stop();             // [{ host: "h3", atMs: 512, code: 200 }, …]
 * await waitConverged(c);                       // exact kernel state on every host
 * ```
 */
import assert from "node:assert/strict";
import { contains, formatIp, parseCidr, parseIp } from "../../src/base/ipv4.ts";
import { openRegistry } from "../../src/registry/open.ts";
import type { Cluster, Host } from "./cluster.ts";
import { atExit } from "./exit.ts";
import { CLUSTER_NETWORK } from "./names.ts";
import { run, runOk, sleep, waitFor } from "./proc.ts";

/** The agents' registry key prefix in a "kv" cluster (agents run with the default). */
const KV_PREFIX = "/coreos.com/network";

/** A lease as the fault tests compare it. */
export interface LeaseView {
  /** Key relative to `<prefix>/subnets/`, e.g. "198.19.5.0-24". */
  key: string;
  /** "198.19.5.0/24". */
  subnet: string;
  publicIP: string;
  vtepMac: string | null;
}

function leaseView(key: string, value: string): LeaseView {
  const subnet = key.replace(/-(\d+)$/, "/$1");
  let v: { PublicIP?: unknown; BackendData?: { VtepMAC?: unknown } } = {};
  try {
    v = JSON.parse(value);
  } catch { /* shown as an empty lease */ }
  return {
    key,
    subnet,
    publicIP: String(v.PublicIP ?? ""),
    vtepMac: typeof v.BackendData?.VtepMAC === "string" ? v.BackendData.VtepMAC : null,
  };
}

/**
 * The cluster's unexpired leases as the registry holds them (key relative to
 * `<prefix>/subnets/`, value the JSON text), sorted by key (etcd via etcdctl, KV read in-process).
 */
export async function leaseEntries(c: Cluster): Promise<{ key: string; value: string }[]> {
  let out: { key: string; value: string }[];
  if (c.etcd) {
    const pre = `${c.etcdPrefix}/subnets/`;
    const r = JSON.parse(await c.etcd.etcdctl("get", "--prefix", pre, "-w", "json")) as {
      kvs?: { key: string; value: string }[];
    };
    out = (r.kvs ?? []).map((kv) => ({
      key: atob(kv.key).slice(pre.length),
      value: atob(kv.value),
    }));
  } else {
    const reg = await openRegistry({ kind: "kv", prefix: KV_PREFIX, kvPath: c.kvPath! });
    try {
      out = (await reg.listLeases()).leases.map((l) => ({ key: l.key, value: l.value }));
    } finally {
      await reg.close();
    }
  }
  return out.sort((a, b) => a.key.localeCompare(b.key));
}

/** The cluster's unexpired leases, sorted by key, as the fault tests compare them. */
export async function listLeases(c: Cluster): Promise<LeaseView[]> {
  return (await leaseEntries(c)).map((l) => leaseView(l.key, l.value));
}

/**
 * Deletes a lease (key relative to `<prefix>/subnets/`) as an operator or another writer would;
 * true when it existed.
 */
export async function deleteLease(c: Cluster, key: string): Promise<boolean> {
  if (c.etcd) {
    return (await c.etcd.etcdctl("del", `${c.etcdPrefix}/subnets/${key}`)).trim() === "1";
  }
  const reg = await openRegistry({ kind: "kv", prefix: KV_PREFIX, kvPath: c.kvPath! });
  try {
    return await reg.deleteLease(key);
  } finally {
    await reg.close();
  }
}

/** The lease of `h` (by its public IP), or undefined. */
export async function leaseOf(c: Cluster, h: Host): Promise<LeaseView | undefined> {
  return (await listLeases(c)).find((l) => l.publicIP === h.ip);
}

// ---- underlay partition ----

const PARTITION_RULES = [
  ["INPUT", "-i", "eth0"],
  ["OUTPUT", "-o", "eth0"],
  ["FORWARD", "-i", "eth0"],
  ["FORWARD", "-o", "eth0"],
];

/**
 * Cuts `host` off the underlay: iptables DROP rules for everything in and out of its eth0, inside
 * its namespace (links, addresses, routes, neighbours and FDB stay exactly as they are). Returns
 * `heal()`, which removes the rules; call it in `finally` (it is idempotent).
 */
export async function partition(c: Cluster, ref: string | Host): Promise<() => Promise<void>> {
  const h = c.host(ref);
  const rule = (op: string, r: string[], at: string[] = []) => [
    "iptables",
    "-w",
    "5",
    op,
    r[0],
    ...at,
    ...r.slice(1),
    "-j",
    "DROP",
  ];
  let healed = false;
  const heal = async () => {
    if (healed) return;
    healed = true;
    for (const r of PARTITION_RULES) {
      // -D of a rule never added (insertion failed half-way) fails: nothing to remove then.
      await c.run(h, rule("-D", r));
    }
  };
  try {
    for (const r of PARTITION_RULES) await c.exec(h, rule("-I", r, ["1"]));
  } catch (e) {
    await heal();
    throw e;
  }
  return heal;
}

// ---- subnet.env directory on a tmpfs ----

/** A tmpfs mounted as a host's subnet.env directory, to make it read-only or full. */
export interface SubnetDir {
  readonly path: string;
  /** Remounts it read-only (the superblock: every mount namespace sees it). */
  readOnly(): Promise<void>;
  /** Remounts it read-write. */
  writable(): Promise<void>;
  /** Fills it up with a filler file until no byte is left. */
  fill(): Promise<void>;
  /** Removes the filler file. */
  unfill(): Promise<void>;
  /** Unmounts it (idempotent); the cluster's destroy() can then remove the run dir. */
  unmount(): Promise<void>;
}

/**
 * Mounts a small tmpfs (`sizeKb`) at `<host dir>/run` and points the host's subnet file into it.
 * Call before the host's agent starts: `ip netns exec` gives the agent a copy of the mount table
 * taken at its start. Unmount in `finally`; a process that dies first unmounts it at exit.
 */
export async function mountSubnetDir(
  c: Cluster,
  ref: string | Host,
  sizeKb = 64,
): Promise<SubnetDir> {
  const h = c.host(ref);
  const path = `${h.dir}/run`;
  const filler = `${path}/filler`;
  await Deno.mkdir(path, { recursive: true });
  await runOk(["mount", "-t", "tmpfs", "-o", `size=${sizeKb}k,mode=0755`, "tmpfs", path]);
  let mounted = true;
  const undoExit = atExit(() => {
    new Deno.Command("umount", { args: ["-l", path], stderr: "null" }).outputSync();
  });
  h.subnetFile = `${path}/subnet.env`;
  return {
    path,
    readOnly: () => runOk(["mount", "-o", "remount,ro", path]).then(() => {}),
    writable: () => runOk(["mount", "-o", "remount,rw", path]).then(() => {}),
    async fill() {
      // dd stops with "No space left on device" (exit 1): that is the point.
      const r = await run(["dd", "if=/dev/zero", `of=${filler}`, "bs=4k"], { timeoutMs: 10_000 });
      if (!/No space left/.test(r.stderr)) {
        throw new Error(`filling ${path} did not end with ENOSPC: ${r.stderr.trim()}`);
      }
    },
    unfill: () => Deno.remove(filler),
    async unmount() {
      if (!mounted) return;
      mounted = false;
      await runOk(["umount", "-l", path]);
      undoExit();
    },
  };
}

// ---- readiness during a fault ----

export interface ReadyzSample {
  host: string;
  /** ms since recording started. */
  atMs: number;
  /** HTTP status, or null when nothing answered (e.g. a frozen agent). */
  code: number | null;
}

/**
 * Polls /readyz of every running agent (started with a healthz port) every `everyMs` until
 * `stop()`, which returns the samples. Probes of one round run in parallel, each bounded (3 s).
 */
export function recordReadyz(
  c: Cluster,
  everyMs = 500,
): { stop(): Promise<ReadyzSample[]> } {
  const samples: ReadyzSample[] = [];
  const t0 = Date.now();
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      const hosts = c.hosts.filter((h) => h.agent && !h.agent.status);
      await Promise.all(hosts.map(async (h) => {
        const code = await h.agent!.readyz();
        samples.push({ host: h.name, atMs: Date.now() - t0, code });
      }));
      await sleep(everyMs);
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
      return samples;
    },
  };
}

/** Readiness samples per host, compressed into runs: "h1: 200×12; h3: 200×3 503×9 200×2". */
export function summarizeReadyz(samples: ReadyzSample[]): string {
  const by = new Map<string, string[]>();
  for (const s of samples) {
    const runs = by.get(s.host) ?? [];
    const code = String(s.code ?? "none");
    const last = runs.at(-1);
    const m = last ? /^(.+)×(\d+)$/.exec(last) : null;
    if (m && m[1] === code) runs[runs.length - 1] = `${code}×${Number(m[2]) + 1}`;
    else runs.push(`${code}×1`);
    by.set(s.host, runs);
  }
  return [...by].sort().map(([h, r]) => `${h}: ${r.join(" ")}`).join("; ");
}

// ---- exact convergence ----

interface KernelPeers {
  routes: string[];
  neigh: string[];
  fdb: string[];
}

/** flannel.1's peer entries on `h`: routes into the cluster network (own subnet excluded). */
async function kernelPeers(c: Cluster, h: Host, ownSubnet: string): Promise<KernelPeers> {
  const net = parseCidr(CLUSTER_NETWORK);
  const inNet = (dst: string) => contains(net, parseIp(dst.split("/")[0]));
  const routes = (await c.routes(h))
    // cni0's connected route belongs to the pods' bridge (CNI), not to weft.
    .filter((r) => r.dst !== "default" && inNet(r.dst) && r.dst !== ownSubnet && r.dev !== "cni0")
    .map((r) => `${r.dst} via ${r.gateway ?? "-"} dev ${r.dev}`);
  const neighOut = await c.run(h, ["ip", "-j", "neigh", "show", "dev", "flannel.1"]);
  const neigh = neighOut.code === 0
    ? (JSON.parse(neighOut.stdout || "[]") as { dst: string; lladdr?: string; state?: string[] }[])
      .map((n) => `${n.dst} lladdr ${n.lladdr ?? "-"} ${(n.state ?? []).join(",")}`)
    : [];
  const fdbOut = await c.run(h, ["bridge", "-j", "fdb", "show", "dev", "flannel.1"]);
  const fdb = fdbOut.code === 0
    ? (JSON.parse(fdbOut.stdout || "[]") as { mac: string; dst?: string }[])
      .map((f) => `${f.mac} dst ${f.dst ?? "-"}`)
    : [];
  return { routes: routes.sort(), neigh: neigh.sort(), fdb: fdb.sort() };
}

export interface ConvergeOptions {
  /**
   * Hosts the cluster must have forgotten (a frozen or partitioned agent whose lease expired):
   * their lease counts as an orphan, the others must hold no entry for them, they are not checked.
   */
  exclude?: (string | Host)[];
}

/**
 * What is wrong now, or [] when converged: the registry holds exactly one lease per host with a
 * running agent (no orphan, no duplicate subnet), each agent's subnet.env names its lease's subnet,
 * and every such host has exactly the other leases on flannel.1 (route via the peer's .0 onlink,
 * PERMANENT neighbour, FDB entry to its public IP) and nothing else in the cluster network.
 */
export async function convergenceProblems(
  c: Cluster,
  o: ConvergeOptions = {},
): Promise<string[]> {
  const out = (o.exclude ?? []).map((r) => c.host(r));
  const hosts = c.hosts.filter((h) => h.agent && !h.agent.status && !out.includes(h));
  const leases = await listLeases(c);
  const problems: string[] = [];
  const ips = new Set(hosts.map((h) => h.ip));
  for (const l of leases) {
    if (!ips.has(l.publicIP)) problems.push(`orphan lease ${l.key} (${l.publicIP})`);
  }
  const subnets = leases.map((l) => l.subnet);
  if (new Set(subnets).size !== subnets.length) problems.push(`duplicate subnets: ${subnets}`);
  const own = new Map<Host, LeaseView>();
  for (const h of hosts) {
    const mine = leases.filter((l) => l.publicIP === h.ip);
    if (mine.length !== 1) {
      problems.push(`${h.name}: ${mine.length} leases (${mine.map((l) => l.key)})`);
      continue;
    }
    own.set(h, mine[0]);
    const env = await c.readSubnetEnv(h);
    const envSubnet = env ? `${formatIp(env.subnet.ip)}/${env.subnet.prefix}` : "none";
    if (envSubnet !== mine[0].subnet) {
      problems.push(`${h.name}: subnet.env says ${envSubnet}, lease ${mine[0].subnet}`);
    }
  }
  if (problems.length > 0) return problems;
  for (const h of hosts) {
    const peers = hosts.filter((p) => p !== h).map((p) => own.get(p)!);
    const gw = (l: LeaseView) => l.subnet.split("/")[0];
    const want: KernelPeers = {
      routes: peers.map((l) => `${l.subnet} via ${gw(l)} dev flannel.1`).sort(),
      neigh: peers.map((l) => `${gw(l)} lladdr ${l.vtepMac} PERMANENT`).sort(),
      fdb: peers.map((l) => `${l.vtepMac} dst ${l.publicIP}`).sort(),
    };
    const have = await kernelPeers(c, h, own.get(h)!.subnet);
    for (const k of ["routes", "neigh", "fdb"] as const) {
      const missing = want[k].filter((x) => !have[k].includes(x));
      const stale = have[k].filter((x) => !want[k].includes(x));
      if (missing.length) problems.push(`${h.name}: ${k} missing ${missing.join(", ")}`);
      if (stale.length) problems.push(`${h.name}: stale ${k} ${stale.join(", ")}`);
    }
  }
  return problems;
}

/** Waits (bounded) until {@link convergenceProblems} finds nothing; the error lists what is off. */
export async function waitConverged(
  c: Cluster,
  timeoutMs = 20_000,
  o: ConvergeOptions = {},
): Promise<void> {
  const what = o.exclude?.length
    ? `every host but ${o.exclude.map((h) => c.host(h).name)} converged without it`
    : "every host converged (leases, subnet.env, exact flannel.1 entries)";
  await waitFor(what, async () => {
    const p = await convergenceProblems(c, o);
    if (p.length > 0) throw new Error(p.join("; "));
    return true;
  }, { timeoutMs, intervalMs: 250 });
}

/** Asserts every sample of `hosts` was `code`, naming the run of samples when not. */
export function assertAll(
  samples: ReadyzSample[],
  hosts: string[],
  code: number | null,
  why: string,
): void {
  const bad = samples.filter((s) => hosts.includes(s.host) && s.code !== code);
  assert.deepEqual(bad, [], `${why}; readiness seen: ${summarizeReadyz(samples)}`);
  assert.ok(samples.some((s) => hosts.includes(s.host)), `no /readyz sample of ${hosts}`);
}

/** Every pod reaches every other (2 echoes each), or an assertion naming the failures. */
export async function assertPingMatrix(c: Cluster, when: string): Promise<void> {
  const m = await c.pingMatrix({ count: 2 });
  assert.ok(m.ok, `ping matrix ${when}: ${JSON.stringify(m.failed)}`);
}
