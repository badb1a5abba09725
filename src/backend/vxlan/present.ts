/**
 * The VTEP half of a full vxlan diff with thousands of peers, done on the dumps' bytes (as
 * route_present.ts does for routes): which wanted FDB and neighbour entries each VTEP already
 * holds, found by their numbers (an IPv4 address, a MAC) without parsing those entries; every
 * other entry is parsed and left to reconcile.ts's sweep, which then sees a few where it saw
 * thousands. Entries found are those the sweep would have found wanted.
 *
 * @example
 * ```ts
 * const v = splitVteps(reads, vteps, want); // { fdbHave, neighHave, tables: rest per VTEP }
 * sweepStale(nl, want, vteps, owned, v.tables, f, { route, fdb: v.fdbHave, neigh: v.neighHave });
 * ```
 */
import {
  type Fdb,
  type Neigh,
  type PlainNeigh,
  scanFdb,
  scanNeigh,
  type TableRead,
} from "../../../ffi/libnl/mod.ts";
import { quickIp } from "../route_text.ts";
import type { Vteps, VtepTables, Want } from "./reconcile.ts";

/** A VTEP's FDB and neighbour tables as read through its memos. */
export interface VtepReads {
  fdb: TableRead<Fdb>;
  neigh: TableRead<Neigh>;
}

/** Wanted entries by a number (a MAC, an address), duplicates chained; -1 ends a chain. */
class Chains {
  first = new Map<number, number>();
  next: Int32Array;
  constructor(n: number) {
    this.next = new Int32Array(n).fill(-1);
  }
  /** Adds entry `i` under `key` (call with falling `i`, so chains run in rising order). */
  add(key: number, i: number): void {
    const f = this.first.get(key);
    if (f !== undefined) this.next[i] = f;
    this.first.set(key, i);
  }
}

/**
 * Per wanted entry, whether its VTEP holds its FDB entry (self, towards its IPv4 address) and
 * its neighbour entry (permanent, IPv4); `tables`: per VTEP, every entry not found so, parsed.
 */
export function splitVteps(
  reads: readonly VtepReads[],
  vteps: Vteps,
  want: readonly Want[],
): { fdbHave: Uint8Array; neighHave: Uint8Array; tables: VtepTables[] } {
  const fdbHave = new Uint8Array(want.length);
  const neighHave = new Uint8Array(want.length);
  const byMac = new Chains(want.length);
  const fdbDst = new Float64Array(want.length).fill(-1);
  const byIp = new Chains(want.length);
  const neighMac = new Float64Array(want.length).fill(-1);
  for (let i = want.length - 1; i >= 0; i--) {
    const e = want[i].e;
    const dst = e.fdb ? quickIp(e.fdb.dst, e.fdb.dst.length) : -1;
    const mac = e.fdb ? macNumber(e.fdb.mac) : -1;
    if (dst >= 0 && mac >= 0) byMac.add(mac, i), fdbDst[i] = dst;
    const ip = e.neigh ? quickIp(e.neigh.ip, e.neigh.ip.length) : -1;
    const nmac = e.neigh ? macNumber(e.neigh.mac) : -1;
    if (ip >= 0 && nmac >= 0) byIp.add(ip, i), neighMac[i] = nmac;
  }
  const tables = reads.map((r, v): VtepTables => {
    const [dev, family] = vteps[v];
    const fdb: Fdb[] = [];
    const neigh: Neigh[] = [];
    scanFdb(r.fdb, dev, (x: PlainNeigh) => {
      let found = false;
      for (let i = byMac.first.get(x.mac) ?? -1; i >= 0; i = byMac.next[i]) {
        if (want[i].e.dev !== dev || fdbDst[i] !== x.ip) continue;
        fdbHave[i] = 1;
        found = true;
      }
      return found;
    }, (x) => fdb.push(x));
    scanNeigh(r.neigh, dev, family, (n: PlainNeigh) => {
      let found = false;
      for (let i = byIp.first.get(n.ip) ?? -1; i >= 0; i = byIp.next[i]) {
        if (want[i].e.dev !== dev || neighMac[i] !== n.mac) continue;
        neighHave[i] = 1;
        found = true;
      }
      return found;
    }, (n) => neigh.push(n));
    return { fdb, neigh };
  });
  return { fdbHave, neighHave, tables };
}

/** "aa:bb:cc:dd:ee:ff" (lower or upper case) as a 48-bit number; -1 when not spelled so. */
export function macNumber(text: string): number {
  if (text.length !== 17) return -1;
  let n = 0;
  for (let i = 0; i < 17; i++) {
    const c = text.charCodeAt(i);
    if (i % 3 === 2) {
      if (c !== 58) return -1; // ':'
      continue;
    }
    const d = c >= 48 && c <= 57 ? c - 48 : (c | 32) >= 97 && (c | 32) <= 102 ? (c | 32) - 87 : -1;
    if (d < 0) return -1;
    n = n * 16 + d;
  }
  return n;
}
