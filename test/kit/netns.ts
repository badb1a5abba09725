/**
 * Network namespaces of the test kit: creating and deleting them, running commands inside, the
 * run directories of clusters, and the one sweeper for leftovers of processes that crashed.
 *
 * Ownership is recorded so that no prefix escapes: {@link createNs} writes an owner record
 * (`$TMPDIR/weft-kit-ns/<name>.json`: pid + process start time) before `ip netns add`, and a
 * cluster run writes `owner.json` into its run dir before it creates any namespace. At exit the
 * kit's exit hook (exit.ts) deletes every namespace this process still owns; {@link cleanupStale}
 * deletes namespaces whose owner is gone, whatever their prefix (`wharn-`, `wlnl-`, `wift-`, ...),
 * and leaves those of live processes (concurrent test files) alone.
 *
 * @example
 * ```ts
 * await createNs("wharn-w3k9z1-h1", { forward: true });
 * await nsExec("wharn-w3k9z1-h1", ["ip", "-j", "route"]);
 * const cmd = denoInNs("wharn-w3k9z1-h1", [script, "serve"]); // ip netns exec … deno run -A …
 * await cleanupStale();   // removes namespaces of dead processes only
 * ```
 */
import { atExit } from "./exit.ts";
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
  /** Only `ip netns add` (and the owner record): no `lo` up, no sysctls. */
  bare?: boolean;
}

/**
 * Creates a namespace with `lo` up and rp_filter off. rp_filter is relaxed because overlay
 * replies may arrive on another interface than the route back (vxlan device vs eth0); the
 * `default` value is set before any interface moves in, so every later interface inherits it.
 */
export async function createNs(name: string, setup: NsSetup = {}): Promise<void> {
  await sweepOnce();
  claimNs(name);
  await runOk(["ip", "netns", "add", name]);
  if (setup.bare) return;
  await runOk(["ip", "-n", name, "link", "set", "lo", "up"]);
  const sysctls = [
    "net.ipv4.conf.all.rp_filter=0",
    "net.ipv4.conf.default.rp_filter=0",
    `net.ipv4.ip_forward=${setup.forward ? 1 : 0}`,
    // No duplicate address detection: a fresh link-local address would stay tentative for a
    // second or two, and IPv6 neighbour discovery (so the first pings) would wait on it.
    "net.ipv6.conf.all.accept_dad=0",
    "net.ipv6.conf.default.accept_dad=0",
  ];
  await nsExec(name, ["sysctl", "-q", "-w", ...sysctls]);
}

/**
 * The command line of `deno run -A [flags] <args>` inside namespace `ns`, with the real deno
 * binary: `ip netns exec` execs it in place, so the pid of the spawned command is deno's own and
 * signals reach it. Pass it to `run`, `runOk`, `spawnLogged` or `Deno.Command`.
 */
export function denoInNs(ns: string, args: string[], opts: { flags?: string[] } = {}): string[] {
  return ["ip", "netns", "exec", ns, ...denoRun(args, opts)];
}

/**
 * The command line of `deno run -A [flags] <args>` in the test's own namespace, with the real
 * deno binary (e.g. a kit child such as children/kv_child.ts, or the compile tool).
 */
export function denoRun(args: string[], opts: { flags?: string[] } = {}): string[] {
  return [Deno.execPath(), "run", "-A", ...(opts.flags ?? []), ...args];
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
  dropClaim(ns);
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
  dropClaim(ns);
}

function tmpRoot(): string {
  return (Deno.env.get("TMPDIR") ?? "/tmp").replace(/\/$/, "");
}

/** Directory of namespace owner records. */
export function nsOwnerDir(): string {
  return `${tmpRoot()}/weft-kit-ns`;
}

const ownerFile = (ns: string) => `${nsOwnerDir()}/${ns}.json`;
let exitHooked = false;

/** Records this process as the owner of `ns` (before it exists, so no sweeper sees it unowned). */
function claimNs(ns: string): void {
  Deno.mkdirSync(nsOwnerDir(), { recursive: true });
  const owner: Owner = { pid: Deno.pid, startTime: procStartTime(Deno.pid) ?? "?" };
  Deno.writeTextFileSync(ownerFile(ns), JSON.stringify(owner));
  if (exitHooked) return;
  exitHooked = true;
  // One undo for all of them: whatever this process still owns at exit is deleted.
  atExit(() => {
    for (const name of ownedBy(Deno.pid)) deleteNsSync(name);
  });
}

