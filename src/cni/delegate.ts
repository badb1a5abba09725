/**
 * Runs the delegate CNI plugin (e.g. `bridge`) found on `CNI_PATH`, the way libcni's invoke does:
 * same environment with `CNI_COMMAND` set, the config on stdin, its stdout and exit code back.
 *
 * @example
 * ```ts
 * const r = await execDelegate("bridge", "ADD", env, JSON.stringify(delegateConf));
 * r.code; // 0 and r.stdout is the CNI result
 * ```
 */
import { CniCode, CniError } from "./errors.ts";

export interface DelegateResult {
  code: number;
  stdout: string;
}

/** Bounded so a hung delegate cannot hang the runtime's ADD forever. */
export const DELEGATE_TIMEOUT_MS = 120_000;

/** Finds `name` in the colon-separated `cniPath`. */
export async function findPlugin(name: string, cniPath: string): Promise<string> {
  if (!/^[A-Za-z0-9_.-]+$/.test(name)) {
    throw new CniError(CniCode.InvalidConfig, `delegate plugin type "${name}" is not a plain name`);
  }
  const dirs = cniPath.split(":").filter((d) => d !== "");
  for (const dir of dirs) {
    const p = `${dir}/${name}`;
    try {
      if ((await Deno.stat(p)).isFile) return p;
    } catch {
      // not in this directory
    }
  }
  throw new CniError(
    CniCode.InvalidConfig,
    `failed to find plugin "${name}" in CNI_PATH [${dirs.join(" ")}]`,
    `install the CNI reference plugins (containernetworking-plugins) into one of these directories`,
  );
}

export async function execDelegate(
  type: string,
  command: string,
  env: Record<string, string | undefined>,
  stdin: string,
): Promise<DelegateResult> {
  const path = await findPlugin(type, env.CNI_PATH ?? "");
  const childEnv: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) if (v !== undefined) childEnv[k] = v;
  childEnv.CNI_COMMAND = command;
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(path, {
      env: childEnv,
      clearEnv: true,
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit", // the runtime logs plugin stderr
      signal: AbortSignal.timeout(DELEGATE_TIMEOUT_MS),
    }).spawn();
  } catch (e) {
    throw new CniError(
      CniCode.IoFailure,
      `cannot run delegate plugin ${path}`,
      (e as Error).message,
    );
  }
  const w = child.stdin.getWriter();
  await w.write(new TextEncoder().encode(stdin)).catch(() => {});
  await w.close().catch(() => {});
  const out = await child.output();
  if (out.signal) {
    throw new CniError(
      CniCode.TryAgainLater,
      `delegate plugin ${path} ${command} was killed by ${out.signal}`,
      `it did not finish within ${DELEGATE_TIMEOUT_MS / 1000} s`,
    );
  }
  return { code: out.code, stdout: new TextDecoder().decode(out.stdout) };
}
