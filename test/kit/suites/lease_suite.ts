/**
 * Lease lifecycle tests written once and run over every Registry implementation: the policy
 * (LeaseManager, PeerWatcher) must behave the same on etcd and on Deno KV.
 */
import assert from "node:assert/strict";
import { parseNetworkConfig } from "../../../src/config/network.ts";
import { LeaseManager, OutOfSubnetsError } from "../../../src/lease/manager.ts";
import { PeerWatcher } from "../../../src/lease/watch.ts";
import type { PeerEvent, StartList } from "../../../src/lease/watch.ts";
import { encodeLeaseValue, type Lease, type LeaseAttrs } from "../../../src/lease/codec.ts";
import { formatCidr, parseCidr } from "../../../src/base/ipv4.ts";
import { formatCidr6, parseCidr6 } from "../../../src/base/ipv6.ts";
import type { Registry } from "../../../src/registry/contract/registry.ts";
import { sleep, waitFor } from "../proc.ts";

/** A store shared by several clients, like agents on several hosts. */
export interface Store {
  /** Opens another client of the same store. */
  client(): Promise<Registry>;
  cleanup(): Promise<void>;
}

const cfgText = `{"Network":"198.19.0.0/16","Backend":{"Type":"alloc"}}`;
const cfg = parseNetworkConfig(cfgText);
const dualCfg = parseNetworkConfig(
  `{"Network":"198.19.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8:1::/56",` +
    `"Backend":{"Type":"alloc"}}`,
);
const v6OnlyCfg = parseNetworkConfig(
  `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"2001:db8:1::/56",` +
    `"Backend":{"Type":"alloc"}}`,
);

function manager(r: Registry, ttlSeconds = 60, c = cfg) {
  return new LeaseManager(r, c, { ttlSeconds, renewMarginMs: 60_000, retryMs: 200 });
}

/**
 * Runs a PeerWatcher in the background, collecting its events; `start`: a list to start from
 * (PeerWatcher.run's) instead of its own first list.
 */
function watch(r: Registry, ownKey: () => string | null = () => null, start?: StartList | null) {
  const ctl = new AbortController();
  const events: PeerEvent[] = [];
  const initial: Lease[][] = [];
  const lost: number[] = [];
  const w = new PeerWatcher(r, { ownKey, accept: () => true });
  const done = w.run(ctl.signal, {
    initial: (p) => void initial.push(p),
    events: (e) => void events.push(...e),
    ownDeleted: () => void lost.push(Date.now()),
  }, start);
  return {
    events,
    initial,
    lost,
    watcher: w,
    async stop() {
      ctl.abort();
      await done;
    },
  };
}

/**
 * `r` with a watch that delivers nothing (a stream that stays open and silent), so only re-lists
 * see changes; records the `since` of every listPeerLeases call in `lists`.
 */