function dropClaim(ns: string): void {
  try {
    Deno.removeSync(ownerFile(ns));
  } catch { /* not ours or already gone */ }
}

function readOwner(ns: string): Owner | null {
  try {
    return JSON.parse(Deno.readTextFileSync(ownerFile(ns))) as Owner;
  } catch {
    return null;
  }
}

/** Namespaces whose owner record names `pid`. */
function ownedBy(pid: number): string[] {
  const out: string[] = [];
  try {
    for (const e of Deno.readDirSync(nsOwnerDir())) {
      if (!e.name.endsWith(".json")) continue;
      const ns = e.name.slice(0, -5);
      if (readOwner(ns)?.pid === pid) out.push(ns);
    }
  } catch { /* no records */ }
  return out;
}

/** Parent of all run directories: `$TMPDIR/weft-harness` (or /tmp). */
export function harnessRoot(): string {
  return `${tmpRoot()}/weft-harness`;
}

export function runDirOf(runId: string): string {
  return `${harnessRoot()}/${runId}`;
}

interface Owner {
  pid: number;
  startTime: string;
}

/** True when the process that wrote `o` still runs (same pid and same start time). */
function ownerAlive(o: Owner): boolean {
  return procStartTime(o.pid) === o.startTime;
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
    return ownerAlive(JSON.parse(Deno.readTextFileSync(`${dir}/owner.json`)) as Owner);
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
  /** Run dirs (by run id) and etcd temp dirs (by name) removed. */
  dirs: string[];
}

/**
 * The one sweeper. Removes (processes inside killed first):
 * - namespaces with an owner record whose process is gone, whatever their prefix;
 * - cluster namespaces (`wharn-<run>-…`) without a record whose run's owner is gone;
 * - run dirs with a dead owner, owner records of namespaces that no longer exist, and etcd temp
 *   dirs (`weft-etcd-<pid>-…`) of dead processes.
 * Anything owned by a live process is never touched, so this is safe while other tests run.
 * Namespaces without any record (made by hand outside the kit) are left alone.
 */
export async function cleanupStale(): Promise<StaleReport> {
  const report: StaleReport = { namespaces: [], dirs: [] };
  const alive = new Map<string, boolean>();
  const isAlive = (id: string) => {
    if (!alive.has(id)) alive.set(id, runOwnerAlive(id));
    return alive.get(id)!;
  };
  const present = await listNs();
  // Pods before hosts is not needed: a veth pair dies with either end's namespace.
  for (const ns of present) {
    const owner = readOwner(ns);
    if (owner) {
      if (ownerAlive(owner)) continue;
    } else {
      const id = runIdOfNs(ns, HARNESS_PREFIX);
      if (id === null || isAlive(id)) continue;
    }
    await deleteNs(ns);
    report.namespaces.push(ns);
  }
  const have = new Set(present);
  try {
    for (const e of Deno.readDirSync(nsOwnerDir())) {
      const ns = e.name.replace(/\.json$/, "");
      const o = readOwner(ns);
      // A live owner may be between writing the record and `ip netns add`.
      if (!have.has(ns) && !(o && ownerAlive(o))) dropClaim(ns);
    }
  } catch { /* no records */ }
  const removeDead = async (root: string, pick: (name: string) => boolean) => {
    try {
      for await (const e of Deno.readDir(root)) {
        if (!e.isDirectory || !pick(e.name)) continue;
        await Deno.remove(`${root}/${e.name}`, { recursive: true }).catch(() => {});
        report.dirs.push(e.name);
      }
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
  };
  await removeDead(harnessRoot(), (name) => !isAlive(name));
  await removeDead(tmpRoot(), (name) => {
    const m = /^weft-etcd-(\d+)-/.exec(name);
    return m !== null && Number(m[1]) !== Deno.pid && procStartTime(Number(m[1])) === null;
  });
  return report;
}

let swept: Promise<unknown> | null = null;

/** {@link cleanupStale} once per process (the kit calls it before creating its first namespace). */
export function sweepOnce(): Promise<unknown> {
  swept ??= cleanupStale().catch((e) => console.warn(`kit: sweeping leftovers failed: ${e}`));
  return swept;
}
