/**
 * Notices when the Deno KV file an agent has open is no longer the file at its path: deleted
 * (the agent would go on writing to an unlinked inode while new processes start a second, empty
 * cluster at the path), replaced by another file, or truncated. SQLite cannot see any of this
 * through its open descriptor, so the registry asks the guard before its operations (at most
 * once a second: one stat) and reopens the path when a usable file is there again.
 *
 * @example
 * ```ts
 * const g = FileGuard.of("/var/lib/weft/registry.kv"); // right after opening it
 * g.problem(); // null, or "was deleted", "was replaced by another file", "was truncated to 0 bytes"
 * ```
 */

/** The smallest a KV file is once opened (one SQLite page); less means it was cut. */
const MIN_SIZE = 512;

export class FileGuard {
  #dev: number;
  #ino: number;

  private constructor(readonly path: string, st: Deno.FileInfo) {
    this.#dev = st.dev;
    this.#ino = st.ino ?? 0;
  }

  /** A guard for the file now at `path` (the one just opened). */
  static of(path: string): FileGuard {
    return new FileGuard(path, Deno.statSync(path));
  }

  /** Re-arms the guard on `st`, the file now at the path (after reopening it). */
  rearm(st: Deno.FileInfo = Deno.statSync(this.path)): void {
    this.#dev = st.dev;
    this.#ino = st.ino ?? 0;
  }

  /**
   * The file at the path if it may be opened in place of the lost one, else throws saying why.
   * Never a missing path (opening it would create an empty file where an operator just deleted
   * one) and never a cut one (opening it would serve pages SQLite no longer has).
   */
  candidate(): Deno.FileInfo {
    const st = Deno.statSync(this.path); // NotFound: nothing there yet
    if (st.size < MIN_SIZE) throw new Error(`it is ${st.size} bytes, no database`);
    return st;
  }

  /** Throws when the path no longer holds `st` (the file changed while it was being opened). */
  static same(path: string, st: Deno.FileInfo): void {
    const now = Deno.statSync(path);
    if (now.dev !== st.dev || (now.ino ?? 0) !== (st.ino ?? 0)) {
      throw new Error("the file at the path changed while it was being opened");
    }
  }

  /** What happened to the opened file, or null while the path still holds it, intact. */
  problem(): string | null {
    let st: Deno.FileInfo;
    try {
      st = Deno.statSync(this.path);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return "was deleted";
      return `cannot be checked (${(e as Error).message})`;
    }
    if (st.dev !== this.#dev || (st.ino ?? 0) !== this.#ino) return "was replaced by another file";
    if (st.size < MIN_SIZE) return `was truncated to ${st.size} bytes`;
    return null;
  }
}

/** SQLite's words for a file that is no database (any more). */
export function isBrokenFileError(e: unknown): boolean {
  return /malformed|not a database|disk I\/O error|no such table/i.test(String(e));
}

/** The KV file is gone or broken: retried (never fatal), and /readyz says it until it is back. */
export class KvFileError extends Error {
  override name = "KvFileError";
}
