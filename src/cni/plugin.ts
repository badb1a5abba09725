/**
 * The CNI plugin mode (like flannel's CNI plugin): ADD builds a `bridge` delegate config from the
 * plugin config and weft's subnet.env, saves it under `dataDir/<containerID>` and runs the
 * delegate; DEL runs the delegate with the saved config (so it works after subnet.env is gone)
 * and then forgets it; CHECK re-runs the saved config with the runtime's prevResult; VERSION lists
 * the supported CNI versions. Errors are CNI error JSON on stdout with a non-zero exit.
 *
 * @example
 * ```ts
 * const { code, stdout } = await runCni({
 *   env: { CNI_COMMAND: "VERSION" },
 *   stdin: '{"cniVersion":"1.0.0"}',
 * });
 * // code 0, stdout {"cniVersion":"1.0.0","supportedVersions":[...]}
 * ```
 */
import { CniCode, CniError, errorJson, subnetEnvCniError } from "./errors.ts";
import { execDelegate, findPlugin } from "./delegate.ts";
import { buildDelegate, type NetConf, parseNetConf } from "./netconf.ts";
import { readSubnetEnv, type SubnetEnv, SubnetEnvError } from "../config/subnet_env.ts";

export const SUPPORTED_VERSIONS = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"];
const LATEST = "1.0.0";

export interface CniRun {
  env: Record<string, string | undefined>;
  stdin: string;
}

export interface CniOutput {
  code: number;
  stdout: string;
}

function requireEnv(env: CniRun["env"], names: string[]): void {
  const missing = names.filter((n) => !env[n]);
  if (missing.length) {
    throw new CniError(
      CniCode.InvalidEnv,
      `required environment variable${missing.length > 1 ? "s" : ""} ${missing.join(", ")} not set`,
      "weft-cni is a CNI plugin: it is meant to be run by a container runtime",
    );
  }
  const id = env.CNI_CONTAINERID;
  // The ID names a file in dataDir: refuse anything that could escape it.
  if (id !== undefined && !/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(id)) {
    throw new CniError(
      CniCode.InvalidEnv,
      `CNI_CONTAINERID "${id}" is invalid`,
      "it must be letters, digits, '_', '.' and '-' only",
    );
  }
}

function checkVersion(v: string): void {
  if (v && !SUPPORTED_VERSIONS.includes(v)) {
    throw new CniError(
      CniCode.IncompatibleVersion,
      `incompatible CNI versions: config is "${v}", weft supports ${SUPPORTED_VERSIONS.join(", ")}`,
    );
  }
}

function scratchPath(conf: NetConf, id: string): string {
  return `${conf.dataDir}/${id}`;
}

async function saveScratch(conf: NetConf, id: string, delegate: unknown): Promise<void> {
  const path = scratchPath(conf, id);
  try {
    await Deno.mkdir(conf.dataDir, { recursive: true, mode: 0o700 });
    const tmp = `${path}.tmp-${Deno.pid}`;
    await Deno.writeTextFile(tmp, JSON.stringify(delegate), { mode: 0o600 });
    await Deno.rename(tmp, path);
  } catch (e) {
    throw new CniError(
      CniCode.IoFailure,
      `cannot save the delegate config to ${path}`,
      `${(e as Error).message}; check that ${conf.dataDir} is writable`,
    );
  }
}

/** The saved delegate config, or undefined when there is none. */
async function loadScratch(
  conf: NetConf,
  id: string,
): Promise<Record<string, unknown> | undefined> {
  const path = scratchPath(conf, id);
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw new CniError(CniCode.IoFailure, `cannot read ${path}`, (e as Error).message);
  }
  try {
    const v = JSON.parse(text);
    if (typeof v === "object" && v !== null && typeof v.type === "string") return v;
  } catch {
    // handled below
  }
  throw new CniError(CniCode.DecodingFailure, `saved delegate config ${path} is corrupt`);
}

/** weft's subnet.env, its problems as CNI errors (a missing file: try again later). */
async function readEnv(path: string): Promise<SubnetEnv> {
  try {
    return await readSubnetEnv(path);
  } catch (e) {
    throw e instanceof SubnetEnvError ? subnetEnvCniError(e) : e;
  }
}

