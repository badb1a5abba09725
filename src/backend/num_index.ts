/**
 * Items by a number (an IPv4 address, a MAC as 48 bits), duplicates allowed, in typed arrays: a
 * full diff of 5000 peers looks up every kernel entry by its number, and a Map would make an
 * entry per key (and a heap number per address above 2^30).
 *
 * @example
 * ```ts
 * const ix = new NumIndex(Float64Array.of(0xc6130000, -1, 0xc6130000)); // -1: not indexed
 * ix.build(Float64Array.of(7)); // again, in the same arrays
 * for (let i = ix.first(0xc6130000); i >= 0; i = ix.next(i)) console.log(i); // 0, then 2
 * ```
 */
export class NumIndex {
  /** Per item, its number; negative: not indexed. */
  keys: Float64Array = new Float64Array(0);
  #head: Int32Array = new Int32Array(0);
  #next: Int32Array = new Int32Array(0);
  #shift = 32;

  constructor(keys?: Float64Array) {
    if (keys) this.build(keys);
  }

  /**
   * Indexes `keys` anew, in the arrays of the last build when they are large enough: a full
   * diff keeps one index for the process's life, so V8's code for it stays valid between diffs
   * minutes apart (code compiled for objects all gone is thrown away at the next GC).
   */
  build(keys: Float64Array): this {
    this.keys = keys;
    let bits = 4;
    while (1 << bits < 2 * keys.length) bits++;
    this.#shift = 32 - bits;
    if (this.#head.length !== 1 << bits) this.#head = new Int32Array(1 << bits);
    this.#head.fill(-1);
    if (this.#next.length < keys.length) this.#next = new Int32Array(keys.length);
    // Backwards, so each bucket lists its items in rising order.
    for (let i = keys.length - 1; i >= 0; i--) {
      this.#next[i] = -1;
      if (keys[i] < 0) continue;
      const b = this.#bucket(keys[i]);
      this.#next[i] = this.#head[b];
      this.#head[b] = i;
    }
    return this;
  }

  #bucket(k: number): number {
    const hi = Math.floor(k / 0x100000000);
    return Math.imul((k >>> 0) ^ Math.imul(hi, 0x85ebca6b), 0x9e3779b1) >>> this.#shift;
  }

  /** The first item with number `k`; -1 when none. */
  first(k: number): number {
    for (let i = this.#head[this.#bucket(k)]; i >= 0; i = this.#next[i]) {
      if (this.keys[i] === k) return i;
    }
    return -1;
  }

  /** The item after `i` with the same number; -1 when none. */
  next(i: number): number {
    const k = this.keys[i];
    for (let j = this.#next[i]; j >= 0; j = this.#next[j]) if (this.keys[j] === k) return j;
    return -1;
  }
}
