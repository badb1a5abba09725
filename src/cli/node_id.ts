/**
 * This host's identity for its lease (`WeftNodeID`): a random id made once and kept in a file
 * (`--node-id-file`, default /var/lib/weft/node-id), so a restarted agent is known as the same
 * host and takes its lease straight back, while another host publishing the same public IP is
 * told apart (see LeaseManager's claims). Not /etc/machine-id: cloned VMs and container images
 * share it, which is exactly where duplicate addresses come from.
 *
 * @example
 * ```ts
 * const id = await loadNodeId("/var/lib/weft/node-id"); // "3f0c…" (made on first use)
 * ```
 */
import { getLogger } from "@logtape/logtape";
import { ConfigError } from "../base/errors.ts";
import { NODE_ID_RE } from "../lease/codec.ts";

const log = getLogger(["weft", "main"]);

/**
 * Reads the id in `path`, making one when the file does not exist. When it cannot be kept (a
 * read-only filesystem) the agent runs without one: duplicate public IPs are then not detected,
 * which is logged. A file that holds something else is a ConfigError: it may be a wrong path.
 */
export async function loadNodeId(path: string): Promise<string | undefined> {
  let text: string | null = null;
  try {
    text = (await Deno.readTextFile(path)).trim();
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) return unkept(path, e);
  }
  if (text !== null) {
    if (NODE_ID_RE.test(text)) return text;
    throw new ConfigError(
      `--node-id-file ${path} does not hold a node id (1-64 letters, digits, ".", "_", "-"): ` +
        `is it the right file? Delete it to have weft make a new one`,
    );
  }
  const id = crypto.randomUUID();
  try {
    const dir = path.slice(0, path.lastIndexOf("/"));
    if (dir) await Deno.mkdir(dir, { recursive: true, mode: 0o755 });
    const tmp = `${path}.tmp-${Deno.pid}`;
    await Deno.writeTextFile(tmp, id + "\n", { mode: 0o644 });
    await Deno.rename(tmp, path);
  } catch (e) {
    return unkept(path, e);
  }
  log.info("made this host's node id {id} in {path}", { id, path });
  return id;
}

function unkept(path: string, e: unknown): undefined {
  log.warn(
    "cannot keep this host's node id in {path} ({error}); running without one: another host " +
      "publishing the same public IP is not detected. Point --node-id-file at a writable file",
    { path, error: (e as Error).message },
  );
  return undefined;
}

/** The id kept in `path`, or undefined when there is none (read only: never makes one). */
export async function readNodeId(path: string): Promise<string | undefined> {
  try {
    const text = (await Deno.readTextFile(path)).trim();
    return NODE_ID_RE.test(text) ? text : undefined;
  } catch {
    return undefined;
  }
}