async function cmdAdd(run: CniRun, conf: NetConf): Promise<CniOutput> {
  requireEnv(run.env, ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"]);
  const env = await readEnv(conf.subnetFile);
  const delegate = buildDelegate(conf, env);
  const id = run.env.CNI_CONTAINERID!;
  // A missing delegate fails ADD before anything is saved: nothing was created, and a saved
  // config would make every DEL look for the missing plugin again, failing forever.
  await findPlugin(delegate.type as string, run.env.CNI_PATH ?? "");
  // Saved before running the delegate: if ADD fails half-way, the runtime's DEL can clean up.
  await saveScratch(conf, id, delegate);
  try {
    return await execDelegate(delegate.type as string, "ADD", run.env, JSON.stringify(delegate));
  } catch (e) {
    // The delegate never ran (vanished or not executable): there is nothing for DEL to undo.
    // One killed on timeout may have done half its work, so its config stays for DEL.
    if (!(e instanceof CniError && e.code === CniCode.TryAgainLater)) {
      await Deno.remove(scratchPath(conf, id)).catch(() => {});
    }
    throw e;
  }
}

async function cmdDel(run: CniRun, conf: NetConf): Promise<CniOutput> {
  requireEnv(run.env, ["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"]);
  const id = run.env.CNI_CONTAINERID!;
  let delegate: Record<string, unknown> | undefined;
  try {
    delegate = await loadScratch(conf, id);
  } catch (e) {
    // Per the spec DEL should succeed when there is nothing usable left; say why on stderr.
    // Printed, not logged: the plugin's own output, and it loads no npm package (no logtape).
    console.error(`weft-cni: DEL ${id}: ${(e as Error).message}; nothing to delete`);
    await Deno.remove(scratchPath(conf, id)).catch(() => {});
    return { code: 0, stdout: "" };
  }
  if (!delegate) return { code: 0, stdout: "" }; // never added here, or already deleted
  const r = await execDelegate(delegate.type as string, "DEL", run.env, JSON.stringify(delegate));
  if (r.code === 0) await Deno.remove(scratchPath(conf, id)).catch(() => {});
  return r;
}

/**
 * Fills in the gateway of prevResult routes that have none. The bridge plugin installs such
 * routes via the interface's gateway, but plugins before v1.3.0 then look for a route without a
 * gateway in CHECK and fail ("Expected Route ... GW:<nil> not found", containernetworking/plugins
 * PR 887). Naming the gateway the kernel route really has makes CHECK pass on old and new ones.
 */
export function withRouteGateways(prev: unknown): unknown {
  if (typeof prev !== "object" || prev === null) return prev;
  const p = prev as { ips?: { address?: string; gateway?: string }[]; routes?: unknown };
  const gw = p.ips?.find((ip) => ip.gateway && !ip.address?.includes(":"))?.gateway;
  if (!gw || !Array.isArray(p.routes)) return prev;
  const routes = p.routes.map((r: { dst?: string; gw?: string }) =>
    r && !r.gw && r.dst && !r.dst.includes(":") ? { ...r, gw } : r
  );
  return { ...p, routes };
}

async function cmdCheck(run: CniRun, conf: NetConf): Promise<CniOutput> {
  requireEnv(run.env, ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"]);
  if (conf.cniVersion && SUPPORTED_VERSIONS.indexOf(conf.cniVersion) < 4) {
    throw new CniError(
      CniCode.IncompatibleVersion,
      `CHECK needs cniVersion 0.4.0 or later, config has "${conf.cniVersion}"`,
    );
  }
  const id = run.env.CNI_CONTAINERID!;
  const delegate = await loadScratch(conf, id);
  if (!delegate) {
    throw new CniError(
      CniCode.UnknownContainer,
      `container ${id} is unknown to weft-cni (no ${scratchPath(conf, id)})`,
    );
  }
  const env = await readEnv(conf.subnetFile);
  const want = buildDelegate(conf, env);
  const ranges = JSON.stringify((want.ipam as Record<string, unknown>).ranges);
  const had = JSON.stringify((delegate.ipam as Record<string, unknown> | undefined)?.ranges);
  if (ranges !== had) {
    throw new CniError(
      CniCode.InvalidConfig,
      `container ${id} got its address from ${had}, but this node's subnet is now ${ranges}`,
      "the node's lease changed; recreate the pod",
    );
  }
  const input: Record<string, unknown> = {
    ...delegate,
    prevResult: withRouteGateways(conf.prevResult),
  };
  if (conf.cniVersion) input.cniVersion = conf.cniVersion;
  return await execDelegate(delegate.type as string, "CHECK", run.env, JSON.stringify(input));
}

function cmdVersion(stdin: string): CniOutput {
  let asked = "";
  try {
    asked = JSON.parse(stdin)?.cniVersion ?? "";
  } catch {
    // VERSION may come with an empty stdin
  }
  const cniVersion = SUPPORTED_VERSIONS.includes(asked) ? asked : LATEST;
  return { code: 0, stdout: JSON.stringify({ cniVersion, supportedVersions: SUPPORTED_VERSIONS }) };
}

/** Runs one CNI command; never throws: failures come back as CNI error JSON. */
export async function runCni(opts: CniRun): Promise<CniOutput> {
  const command = opts.env.CNI_COMMAND ?? "";
  let version = LATEST;
  try {
    if (command === "VERSION") return cmdVersion(opts.stdin);
    const conf = parseNetConf(opts.stdin);
    if (conf.cniVersion) version = conf.cniVersion;
    checkVersion(conf.cniVersion);
    if (command === "ADD" && !conf.cniVersion) {
      // The runtime must say which result format it wants (DEL stays lenient: it cleans up).
      throw new CniError(
        CniCode.InvalidConfig,
        `the network config has no "cniVersion"`,
        `set it to one of ${SUPPORTED_VERSIONS.join(", ")} (e.g. "${LATEST}")`,
      );
    }
    switch (command) {
      case "ADD":
        return await cmdAdd(opts, conf);
      case "DEL":
        return await cmdDel(opts, conf);
      case "CHECK":
        return await cmdCheck(opts, conf);
      case "":
        throw new CniError(
          CniCode.InvalidEnv,
          "CNI_COMMAND is not set",
          "weft-cni is a CNI plugin: it is meant to be run by a container runtime",
        );
      default:
        throw new CniError(
          CniCode.InvalidEnv,
          `unknown CNI_COMMAND "${command}"`,
          "weft supports ADD, DEL, CHECK and VERSION",
        );
    }
  } catch (e) {
    const err = e instanceof CniError
      ? e
      : new CniError(CniCode.IoFailure, `weft-cni ${command} failed`, String(e));
    return { code: 1, stdout: errorJson(err, version) };
  }
}
