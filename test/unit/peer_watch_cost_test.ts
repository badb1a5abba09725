/**
 * The peer watcher's cost per event: with 2000 peers known, one changed lease is judged alone
 * (the accept filter runs for that key, not for every peer), and the events are still right.
 */
import assert from "node:assert/strict";
import { PeerWatcher } from "../../src/lease/watch.ts";
import { encodeLeaseValue } from "../../src/lease/codec.ts";
import { metrics } from "../../src/base/metrics.ts";
import type {
  Registry,
  RegistryLease,
  WatchMessage,
} from "../../src/registry/contract/registry.ts";

const N = 2000;
const value = (i: number) =>
  encodeLeaseValue({ publicIP: `198.18.${i >> 8}.${i & 255}`, backendType: "alloc" });
const key = (i: number) => `198.19.${i >> 3}.${(i & 7) * 32}-27`;

/** A registry that lists N leases, then yields `changes` one message at a time. */
function fakeRegistry(changes: WatchMessage[], consumed: () => void): Registry {
  const leases: RegistryLease[] = Array.from({ length: N }, (_, i) => ({
    key: key(i),
    value: value(i),
    revision: i + 1,
    expiresAt: null,
  }));
  return {
    kind: "fake",
    listLeases: () => Promise.resolve({ leases, revision: N }),
    listPeerLeases: () => Promise.resolve({ leases, revision: N }),
    async *watchLeases(_from: number, signal: AbortSignal) {
      for (const m of changes) yield m;
      consumed();
      if (!signal.aborted) {
        await new Promise((r) => signal.addEventListener("abort", r, { once: true }));
      }
    },
  } as unknown as Registry;
}

Deno.test("peer watch: one change among 2000 peers costs one accept, not 2000", async () => {
  let accepts = 0;
  const evs: string[] = [];
  const ctl = new AbortController();
  let initial = 0;
  const changes: WatchMessage[] = [
    {
      kind: "changes",
      revision: N + 1,
      changes: [{ type: "delete", key: key(5), revision: N + 1 }],
    },
    {
      kind: "changes",
      revision: N + 2,
      changes: [{
        type: "put",
        lease: { key: key(N), value: value(N), revision: N + 2, expiresAt: null },
      }],
    },
  ];
  const reg = fakeRegistry(changes, () => ctl.abort());
  const w = new PeerWatcher(reg, {
    ownKey: () => null,
    accept: () => {
      accepts++;
      return true;
    },
  });
  await w.run(ctl.signal, {
    initial: (p) => {
      initial = p.length;
      accepts = 0;
    },
    events: (e) => void evs.push(...e.map((x) => `${x.type} ${x.lease.key}`)),
  });
  assert.equal(initial, N);
  assert.deepEqual(evs, [`removed ${key(5)}`, `added ${key(N)}`]);
  assert.ok(accepts <= 2, `${accepts} accept calls for 2 changes`);
  assert.equal(w.peers().length, N);
  // Peers per family follow the same deltas (no dual-stack lease here).
  const text = metrics.render();
  assert.match(text, new RegExp(`weft_peers_family\\{family="ipv4"\\} ${N}\\n`));
  assert.match(text, /weft_peers_family\{family="ipv6"\} 0\n/);
});

Deno.test("peer watch: a re-list of unchanged leases reuses their decoded form", async () => {
  const w = new PeerWatcher(fakeRegistry([], () => {}), { ownKey: () => null, accept: () => true });
  assert.ok(await w.relist());
  const first = w.takePeers();
  assert.ok(await w.relist());
  const second = w.takePeers();
  assert.equal(second.length, N);
  // Same revision, same value: the very same Lease object, no JSON parsed again.
  assert.ok(second.every((l, i) => l === first[i]));
});