function deaf(r: Registry, lists: (number | undefined)[]): Registry {
  return new Proxy(r, {
    get(target, prop) {
      if (prop === "watchLeases") {
        // deno-lint-ignore require-yield
        return async function* (_from: number, signal: AbortSignal) {
          if (!signal.aborted) {
            await new Promise((res) => signal.addEventListener("abort", res, { once: true }));
          }
        };
      }
      if (prop === "listPeerLeases") {
        return (since?: number) => {
          lists.push(since);
          return target.listPeerLeases(since);
        };
      }
      const v = Reflect.get(target, prop, target);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}

/**
 * A node as the agent runs one: acquire, then the watcher reporting writes and deletes of the own
 * key to the manager, and the renewal loop. `started` resolves with the acquired lease.
 */
function node(r: Registry, attrs: LeaseAttrs, ttlSeconds = 60, claimWaitMs = 3000) {
  const ctl = new AbortController();
  const mgr = new LeaseManager(r, cfg, {
    ttlSeconds,
    renewMarginMs: 60_000,
    retryMs: 200,
    claimWaitMs,
  });
  const w = new PeerWatcher(r, { ownKey: () => mgr.lease?.key ?? null, accept: () => true });
  const started = mgr.acquire(attrs, null, ctl.signal);
  const done = started.then(() =>
    Promise.all([
      w.run(ctl.signal, {
        initial: () => {},
        events: () => {},
        ownDeleted: (rev) => mgr.notifyDeleted(rev),
        ownWritten: (a, rev) => mgr.observeOwnWrite(a, rev),
      }),
      mgr.runRenewal(ctl.signal, () => {}),
    ])
  ).catch(() => {});
  return {
    mgr,
    started,
    async stop() {
      ctl.abort();
      await started.catch(() => {});
      await done;
    },
  };
}

/** The WeftNodeID stored in `key`'s value, or null. */
async function holderOf(r: Registry, key: string): Promise<string | null> {
  const l = await r.getLease(key);
  return l ? JSON.parse(l.value).WeftNodeID ?? null : null;
}

export function leaseLifecycleSuite(name: string, open: () => Promise<Store>) {
  const t = (title: string, fn: (s: Store) => Promise<void>) =>
    Deno.test({
      name: `${name}: ${title}`,
      sanitizeOps: false,
      sanitizeResources: false,
      async fn() {
        const s = await open();
        try {
          await fn(s);
        } finally {
          await s.cleanup();
        }
      },
    });

  t("allocates a subnet inside the network and writes flannel's JSON", async (s) => {
    const r = await s.client();
    const l = await manager(r).acquire({ publicIP: "198.18.0.11", backendType: "alloc" }, null);
    assert.ok(
      l.subnet.prefix === 24 && l.subnet.ip >= cfg.subnetMin && l.subnet.ip <= cfg.subnetMax,
    );
    const stored = await r.getLease(l.key);
    assert.equal(
      stored?.value,
      `{"PublicIP":"198.18.0.11","PublicIPv6":null,"BackendType":"alloc"}`,
    );
    assert.ok(stored!.expiresAt! > Date.now() + 50_000);
  });

  t(
    "reuses its lease by public IP after a restart, and the subnet.env subnet when free",
    async (s) => {
      const a = await manager(await s.client()).acquire({ publicIP: "198.18.0.11" }, null);
      const again = await manager(await s.client()).acquire({ publicIP: "198.18.0.11" }, null);
      assert.equal(again.key, a.key);
      const hinted = await manager(await s.client()).acquire(
        { publicIP: "198.18.0.12" },
        parseCidr("198.19.200.0/24"),
      );
      assert.equal(formatCidr(hinted.subnet), "198.19.200.0/24");
      // A hint that is taken is ignored.
      const other = await manager(await s.client()).acquire(
        { publicIP: "198.18.0.13" },
        parseCidr("198.19.200.0/24"),
      );
      assert.notEqual(other.key, hinted.key);
    },
  );

  t(
    "concurrent managers on separate clients get distinct subnets (create races retried)",
    async (s) => {
      const n = 20;
      const clients = await Promise.all(Array.from({ length: n }, () => s.client()));
      // A small network makes races on the same subnet likely.
      const small = parseNetworkConfig(`{"Network":"198.19.0.0/19","Backend":{"Type":"alloc"}}`);
      const leases = await Promise.all(
        clients.map((c, i) =>
          manager(c, 60, small).acquire({ publicIP: `198.18.1.${i + 1}` }, null)
        ),
      );
      assert.equal(new Set(leases.map((l) => l.key)).size, n);
      const { leases: all } = await clients[0].listLeases();
      assert.equal(all.length, n);
    },
  );

  t("out of subnets is a clear error naming the network and lease count", async (s) => {
    const tiny = parseNetworkConfig(`{"Network":"198.19.0.0/26","Backend":{"Type":"alloc"}}`);
    const r = await s.client();
    for (let i = 0; i < 3; i++) {
      await manager(r, 60, tiny).acquire({ publicIP: `198.18.2.${i}` }, null);
    }
    await assert.rejects(
      manager(r, 60, tiny).acquire({ publicIP: "198.18.2.9" }, null),
      (e: Error) =>
        e instanceof OutOfSubnetsError && /out of subnets/.test(e.message) &&
        /198\.19\.0\.0\/26/.test(e.message) && /3 leases/.test(e.message),
    );
  });

  t("a dead agent's lease expires and peers get a removal event", async (s) => {
    const w = watch(await s.client());
    try {
      // The lease must come after the watcher's first list, or it arrives there, not as an event.
      await waitFor("initial list", () => w.initial.length > 0, {
        timeoutMs: 10_000,
        intervalMs: 50,
        stopOnError: true,
      });
      const mgr = manager(await s.client(), 2);
      // Timed from before the create: removal can never come sooner than the TTL after this.
      const t0 = Date.now();
      const dead = await mgr.acquire({ publicIP: "198.18.0.21" }, null);
      await waitFor("added event", () => w.events.some((e) => e.type === "added"), {
        timeoutMs: 10_000,
        intervalMs: 50,
        stopOnError: true,
      });
      await waitFor(
        "removal after expiry",
        () => w.events.some((e) => e.type === "removed" && e.lease.key === dead.key),
        { timeoutMs: 20_000, intervalMs: 50, stopOnError: true },
      );
      assert.ok(Date.now() - t0 >= 500, "removed before its TTL could have run out");
      assert.equal(w.watcher.peers().length, 0);
    } finally {
      await w.stop();
    }
  });

  t("renewal keeps a short-TTL lease alive and moves its expiry", async (s) => {
    const r = await s.client();
    const m = manager(r, 3);
    const l = await m.acquire({ publicIP: "198.18.0.31" }, null);
    const ctl = new AbortController();
    const loop = m.runRenewal(ctl.signal, () => {});
    try {
      // Time must pass (past the 3 s TTL), no state to wait for: the lease must still be there.
      await sleep(5000);
      const now = await r.getLease(l.key);
      assert.ok(now, "lease expired although it was being renewed");
      assert.ok(now.expiresAt! > l.expiresAt!, "expiry did not move");
      assert.equal(m.lease?.key, l.key);
    } finally {
      ctl.abort();
      await loop;
    }
  });

  t("a reservation (no TTL) is used by its node, kept, and never taken by others", async (s) => {
    const r = await s.client();
    const value = encodeLeaseValue({ publicIP: "198.18.0.41", backendType: "alloc" });
    await r.createLease("198.19.77.0-24", value, null);
    // Another node walking the free list must not get it, even after ordinary leases expire.
    const other = await manager(await s.client(), 2).acquire(
      { publicIP: "198.18.0.42" },
      parseCidr("198.19.77.0/24"),
    );
    assert.notEqual(other.key, "198.19.77.0-24");
    const mine = await manager(await s.client(), 2).acquire({ publicIP: "198.18.0.41" }, null);
    assert.equal(mine.key, "198.19.77.0-24");
    assert.equal(mine.expiresAt, null);
    // Wait for the ordinary 2 s lease to expire (etcd expires leases late under load), then check.
    await waitFor("the ordinary 2 s lease to expire", async () => !(await r.getLease(other.key)), {
      timeoutMs: 20_000,
      intervalMs: 50,
      stopOnError: true,
    });
    const still = await r.getLease("198.19.77.0-24");
    assert.ok(still, "reservation was expired");
    assert.equal(still.expiresAt, null);
    assert.equal(await r.getLease(other.key), null, "ordinary 2 s lease should have expired");
  });

  t(
    "own lease deleted by someone else is re-acquired (same subnet), agent keeps running",
    async (s) => {
      const r = await s.client();
      const m = manager(r, 30);
      const l = await m.acquire({ publicIP: "198.18.0.51" }, null);
      const ctl = new AbortController();
      const changes: Lease[] = [];
      const w = watch(r, () => m.lease?.key ?? null);
      const loop = m.runRenewal(ctl.signal, (nl) => void changes.push(nl));
      const origLost = w.lost.length;
      try {
        await waitFor("watch started", () => w.initial.length > 0, {
          timeoutMs: 10_000,
          intervalMs: 50,
          stopOnError: true,
        });
        const admin = await s.client();
        assert.ok(await admin.deleteLease(l.key));
        await waitFor("loss noticed", () => w.lost.length > origLost, {
          timeoutMs: 10_000,
          intervalMs: 50,
          stopOnError: true,
        });
        m.notifyLost();
        await waitFor("re-acquired", () => changes.length > 0, {
          timeoutMs: 15_000,
          intervalMs: 50,
          stopOnError: true,
        });
        assert.equal(changes[0].key, l.key);
        const back = await admin.getLease(l.key);
        assert.ok(back && JSON.parse(back.value).PublicIP === "198.18.0.51");
      } finally {
        ctl.abort();
        await loop;
        await w.stop();
      }
    },
  );

  t("a peer that takes over our old subnet is not lost when we move to another", async (s) => {
    const r = await s.client();
    const mA = manager(r, 60);
    const first = await mA.acquire({ publicIP: "198.18.0.71" }, null);
    const w = watch(await s.client(), () => mA.lease?.key ?? null);
    try {
      await waitFor("initial list", () => w.initial.length > 0, {
        timeoutMs: 10_000,
        intervalMs: 50,
        stopOnError: true,
      });
      // Our lease vanishes and node B takes the subnet at once, before we react.
      const admin = await s.client();
      assert.ok(await admin.deleteLease(first.key));
      const bValue = encodeLeaseValue({ publicIP: "198.18.0.72" });
      assert.ok(await admin.createLease(first.key, bValue, 60));
      await waitFor("deletion seen", () => w.lost.length > 0, {
        timeoutMs: 10_000,
        intervalMs: 50,
        stopOnError: true,
      });
      // We re-acquire elsewhere; B's lease on our old key must now be a peer.
      const second = await mA.acquire({ publicIP: "198.18.0.71" }, null);
      assert.notEqual(second.key, first.key);
      const peerIps = () => w.watcher.peers().map((p) => `${p.key}=${p.attrs.publicIP}`);
      // The delete and B's create may reach the watcher in two polls: wait for B's lease itself.
      await waitFor(
        "B's lease seen as a peer",
        () => peerIps().includes(`${first.key}=198.18.0.72`),
        { timeoutMs: 10_000, intervalMs: 50, stopOnError: true },
      );
      assert.ok(peerIps().includes(`${first.key}=198.18.0.72`), JSON.stringify(peerIps()));
      assert.ok(!peerIps().some((p) => p.startsWith(`${second.key}=`)), "own lease as a peer");
      // And the next batch of events delivers it to the backend.
      // A key neither random pick took, so the create cannot fail.
      const spare = ["198.19.250.0-24", "198.19.251.0-24", "198.19.252.0-24"]
        .find((k) => k !== first.key && k !== second.key)!;
      assert.ok(
        await admin.createLease(spare, encodeLeaseValue({ publicIP: "198.18.0.73" }), 60),
        `create ${spare}`,
      );
      await waitFor(
        "B delivered as added",
        () =>
          w.events.some((e) =>
            e.type === "added" && e.lease.key === first.key &&
            e.lease.attrs.publicIP === "198.18.0.72"
          ),
        { timeoutMs: 10_000, intervalMs: 50, stopOnError: true },
      );
    } finally {
      await w.stop();
    }
  });

  t("a change the watch never delivers is found by the periodic re-list", async (s) => {
    const writer = await s.client();
    const k = (i: number) => `198.19.${100 + i}.0-24`;
    const value = (i: number) => encodeLeaseValue({ publicIP: `198.18.0.${100 + i}` });
    const a = await writer.createLease(k(1), value(1), 60);
    const b = await writer.createLease(k(2), value(2), 60);
    // Not a lease the watcher keeps, but one the registry counts.
    assert.ok(a && b && await writer.createLease(k(9), "{garbage", 60));
    const lists: (number | undefined)[] = [];
    const w = watch(deaf(await s.client(), lists));
    const view = () => w.watcher.peers().map((l) => `${l.key}@${l.revision}`).sort();
    try {
      await waitFor("initial list", () => w.initial.length > 0, {
        timeoutMs: 10_000,
        intervalMs: 50,
        stopOnError: true,
      });
      assert.deepEqual(view(), [`${k(1)}@${a.revision}`, `${k(2)}@${b.revision}`]);
      // A new lease and one rewritten with the same content (a new revision, same value).
      const c = await writer.createLease(k(3), value(3), 60);
      const a2 = await writer.updateLease(k(1), value(1), 60, a.revision);
      assert.ok(c && a2);
      lists.length = 0;
      assert.ok(await w.watcher.relist());
      assert.deepEqual(
        view(),
        [`${k(1)}@${a2.revision}`, `${k(2)}@${b.revision}`, `${k(3)}@${c.revision}`],
      );
      // Read as what was written since the first list, not every lease again.
      assert.equal(lists.length, 1);
      assert.ok(lists[0] !== undefined, "the re-list read every lease");
      // A delete is not in such a list: its count shows it, and every lease is read.
      assert.ok(await writer.deleteLease(k(2)));
      lists.length = 0;
      assert.ok(await w.watcher.relist());
      assert.deepEqual(view(), [`${k(1)}@${a2.revision}`, `${k(3)}@${c.revision}`]);
      assert.deepEqual(lists.map((x) => x === undefined), [false, true]);
      // An expiry likewise, once the registry no longer holds the key.
      const d = await writer.createLease(k(4), value(4), 1);
      assert.ok(d && await w.watcher.relist());
      assert.ok(view().includes(`${k(4)}@${d.revision}`));
      await waitFor(
        "expired lease gone from the registry",
        async () => !(await writer.listLeaseKeys()).keys.some((x) => x.key === k(4)),
        { timeoutMs: 20_000, intervalMs: 200, stopOnError: true },
      );
      assert.ok(await w.watcher.relist());
      assert.deepEqual(view(), [`${k(1)}@${a2.revision}`, `${k(3)}@${c.revision}`]);
      // Nothing changed: the same objects again.
      const before = w.watcher.peers();
      lists.length = 0;
      assert.ok(await w.watcher.relist());
      assert.ok(w.watcher.peers().every((l, i) => l === before[i]));
      assert.equal(lists.length, 1);
      assert.deepEqual(w.events, [], "the watch delivered nothing");
    } finally {
      await w.stop();
    }
  });

  t("malformed keys and values from any writer are skipped, good leases still flow", async (s) => {
    const r = await s.client();
    await r.createLease("not-a-subnet", `{"PublicIP":"198.18.0.1"}`, 60);
    await r.createLease("198.19.90.0-24", `{garbage`, 60);
    await r.createLease("198.19.91.0-24", `{"PublicIP":"banana"}`, 60);
    const m = manager(r);
    const { leases } = await m.list();
    assert.equal(leases.length, 0);
    const w = watch(await s.client());
    try {
      await waitFor("initial list", () => w.initial.length > 0, {
        timeoutMs: 10_000,
        intervalMs: 50,
        stopOnError: true,
      });
      await r.createLease("198.19.92.0-24", `{"PublicIP":"198.18.0.61"`, 60);
      const good = await m.acquire({ publicIP: "198.18.0.62" }, null);
      await waitFor(
        "good lease delivered",
        () => w.events.some((e) => e.type === "added" && e.lease.key === good.key),
        { timeoutMs: 10_000, intervalMs: 50, stopOnError: true },
      );
      assert.ok(!w.events.some((e) => e.lease.key === "198.19.92.0-24"));
    } finally {
      await w.stop();
    }
  });

  t(
    "a restarted node reclaims its lease at once; a second node with its public IP waits, " +
      "never flaps, and takes over when the first is gone",
    async (s) => {
      const ip = "198.18.0.81";
      const a = node(await s.client(), { publicIP: ip, nodeId: "node-a" }, 3);
      let b: ReturnType<typeof node> | null = null;
      const r = await s.client();
      try {
        const la = await a.started;
        // The same identity (a restart) takes its lease straight back: no claim is written.
        const again = await manager(await s.client(), 3).acquire(
          { publicIP: ip, nodeId: "node-a" },
          null,
        );
        assert.equal(again.key, la.key);
        assert.ok(!(await r.getLease(la.key))!.value.includes("WeftClaim"));
        b = node(await s.client(), { publicIP: ip, nodeId: "node-b" }, 3);
        void b.started.catch(() => {});
        await waitFor("the second node to see the conflict", () => b!.mgr.conflict !== null, {
          timeoutMs: 20_000,
          intervalMs: 50,
          stopOnError: true,
        });
        assert.match(b.mgr.conflict!, /198\.18\.0\.81.*node-a/);
        assert.equal(b.mgr.lease, null);
        assert.equal(await holderOf(r, la.key), "node-a");
        // Never flaps: over two renewals (3 s TTL) the lease stays the first node's, and the
        // second node holds no lease of its own.
        await sleep(3500);
        assert.equal(await holderOf(r, la.key), "node-a");
        assert.ok(b.mgr.conflict, "the second node stopped waiting while the first is alive");
        const { leases } = await manager(r).list();
        assert.equal(leases.filter((l) => l.attrs.publicIP === ip).length, 1);
        // The first node goes away; its lease expires and the second one takes the address.
        await a.stop();
        const lb = await b.started;
        assert.equal(lb.attrs.nodeId, "node-b");
        assert.equal(b.mgr.conflict, null);
        assert.equal(await holderOf(r, lb.key), "node-b");
      } finally {
        await a.stop();
        await b?.stop();
      }
    },
  );

  t(
    "an unanswered claim takes over a dead node's lease (a host replaced, same address)",
    async (s) => {
      const r = await s.client();
      const ip = "198.18.0.91";
      const gone = encodeLeaseValue({ publicIP: ip, backendType: "alloc", nodeId: "old-host" });
      assert.ok(await r.createLease("198.19.91.0-24", gone, 60));
      const m = new LeaseManager(await s.client(), cfg, {
        ttlSeconds: 60,
        renewMarginMs: 60_000,
        claimWaitMs: 500,
      });
      const l = await m.acquire({ publicIP: ip, backendType: "alloc", nodeId: "new-host" }, null);
      assert.equal(l.key, "198.19.91.0-24");
      const stored = await r.getLease(l.key);
      assert.equal(
        stored?.value,
        `{"PublicIP":"${ip}","PublicIPv6":null,"BackendType":"alloc","WeftNodeID":"new-host"}`,
      );
    },
  );

  t(
    "dual stack: one lease holds both halves, flanneld's key and JSON; reuse keeps both",
    async (s) => {
      const r = await s.client();
      const attrs = {
        publicIP: "198.18.0.61",
        publicIPv6: "2001:db8:ffff::61",
        backendType: "alloc",
      };
      const l = await manager(r, 60, dualCfg).acquire(attrs, null);
      assert.match(l.key, /^198\.19\.\d+\.0-24&2001:db8:1:[0-9a-f]{1,2}::-64$/);
      assert.equal(
        l.key,
        `${formatCidr(l.subnet).replace("/", "-")}&${formatCidr6(l.subnet6!).replace("/", "-")}`,
      );
      const stored = await r.getLease(l.key);
      assert.equal(
        stored?.value,
        `{"PublicIP":"198.18.0.61","PublicIPv6":"2001:db8:ffff::61","BackendType":"alloc"}`,
      );
      // Restart: the same lease by public IP, both halves.
      const again = await manager(await s.client(), 60, dualCfg).acquire(attrs, null);
      assert.equal(again.key, l.key);
      assert.equal(formatCidr6(again.subnet6!), formatCidr6(l.subnet6!));
      // The subnet.env subnets are taken back when free (the pods have addresses from both).
      const hinted = await manager(await s.client(), 60, dualCfg).acquire(
        { publicIP: "198.18.0.62", publicIPv6: "2001:db8:ffff::62" },
        parseCidr("198.19.200.0/24"),
        undefined,
        parseCidr6("2001:db8:1:c8::/64"),
      );
      assert.equal(hinted.key, "198.19.200.0-24&2001:db8:1:c8::-64");
      // Taken hints are ignored, per half.
      const other = await manager(await s.client(), 60, dualCfg).acquire(
        { publicIP: "198.18.0.63", publicIPv6: "2001:db8:ffff::63" },
        parseCidr("198.19.200.0/24"),
        undefined,
        parseCidr6("2001:db8:1:c8::/64"),
      );
      assert.ok(!other.key.startsWith("198.19.200.0-24"), other.key);
      assert.ok(!other.key.endsWith("&2001:db8:1:c8::-64"), other.key);
    },
  );

  t(
    "dual stack: enabling IPv6 on a running IPv4 cluster keeps every node's IPv4 subnet",
    async (s) => {
      const r = await s.client();
      // The reservation first: a random pick made before it could land on 198.19.78.0/24.
      const resv = encodeLeaseValue({ publicIP: "198.18.0.72", backendType: "alloc" });
      assert.ok(await r.createLease("198.19.78.0-24", resv, null));
      const v4 = await manager(r, 60).acquire({ publicIP: "198.18.0.71" }, null);
      // Both nodes restart with EnableIPv6: each keeps its IPv4 subnet and gains an IPv6 half.
      const a = await manager(await s.client(), 60, dualCfg).acquire(
        { publicIP: "198.18.0.71", publicIPv6: "2001:db8:ffff::71" },
        null,
      );
      assert.equal(formatCidr(a.subnet), formatCidr(v4.subnet));
      assert.equal(a.key, `${v4.key}&${formatCidr6(a.subnet6!).replace("/", "-")}`);
      assert.equal(await r.getLease(v4.key), null, "the IPv4-only key was left behind");
      const b = await manager(await s.client(), 60, dualCfg).acquire(
        { publicIP: "198.18.0.72", publicIPv6: "2001:db8:ffff::72" },
        null,
      );
      assert.ok(b.key.startsWith("198.19.78.0-24&2001:db8:1:"), b.key);
      assert.equal(b.expiresAt, null, "a reservation stays a reservation");
      assert.equal(await r.getLease("198.19.78.0-24"), null);
      assert.notEqual(formatCidr6(a.subnet6!), formatCidr6(b.subnet6!));
      const { leases } = await r.listLeases();
      assert.deepEqual(leases.map((l) => l.key).sort(), [a.key, b.key].sort());
      // The IPv4 half serves IPv4-only nodes still running the old config: same subnet for them.
      const old = await manager(await s.client(), 60).acquire({ publicIP: "198.18.0.71" }, null);
      assert.equal(old.key, a.key);
    },
  );

  t("dual stack: concurrent managers get distinct IPv4 and IPv6 halves", async (s) => {
    const n = 12;
    const clients = await Promise.all(Array.from({ length: n }, () => s.client()));
    // Small networks on both sides make races on each half likely, and on one half alone.
    const small = parseNetworkConfig(
      `{"Network":"198.19.0.0/19","EnableIPv6":true,"IPv6Network":"2001:db8:1::/60",` +
        `"Backend":{"Type":"alloc"}}`,
    );
    const leases = await Promise.all(
      clients.map((c, i) =>
        manager(c, 60, small).acquire(
          { publicIP: `198.18.1.${i + 1}`, publicIPv6: `2001:db8:ffff::1:${i + 1}` },
          null,
        )
      ),
    );
    assert.equal(new Set(leases.map((l) => formatCidr(l.subnet))).size, n);
    assert.equal(new Set(leases.map((l) => formatCidr6(l.subnet6!))).size, n);
    const { leases: all } = await clients[0].listLeases();
    assert.deepEqual(all.map((l) => l.key).sort(), leases.map((l) => l.key).sort());
  });

  t("IPv6-only: key 0.0.0.0-0&<v6>, PublicIP 0.0.0.0, reuse by PublicIPv6", async (s) => {
    const r = await s.client();
    const attrs = { publicIP: "0.0.0.0", publicIPv6: "2001:db8:ffff::81", backendType: "alloc" };
    const l = await manager(r, 60, v6OnlyCfg).acquire(attrs, null);
    assert.match(l.key, /^0\.0\.0\.0-0&2001:db8:1:[0-9a-f]{1,2}::-64$/);
    assert.equal(
      (await r.getLease(l.key))?.value,
      `{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8:ffff::81","BackendType":"alloc"}`,
    );
    // Another IPv6-only node (also PublicIP 0.0.0.0) is not mistaken for this one.
    const b = await manager(await s.client(), 60, v6OnlyCfg).acquire(
      { ...attrs, publicIPv6: "2001:db8:ffff::82" },
      null,
    );
    assert.notEqual(b.key, l.key);
    const again = await manager(await s.client(), 60, v6OnlyCfg).acquire(attrs, null);
    assert.equal(again.key, l.key);
    const hinted = await manager(await s.client(), 60, v6OnlyCfg).acquire(
      { ...attrs, publicIPv6: "2001:db8:ffff::83" },
      null,
      undefined,
      parseCidr6("2001:db8:1:c9::/64"),
    );
    assert.equal(hinted.key, "0.0.0.0-0&2001:db8:1:c9::-64");
    const { leases } = await r.listLeases();
    assert.equal(leases.length, 3);
  });

  t("two nodes with one public IP starting at once: exactly one holds a lease", async (s) => {
    const ip = "198.18.0.95";
    const x = node(await s.client(), { publicIP: ip, nodeId: "node-x" });
    const y = node(await s.client(), { publicIP: ip, nodeId: "node-y" });
    const r = await s.client();
    try {
      void x.started.catch(() => {});
      void y.started.catch(() => {});
      const settled = () =>
        (x.mgr.lease !== null) !== (y.mgr.lease !== null) &&
        (x.mgr.conflict !== null || y.mgr.conflict !== null);
      await waitFor("one holder and one waiting node", settled, {
        timeoutMs: 30_000,
        intervalMs: 50,
        stopOnError: true,
      });
      const holder = x.mgr.lease ? x : y;
      const { leases } = await manager(r).list();
      const named = leases.filter((l) => l.attrs.publicIP === ip);
      assert.deepEqual(named.map((l) => l.key), [holder.mgr.lease!.key]);
      assert.equal(named[0].attrs.nodeId, holder.mgr.lease!.attrs.nodeId);
    } finally {
      await x.stop();
      await y.stop();
    }
  });

  t(
    "a claim that lands between two renewals is answered, not taken for a lost lease",
    async (s) => {
      const r = await s.client();
      const ip = "198.18.0.97";
      // No watcher: only the renewal's failed compare can notice the claim.
      const m = new LeaseManager(r, cfg, {
        ttlSeconds: 3,
        renewMarginMs: 60_000,
        retryMs: 200,
      });
      const l = await m.acquire({ publicIP: ip, nodeId: "holder" }, null);
      const changes: Lease[] = [];
      const ctl = new AbortController();
      const loop = m.runRenewal(ctl.signal, (nl) => void changes.push(nl));
      try {
        const admin = await s.client();
        const cur = (await admin.getLease(l.key))!;
        const claim = encodeLeaseValue({ publicIP: ip, nodeId: "claimant", claim: true });
        assert.ok(await admin.updateLease(l.key, claim, 3, cur.revision));
        await waitFor("the claim answered", async () => {
          const now = await admin.getLease(l.key);
          return !!now && JSON.parse(now.value).WeftNodeID === "holder";
        }, { timeoutMs: 15_000, intervalMs: 50, stopOnError: true });
        const back = JSON.parse((await admin.getLease(l.key))!.value);
        assert.equal(back.WeftClaim, undefined, "answered with a claim of its own");
        assert.deepEqual(changes, [], "re-acquired instead of answering");
        assert.equal(m.lease?.key, l.key);
      } finally {
        ctl.abort();
        await loop;
      }
    },
  );

  t(
    "a watcher started from the acquisition's list sees what changed between that list and its start",
    async (s) => {
      const r = await s.client();
      const other = await s.client();
      // Listed by the acquisition, then deleted before the watcher starts.
      const gone = await manager(other).acquire({ publicIP: "198.18.0.51" }, null);
      const mgr = manager(r);
      const own = await mgr.acquire({ publicIP: "198.18.0.52" }, null);
      const start = mgr.takeListed();
      assert.ok(start, "the acquisition kept no list for the watcher");
      assert.equal(mgr.takeListed(), null, "the list is handed over once");
      assert.ok(typeof start.set.get(gone.key) === "object");
      // Written after the acquisition's list, before the watcher starts: only the watch, from
      // the list's revision + 1, can bring it (the watcher does not list).
      const added = await manager(other).acquire({ publicIP: "198.18.0.53" }, null);
      assert.ok(await other.deleteLease(gone.key));
      const w = watch(r, () => mgr.lease?.key ?? null, start);
      try {
        await waitFor("the peer view after the list's changes", () => {
          const keys = w.watcher.peers().map((l) => l.key).sort().join(",");
          return keys === added.key ? keys : undefined;
        }, { timeoutMs: 10_000, intervalMs: 50, stopOnError: true });
        assert.deepEqual(w.initial[0].map((l) => l.key), [gone.key]);
        assert.ok(w.events.some((e) => e.type === "added" && e.lease.key === added.key));
        assert.ok(w.events.some((e) => e.type === "removed" && e.lease.key === gone.key));
        // Our own lease, created after the list, is not taken for deleted.
        assert.equal(mgr.lost, false);
        assert.equal(mgr.lease?.key, own.key);
      } finally {
        await w.stop();
      }
    },
  );

  t(
    "a watcher started from the acquisition's list re-lists only what was written since",
    async (s) => {
      const other = await s.client();
      const peer = await manager(other).acquire({ publicIP: "198.18.0.61" }, null);
      // Counted by the registry, kept by no view: the start must count it too.
      assert.ok(await other.createLease("198.19.250.0-24", "{garbage", 60));
      const r = await s.client();
      const mgr = manager(r);
      const own = await mgr.acquire({ publicIP: "198.18.0.62" }, null);
      const start = mgr.takeListed();
      assert.ok(start, "the acquisition kept no list for the watcher");
      const listedAt = start.revision; // the set moves forward with each re-list
      const lists: (number | undefined)[] = [];
      const w = watch(deaf(r, lists), () => mgr.lease?.key ?? null, start);
      const view = () => w.watcher.peers().map((l) => l.key).sort().join(",");
      try {
        await waitFor("initial reconcile", () => w.initial.length > 0, {
          timeoutMs: 10_000,
          intervalMs: 50,
          stopOnError: true,
        });
        assert.equal(view(), peer.key);
        const added = await manager(other).acquire({ publicIP: "198.18.0.63" }, null);
        assert.ok(await w.watcher.relist());
        assert.equal(view(), [peer.key, added.key].sort().join(","));
        assert.deepEqual(lists, [listedAt], "the first re-list read every lease");
        // A delete still makes the next one list in full.
        assert.ok(await other.deleteLease(peer.key));
        lists.length = 0;
        assert.ok(await w.watcher.relist());
        assert.equal(view(), added.key);
        assert.equal(lists.length, 2);
        assert.equal(lists[1], undefined);
        assert.equal(mgr.lease?.key, own.key);
      } finally {
        await w.stop();
      }
    },
  );

  t("a write naming another address on our key means lost, whatever its revision", async (s) => {
    const m = manager(await s.client());
    const l = await m.acquire({ publicIP: "198.18.0.98", nodeId: "a" }, null);
    // A store replaced under the agent numbers its revisions anew: another node's lease on our
    // old key can carry a lower revision than our last write.
    m.observeOwnWrite({ publicIP: "198.18.0.99", nodeId: "b" }, l.revision - 1);
    assert.equal(m.lost, true);
  });
}
