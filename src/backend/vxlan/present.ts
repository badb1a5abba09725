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
import { NumIndex } from "../num_index.ts";
import type { PeerEntries } from "./entries.ts";
import type { Vteps, VtepTables, Want } from "./reconcile.ts";

/** A VTEP's FDB and neighbour tables as read through its memos. */
export interface VtepReads {
  fdb: TableRead<Fdb>;
  neigh: TableRead<Neigh>;
}

/** A wanted entry set's numbers: its FDB entry's MAC and IPv4 address, its neighbour's; -1: none. */
interface Keys {
  fdbMac: number;
  fdbDst: number;
  ip: number;
  mac: number;
}

/** The indexes of each full diff, rebuilt in place (num_index.ts says why). */
const macIndex = new NumIndex();
const ipIndex = new NumIndex();

/** Per wanted entry set (wants are cached per lease): made once, not per full diff. */
const keyCache = new WeakMap<PeerEntries, Keys>();

function keysOf(e: PeerEntries): Keys {
  let k = keyCache.get(e);
  if (k) return k;
  const fdbDst = e.fdb ? quickIp(e.fdb.dst, e.fdb.dst.length) : -1;
  const fdbMac = e.fdb ? macNumber(e.fdb.mac) : -1;
  const ip = e.neigh ? quickIp(e.neigh.ip, e.neigh.ip.length) : -1;
  const mac = e.neigh ? macNumber(e.neigh.mac) : -1;
  k = fdbDst < 0 || fdbMac < 0 ? { fdbMac: -1, fdbDst: -1, ip, mac } : { fdbMac, fdbDst, ip, mac };
  if (ip < 0 || mac < 0) k.ip = k.mac = -1;
  keyCache.set(e, k);
  return k;
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
  const fdbMac = new Float64Array(want.length);
  const fdbDst = new Float64Array(want.length);
  const ip = new Float64Array(want.length);
  const neighMac = new Float64Array(want.length);
  for (let i = 0; i < want.length; i++) {
    const k = keysOf(want[i].e);
    fdbMac[i] = k.fdbMac;
    fdbDst[i] = k.fdbDst;
    ip[i] = k.ip;
    neighMac[i] = k.mac;
  }
  const devs = Int32Array.from(want, (w) => w.e.dev);
  const byMac = macIndex.build(fdbMac);
  const byIp = ipIndex.build(ip);
  const tables = reads.map((r, v): VtepTables => {
    const [dev, family] = vteps[v];
    const fdb: Fdb[] = [];
    const neigh: Neigh[] = [];
    scanFdb(
      r.fdb,
      dev,
      (x: PlainNeigh) => mark(byMac, x.mac, x.ip, fdbDst, dev, devs, fdbHave),
      (x) => fdb.push(x),
    );
    scanNeigh(
      r.neigh,
      dev,
      family,
      (n: PlainNeigh) => mark(byIp, n.ip, n.mac, neighMac, dev, devs, neighHave),
      (n) => neigh.push(n),
    );
    return { fdb, neigh };
  });
  return { fdbHave, neighHave, tables };
}

/**
 * Marks in `have` each wanted entry under `key` in `ix` on `dev` whose other number (`expect`) is
 * `value`; whether there was one.
 */
function mark(
  ix: NumIndex,
  key: number,
  value: number,
  expect: Float64Array,
  dev: number,
  devs: Int32Array,
  have: Uint8Array,
): boolean {
  let found = false;
  for (let i = ix.first(key); i >= 0; i = ix.next(i)) {
    if (devs[i] !== dev || expect[i] !== value) continue;
    have[i] = 1;
    found = true;
  }
  return found;
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
