/**
 * Network namespaces and run directories of the harness, and the sweeper for leftovers of runs
 * that crashed: a run writes `owner.json` (pid + process start time) into its run dir before it
 * creates any namespace, so a namespace whose owner is gone is known to be stale — and one whose
 * owner still runs (a concurrent test process) is left alone.
 *
 * @example
 * ```ts
 * await createNs("wharn-w3k9z1-h1", { forward: true });
 * await nsExec("wharn-w3k9z1-h1", ["ip", "-j", "route"]);
 * await cleanupStale();   // removes namespaces of dead runs only
 * ```
 */
import { HARNESS_PREFIX, runIdOfNs } from "./names.ts";
import { run, runOk, type RunOptions } from "./proc.ts";

/** All named network namespaces (`ip netns list`), names only. */
export async function listNs(): Promise<string[]> {
  const out = await runOk(["ip", "netns", "list"]);
  return out.split("\n").map((l) => l.trim().split(/\s+/)[0]).filter((n) => n.length > 0);
}

export interface NsSetup {
  /** ip_forward=1 (hosts route between pods and the underlay). */
  forward?: boolean;
}

/**
 * Creates a namespace with `lo` up and rp_filter off. rp_filter is relaxed because overlay
 * replies may arrive on another interface than the route back (vxlan device vs eth0); the
 * `default` value is set before any interface moves in, so every later interface inherits it.
 */
export async function createNs(name: string, setup: NsSetup = {}): Promise<void> {
  await runOk(["ip", "netns", "add", name]);
  await runOk(["ip", "-n", name, "link", "set", "lo", "up"]);
  const sysctls = [
    "net.ipv4.conf.all.rp_filter=0",
    "net.ipv4.conf.default.rp_filter=0",
    `net.ipv4.ip_forward=${setup.forward ? 1 : 0}`,
  ];
  await nsExec(name, ["sysctl", "-q", "-w", ...sysctls]);
}

/** Runs `cmd` inside namespace `ns`; returns stdout, throws with stderr on failure. */
export function nsExec(ns: string, cmd: string[], opts: RunOptions = {}): Promise<string> {
  return runOk(["ip", "netns", "exec", ns, ...cmd], opts);
}

/** Pids of processes whose network namespace is `ns` (empty when it does not exist). */
export async function nsPids(ns: string): Promise<number[]> {
  const r = await run(["ip", "netns", "pids", ns]);
  if (r.code !== 0) return [];
  return r.stdout.split(/\s+/).filter((s) => /^\d+$/.test(s)).map(Number);
}

/**
 * Kills every process left in `ns` (SIGKILL) and deletes it. Missing namespaces are fine, so
 * cleanup can run twice. Processes are killed first: `ip netns del` only unmounts the name, and a
 * process inside would keep the namespace (and its addresses) alive.
 */
export async function deleteNs(ns: string): Promise<void> {
  for (const pid of await nsPids(ns)) {
    try {
      Deno.kill(pid, "SIGKILL");
    } catch { /* exited meanwhile */ }
  }
  const r = await run(["ip", "netns", "del", ns]);
  if (r.code !== 0 && !/No such file|not found|does not exist/i.test(r.stderr)) {
    throw new Error(`could not delete netns ${ns}: ${r.stderr.trim()}`);
  }
}

/** Synchronous variant of {@link deleteNs}, for the process `unload` handler (no awaits there). */
export function deleteNsSync(ns: string): void {
  const pids = new Deno.Command("ip", { args: ["netns", "pids", ns], stderr: "null" }).outputSync();
  for (const s of new TextDecoder().decode(pids.stdout).split(/\s+/)) {
    if (/^\d+$/.test(s)) {
      try {
        Deno.kill(Number(s), "SIGKILL");
      } catch { /* exited meanwhile */ }
    }
  }
  new Deno.Command("ip", { args: ["netns", "del", ns], stderr: "null" }).outputSync();
}

/** Parent of all run directories: `$TMPDIR/weft-harness` (or /tmp). */
export function harnessRoot(): string {
  return `${(Deno.env.get("TMPDIR") ?? "/tmp").replace(/\/$/, "")}/weft-harness`;
}

export function runDirOf(runId: string): string {
  return `${harnessRoot()}/${runId}`;
}

interface Owner {
  pid: number;
  startTime: string;
}

/** Start time (clock ticks since boot) of `pid`, from /proc; null when it does not exist. */
function procStartTime(pid: number): string | null {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    // Field 2 (comm) may contain spaces and parens; fields after the last ")" start at field 3.
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return rest[22 - 3] ?? null;
  } catch {
    return null;
  }
}

/**
 * Creates the run dir and claims it for this process. Fails when the dir exists (a run id
 * collision or a reused explicit run id): two runs must never share namespaces.
 */
export async function claimRunDir(runId: string): Promise<string> {
  const dir = runDirOf(runId);
  await Deno.mkdir(harnessRoot(), { recursive: true });
  try {
    await Deno.mkdir(dir);
  } catch (e) {
    if (e instanceof Deno.errors.AlreadyExists) {
      throw new Error(
        `run dir ${dir} already exists: run id "${runId}" is in use or left over; ` +
          `call cleanupStale() or pick another runId`,
      );
    }
    throw e;
  }
  const owner: Owner = { pid: Deno.pid, startTime: procStartTime(Deno.pid) ?? "?" };
  await Deno.writeTextFile(`${dir}/owner.json`, JSON.stringify(owner));
  return dir;
}

/**
 * True when the run's owner process still runs (same pid and same start time). A run dir younger
 * than a minute without owner.json counts as alive: its owner may be between mkdir and write.
 */
export function runOwnerAlive(runId: string): boolean {
  const dir = runDirOf(runId);
  try {
    const o = JSON.parse(Deno.readTextFileSync(`${dir}/owner.json`)) as Owner;
    return procStartTime(o.pid) === o.startTime;
  } catch {
    try {
      const mtime = Deno.statSync(dir).mtime?.getTime() ?? 0;
      return Date.now() - mtime < 60_000;
    } catch {
      return false;
    }
  }
}

export interface StaleReport {
  namespaces: string[];
  dirs: string[];
}

/**
 * Removes namespaces whose names start with `prefix` and whose run's owner process is gone
 * (processes inside are killed), and run dirs with a dead owner. Runs still owned by a live
 * process are never touched, so this is safe to call while other tests run.
 */
export async function cleanupStale(prefix = HARNESS_PREFIX): Promise<StaleReport> {
  const report: StaleReport = { namespaces: [], dirs: [] };
  const alive = new Map<string, boolean>();
  const isAlive = (id: string) => {
    if (!alive.has(id)) alive.set(id, runOwnerAlive(id));
    return alive.get(id)!;
  };
  // Pods before hosts is not needed: a veth pair dies with either end's namespace.
  for (const ns of await listNs()) {
    const id = runIdOfNs(ns, prefix);
    if (id === null || isAlive(id)) continue;
    await deleteNs(ns);
    report.namespaces.push(ns);
  }
  try {
    for await (const e of Deno.readDir(harnessRoot())) {
      if (!e.isDirectory || isAlive(e.name)) continue;
      await Deno.remove(`${harnessRoot()}/${e.name}`, { recursive: true });
      report.dirs.push(e.name);
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return report;
}
