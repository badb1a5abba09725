/**
 * {@link DumpMemo}: the last read of one list call site (routes, neighbours, FDB), so a table
 * that stands still comes back as the very same {@link TableRead} and a table that changed a
 * little says which entries went and came (dump.ts reads the bytes, dump_change.ts finds what
 * changed). Nothing is parsed until asked: a diff of every entry scans the bytes
 * (route_list.ts, neigh.ts) and parses only the entries it does not recognise.
 *
 * @example
 * ```ts
 * const memo = new DumpMemo<Route>();
 * const a = nl.routeRead({}, memo);
 * nl.routeRead({}, memo) === a; // while the table stands still
 * a.entries();                  // every route, parsed on first ask
 * ```
 */
import { messageChange } from "./dump_change.ts";
import { libc } from "../libc/lib.ts";

/** What changed between two reads of a table: entries gone and entries new (by their bytes). */
export interface TableChange<T> {
  added: readonly T[];
  removed: readonly T[];
}

/**
 * One read of a kernel table through a {@link DumpMemo}: the same object while the table is byte
 * for byte what it was (ageing fields aside). Its bytes live in the memo's buffer, which the
 * next changed read reuses: they can be read while this is the memo's last read only. An older
 * read still serves as the identity of what its round saw (steady.ts).
 */
export class TableRead<T> {
  #memo: DumpMemo<T>;
  /** The entries, when the read was made of them; else once parsed. */
  #list: readonly T[] | null;
  #parse: ((b: Uint8Array) => T[]) | null;

  /** @internal Made by {@link DumpMemo}: from its bytes and their parser, or from a list. */
  constructor(memo: DumpMemo<T>, from: { parse: (b: Uint8Array) => T[] } | { list: T[] }) {
    this.#memo = memo;
    this.#parse = "parse" in from ? from.parse : null;
    this.#list = "list" in from ? freezeAll(from.list) : null;
  }

  /**
   * The canonical dump (dump.ts), or null for a read the memo was handed as a list
   * ({@link DumpMemo.keep}: an in-memory table). Throws when a newer read took the memo's buffer.
   */
  bytes(): Uint8Array | null {
    if (!this.#parse) return null;
    const b = this.#memo.bytesOf(this);
    if (!b) throw new Error("a table read was used after a newer read of its memo");
    return b;
  }

  /** Every entry (frozen, shared), parsed on the first call. */
  entries(): readonly T[] {
    return this.#list ??= freezeAll(this.#parse!(this.bytes()!));
  }
}

/**
 * The bytes of `read` ({@link TableRead.bytes}); for a read made of a list, null after handing
 * each entry to `other` (the scans' way through either kind).
 */
export function bytesOrEach<T>(read: TableRead<T>, other: (x: T) => void): Uint8Array | null {
  const b = read.bytes();
  if (!b) { for (const x of read.entries()) other(x); }
  return b;
}

/**
 * The last read of one list call site, kept by its caller: passed to a read method
 * (`Netlink.routeRead(filter, memo)`), it makes the method return the very {@link TableRead} of
 * its last call when the kernel's table is byte for byte what it was, and a new one otherwise.
 *
 * When a table changed a little (at most a tenth of its entries), the memo also knows which
 * entries went and came ({@link changeSince}): messages are matched by their canonical bytes, so
 * only the changed ones are parsed. Nothing but the last dump's bytes is kept.
 */
export class DumpMemo<T> {
  /** The last dump's bytes: the first `#len` of a buffer this memo reuses (no copy per change). */
  #buf: Uint8Array | null = null;
  #len = 0;
  #read: TableRead<T> | null = null;
  /** The read before the last change (held weakly) and what the change was. */
  #from: WeakRef<TableRead<T>> | null = null;
  #change: TableChange<T> | null = null;

  /** `bytes` is a fresh dump; `parse` turns messages of it into entries, when asked to. */
  take(bytes: Uint8Array, parse: (b: Uint8Array) => T[]): TableRead<T> {
    const old = this.#buf && this.#buf.subarray(0, this.#len);
    if (old && this.#read && equalBytes(old, bytes)) return this.#read;
    const c = old ? messageChange(old, bytes) : null;
    const change = c && { added: freezeAll(parse(c.added)), removed: freezeAll(parse(c.removed)) };
    this.#remember(bytes);
    return this.#next(new TableRead(this, { parse }), change);
  }

  /**
   * Records `list` as a new read, `change` as what differs from the last one: a table kept in
   * memory (a test's kernel) read through the memo as the kernel's are.
   */
  keep(list: T[], change: TableChange<T> | null): TableRead<T> {
    this.#buf = null;
    this.#len = 0;
    return this.#next(
      new TableRead(this, { list }),
      change && {
        added: freezeAll([...change.added]),
        removed: freezeAll([...change.removed]),
      },
    );
  }

  #next(read: TableRead<T>, change: TableChange<T> | null): TableRead<T> {
    this.#from = this.#read && new WeakRef(this.#read);
    this.#change = change;
    this.#read = read;
    return read;
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

  /** The bytes of `read` while it is the last read (for {@link TableRead.bytes}); else null. */
  bytesOf(read: TableRead<T>): Uint8Array | null {
    return read === this.#read && this.#buf ? this.#buf.subarray(0, this.#len) : null;
  }

  /**
   * What changed from `from` (an earlier read of this memo) to the last read: nothing when they
   * are the same read; null when unknown (an older read, or too many changes).
   */
  changeSince(from: TableRead<T>): TableChange<T> | null {
    if (from === this.#read) return { added: [], removed: [] };
    return this.#from?.deref() === from ? this.#change : null;
  }
}

function freezeAll<T>(xs: T[]): readonly T[] {
  for (let i = 0; i < xs.length; i++) Object.freeze(xs[i]);
  return Object.freeze(xs);
}

/** Whether `a` and `b` hold the same bytes: libc's memcmp for a table's dump (a steady round
 * compares three of ~0.3 MB each; right after a GC a JavaScript loop over them runs cold). */
function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  if (a.length >= 4096) return libc().memcmp(a, b, BigInt(a.length)) === 0;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
