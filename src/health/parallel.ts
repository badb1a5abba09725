/**
 * Bounded parallelism for per-peer work (probes): {@link mapLimit} runs at most `limit` at once,
 * so 500 peers finish in seconds without opening 500 things at once. Shared by `weft doctor` and
 * the agent's peer health.
 *
 * @example
 * ```ts
 * const rtts = await mapLimit(peers, 32, (p) => prober.probe(p.ip, opts));
 * ```
 */

/** `fn` over `items` with at most `limit` running at once; results in the items' order. */
export async function mapLimit<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T, index: number) => Promise<R>,
): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  return out;
}
