/**
 * Items by a number (an IPv4 address, a MAC as 48 bits), duplicates allowed, in typed arrays: a
 * full diff of 5000 peers looks up every kernel entry by its number, and a Map would make an
 * entry per key (and a heap number per address above 2^30).
 *
 * @example
 * ```ts
 * const ix = new NumIndex(Float64Array.of(0xc6130000, -1, 0xc6130000)); // -1: not indexed
 * for (let i = ix.first(0xc6130000); i >= 0; i = ix.next(i)) console.log(i); // 0, then 2
 * ```
 */
export class NumIndex {
  /** Per item, its number; negative: not indexed. */
  readonly keys: Float64Array;
  #head: Int32Array;
  #next: Int32Array;
  #shift: number;

  constructor(keys: Float64Array) {
    this.keys = keys;
    let bits = 4;
    while (1 << bits < 2 * keys.length) bits++;
    this.#shift = 32 - bits;
    this.#head = new Int32Array(1 << bits).fill(-1);
    this.#next = new Int32Array(keys.length).fill(-1);
    // Backwards, so each bucket lists its items in rising order.
    for (let i = keys.length - 1; i >= 0; i--) {
      if (keys[i] < 0) continue;
      const b = this.#bucket(keys[i]);
      this.#next[i] = this.#head[b];
      this.#head[b] = i;
    }
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
