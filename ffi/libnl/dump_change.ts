/**
 * Which entries of a kernel table changed between two dumps (dump.ts), found by their canonical
 * bytes: each message is hashed, matched against the old dump's with the same hash, and only
 * the unmatched ones are copied out (to be parsed). For `DumpMemo.changeSince`.
 *
 * @example
 * ```ts
 * const c = messageChange(oldBytes, newBytes); // { added, removed }: messages back to back
 * ```
 */
import { libc } from "../libc/lib.ts";

/** More changed entries than this share of a table: no change (diff it all). */
const CHANGE_SHARE = 0.1;

/**
 * The messages of `old` not in `now` (removed) and of `now` not in `old` (added), each matched
 * at most once by its bytes, back to back; null when more than a tenth of them (at least 16)
 * changed.
 */
export function messageChange(
  old: Uint8Array,
  now: Uint8Array,
): { added: Uint8Array; removed: Uint8Array } | null {
  const offs = (b: Uint8Array) => {
    const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
    const o: number[] = [];
    for (let off = 0; off + 16 <= b.length;) {
      const len = v.getUint32(off, true);
      if (len < 16 || off + len > b.length) break;
      o.push(off);
      off += (len + 3) & ~3;
    }
    return o;
  };
  const a = offs(old);
  const b = offs(now);
  const limit = Math.max(16, Math.ceil(Math.max(a.length, b.length) * CHANGE_SHARE));
  if (Math.abs(a.length - b.length) > limit) return null;
  const va = new DataView(old.buffer, old.byteOffset, old.byteLength);
  const vb = new DataView(now.buffer, now.byteOffset, now.byteLength);
  // A dump keeps its order: the equal head and tail need no hashing. They are found as the
  // common prefix and suffix of the bytes (libc's memcmp), then counted in whole messages: up to
  // the first difference both dumps have their messages at the same offsets.
  const pre = commonPrefix(old, now);
  const nextA = (i: number) => i + 1 < a.length ? a[i + 1] : old.length;
  let head = 0;
  while (head < a.length && head < b.length && a[head] === b[head] && nextA(head) <= pre) head++;
  const suf = commonSuffix(old, now, pre);
  let ta = a.length;
  let tb = b.length;
  while (
    ta > head && tb > head && old.length - a[ta - 1] <= suf &&
    old.length - a[ta - 1] === now.length - b[tb - 1]
  ) ta--, tb--;
  // The rest: old messages by hash (chained), each matched at most once.
  const first = new Map<number, number>();
  const next = new Int32Array(ta - head).fill(-1);
  const matched = new Uint8Array(ta - head);
  for (let i = ta - 1; i >= head; i--) {
    const h = hashMessage(va, a[i]);
    next[i - head] = first.get(h) ?? -1;
    first.set(h, i - head);
  }
  const added: number[] = [];
  for (let j = head; j < tb; j++) {
    let i = first.get(hashMessage(vb, b[j])) ?? -1;
    while (i >= 0 && (matched[i] || !sameMessage(va, a[head + i], vb, b[j]))) i = next[i];
    if (i >= 0) matched[i] = 1;
    else if (added.push(b[j]) > limit) return null;
  }
  const removed: number[] = [];
  for (let i = 0; i < matched.length; i++) {
    if (!matched[i] && removed.push(a[head + i]) > limit) return null;
  }
  return { added: gather(now, vb, added), removed: gather(old, va, removed) };
}

/** Bytes compared per memcmp call while looking for the first (or last) difference. */
const CHUNK = 4096;

/** How many leading bytes `x` and `y` share. */
function commonPrefix(x: Uint8Array, y: Uint8Array): number {
  const n = Math.min(x.length, y.length);
  const c = libc();
  let at = 0;
  while (
    at + CHUNK <= n &&
    c.memcmp(x.subarray(at, at + CHUNK), y.subarray(at, at + CHUNK), BigInt(CHUNK)) === 0
  ) at += CHUNK;
  while (at < n && x[at] === y[at]) at++;
  return at;
}

/** How many trailing bytes `x` and `y` share, at most what is left after their common `pre`. */
function commonSuffix(x: Uint8Array, y: Uint8Array, pre: number): number {
  const n = Math.min(x.length, y.length) - pre;
  const c = libc();
  let k = 0;
  while (
    k + CHUNK <= n &&
    c.memcmp(
        x.subarray(x.length - k - CHUNK, x.length - k),
        y.subarray(y.length - k - CHUNK, y.length - k),
        BigInt(CHUNK),
      ) === 0
  ) k += CHUNK;
  while (k < n && x[x.length - 1 - k] === y[y.length - 1 - k]) k++;
  return k;
}

function hashMessage(v: DataView, off: number): number {
  const len = v.getUint32(off, true);
  let h = 0x811c9dc5;
  for (let i = off; i + 4 <= off + len; i += 4) h = Math.imul(h ^ v.getUint32(i, true), 16777619);
  return h >>> 0;
}

function sameMessage(va: DataView, a: number, vb: DataView, b: number): boolean {
  const len = va.getUint32(a, true);
  if (len !== vb.getUint32(b, true)) return false;
  let i = 0;
  for (; i + 4 <= len; i += 4) if (va.getUint32(a + i) !== vb.getUint32(b + i)) return false;
  for (; i < len; i++) if (va.getUint8(a + i) !== vb.getUint8(b + i)) return false;
  return true;
}

/** The messages at `offs` of `bytes`, copied back to back (each 4-byte aligned). */
function gather(bytes: Uint8Array, v: DataView, offs: number[]): Uint8Array {
  const size = (off: number) => (v.getUint32(off, true) + 3) & ~3;
  const out = new Uint8Array(offs.reduce((n, off) => n + size(off), 0));
  let at = 0;
  for (const off of offs) {
    out.set(bytes.subarray(off, off + Math.min(size(off), bytes.length - off)), at);
    at += size(off);
  }
  return out;
}
