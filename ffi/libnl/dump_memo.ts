/**
 * {@link DumpMemo}: the last result of one list call site (routes, neighbours, FDB), so a table
 * that stands still comes back as the very same array and a table that changed a little is
 * patched, not parsed again (dump.ts reads the bytes, dump_change.ts finds what changed).
 *
 * @example
 * ```ts
 * const memo = new DumpMemo<Route>();
 * const a = nl.routeList({}, memo);
 * nl.routeList({}, memo) === a; // while the table stands still
 * ```
 */
import { messageChange } from "./dump_change.ts";

/** What changed between two reads of a table: entries gone and entries new (by their bytes). */
export interface TableChange<T> {
  added: readonly T[];
  removed: readonly T[];
}

/**
 * The last result of one list call site, kept by its caller: passed to a list method
 * (`Netlink.routeList(filter, memo)`), it makes the method return the very array of its last
 * call when the kernel's table is byte for byte what it was (ageing fields aside), and a new one
 * otherwise. The arrays and their entries are frozen, as they are shared.
 *
 * When a table changed a little (at most a tenth of its entries), the memo also knows which
 * entries went and came ({@link changeSince}): messages are matched by their canonical bytes, so
 * only the changed ones are parsed, and the new result is the last one less the entries gone plus
 * those come (in another order than the kernel's). Nothing but the last dump's bytes is kept.
 */
export class DumpMemo<T> {
  /** The last dump's bytes: the first `#len` of a buffer this memo reuses (no copy per change). */
  #buf: Uint8Array | null = null;
  #len = 0;
  #result: readonly T[] = [];
  /** The result before the last change (held weakly) and what the change was. */
  #from: WeakRef<readonly T[]> | null = null;
  #change: TableChange<T> | null = null;

  /** `bytes` is a fresh dump; `parse` turns it into entries when it differs from the last. */
  take(bytes: Uint8Array, parse: (b: Uint8Array) => T[]): readonly T[] {
    const old = this.#buf && this.#buf.subarray(0, this.#len);
    if (old && equalBytes(old, bytes)) return this.#result;
    const c = old ? messageChange(old, bytes) : null;
    const change = c && { added: parse(c.added), removed: parse(c.removed) };
    // A few entries changed: the last result less those gone plus those come, not a new parse.
    const p = change && patched(this.#result, change);
    this.keep(p ?? parse(bytes), change, p ? change.added : undefined);
    this.#remember(bytes);
    return this.#result;
  }

  /** Keeps a copy of `bytes`, in the buffer of the last one when it fits and is not far larger. */
  #remember(bytes: Uint8Array): void {
    const cap = this.#buf?.length ?? 0;
    if (!this.#buf || bytes.length > cap || (cap > 64 * 1024 && bytes.length * 4 < cap)) {
      // Room for a few more entries: a table that grows by one is not copied into a new buffer.
      this.#buf = new Uint8Array(bytes.length + (bytes.length >> 3) + 1024);
    }
    this.#buf!.set(bytes);
    this.#len = bytes.length;
  }

  /**
   * Records `result` as the new last one, `change` as what differs from the one before; `fresh`:
   * the entries of `result` not yet frozen (default: all).
   */
  keep(result: T[], change: TableChange<T> | null, fresh: readonly T[] = result): void {
    for (let i = 0; i < fresh.length; i++) Object.freeze(fresh[i]);
    this.#from = new WeakRef(this.#result);
    this.#change = change;
    this.#result = Object.freeze(result);
  }

  /**
   * What changed from `from` (an earlier result of this memo) to the last result: nothing when
   * they are the same array; null when unknown (an older result, or too many changes).
   */
  changeSince(from: readonly T[]): TableChange<T> | null {
    if (from === this.#result) return { added: [], removed: [] };
    return this.#from?.deref() === from ? this.#change : null;
  }
}

/** `was` less `c.removed` plus `c.added` (entries equal field by field); null if one is missing. */
function patched<T>(was: readonly T[], c: TableChange<T>): T[] | null {
  const out = was.slice();
  for (const r of c.removed) {
    const i = out.findIndex((x) => sameFields(x, r));
    if (i < 0) return null;
    out[i] = out[out.length - 1];
    out.pop();
  }
  out.push(...c.added);
  return out;
}

/** Whether two parsed entries (flat objects of numbers, strings, booleans) are equal. */
function sameFields<T>(a: T, b: T): boolean {
  const x = a as Record<string, unknown>;
  const y = b as Record<string, unknown>;
  let n = 0;
  for (const k in x) {
    if (x[k] !== y[k]) return false;
    n++;
  }
  for (const _ in y) n--;
  return n === 0;
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  // Netlink messages are 4-byte aligned and both buffers start at offset 0 of their own.
  if (a.byteOffset % 4 === 0 && b.byteOffset % 4 === 0 && a.length % 4 === 0) {
    const x = new Uint32Array(a.buffer, a.byteOffset, a.length / 4);
    const y = new Uint32Array(b.buffer, b.byteOffset, b.length / 4);
    for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
    return true;
  }
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
