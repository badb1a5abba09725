/**
 * What one acquisition costs the registry when many nodes join at once (issue #12): a lost create
 * race picks again from the list already read, in a wider window, and peers' lease expiries are
 * not looked up one by one. A real Deno KV file behind a counting wrapper.
 */
import assert from "node:assert/strict";
import { LeaseManager } from "../../src/lease/manager.ts";
import { pickWindow } from "../../src/lease/acquire.ts";
import { encodeLeaseValue } from "../../src/lease/codec.ts";
import { parseNetworkConfig } from "../../src/config/network.ts";
import { withTempKv } from "../kit/temp_kv.ts";
import type {
  Registry,
  RegistryLease,
  WatchedExpiry,
} from "../../src/registry/contract/registry.ts";

const cfg = parseNetworkConfig(
  '{"Network":"198.19.0.0/16","SubnetLen":28,"Backend":{"Type":"host-gw"}}',
);
const value = (ip: string) => encodeLeaseValue({ publicIP: ip, backendType: "host-gw" });

/** `r` with each call counted; `loseCreates` creates answer "already taken" without writing. */
function counting(r: Registry, loseCreates = 0) {
  const calls = new Map<string, number>();
  const count = (name: string) => calls.set(name, (calls.get(name) ?? 0) + 1);
  let lose = loseCreates;
  const reg: Registry = {
    kind: r.kind,
    getConfig: () => r.getConfig(),
    putConfig: (t) => r.putConfig(t),
    listLeases: () => (count("listLeases"), r.listLeases()),
    listPeerLeases: async (since) => {
      count("listPeerLeases");
      if (since !== undefined) count("listPeerLeasesSince");
      // As etcd lists them: a TTL lease's expiry is unknown to a client that did not grant it.
      const l = await r.listPeerLeases(since);
      const unknown = (x: RegistryLease<WatchedExpiry>): RegistryLease<WatchedExpiry> =>
        x.expiresAt === null ? x : { ...x, expiresAt: "unknown" as const };
      return { ...l, leases: l.leases.map(unknown) };
    },
    listLeaseKeys: () => (count("listLeaseKeys"), r.listLeaseKeys()),
    getLease: (k) => (count("getLease"), r.getLease(k)),
    createLease: (k, v, ttl) => {
      count("createLease");
      return lose-- > 0 ? Promise.resolve(null) : r.createLease(k, v, ttl);
    },
    updateLease: (k, v, ttl, rev) => r.updateLease(k, v, ttl, rev),
    deleteLease: (k, rev) => r.deleteLease(k, rev),
    watchLeases: (rev, signal) => r.watchLeases(rev, signal),
    close: () => r.close(),
  };
  return { reg, calls };
}

const withKv = (fn: (r: Registry) => Promise<void>) => withTempKv("weft-acqcost-", fn);

Deno.test("acquire: lost create races pick again from the same list, in a wider window", () =>
  withKv(async (r) => {
    const { reg, calls } = counting(r, 3);
    const mgr = new LeaseManager(reg, cfg, { ttlSeconds: 600, renewMarginMs: 60_000 });
    const held = await mgr.acquire({ publicIP: "198.18.0.31", backendType: "host-gw" }, null);
    assert.equal(calls.get("createLease"), 4);
    // One list before the first pick, one after the create (tidy): none per lost race.
    assert.equal(calls.get("listPeerLeases"), 2);
    assert.equal((await r.getLease(held.key))?.revision, held.revision);
    assert.equal(pickWindow(0), 100, "the first pick is flanneld's: among the lowest 100 free");
    assert.ok(pickWindow(1) > pickWindow(0) && pickWindow(3) >= 6400);
  }));

Deno.test("acquire: peers' lease expiries are not looked up, this node's are", () =>
  withKv(async (r) => {
    for (let i = 1; i <= 40; i++) {
      await r.createLease(`198.19.${i}.0-28`, value(`198.18.1.${i}`), 600);
    }
    const mine = await r.createLease("198.19.77.0-28", value("198.18.0.41"), 600);
    const { reg, calls } = counting(r);
    const mgr = new LeaseManager(reg, cfg, { ttlSeconds: 600, renewMarginMs: 60_000 });
    const held = await mgr.acquire({ publicIP: "198.18.0.41", backendType: "host-gw" }, null);
    assert.equal(held.key, mine!.key, "its own lease is reused by public IP");
    assert.equal(typeof held.expiresAt, "number");
    assert.equal(calls.get("listLeases") ?? 0, 0);
    // One get per list for the one lease naming this node: not one per peer lease.
    assert.equal(calls.get("getLease"), calls.get("listPeerLeases"));
  }));

Deno.test("acquire: right after findPrevious, acquisition starts from its list", () =>
  withKv(async (r) => {
    const { reg, calls } = counting(r);
    const mgr = new LeaseManager(reg, cfg, { ttlSeconds: 600, renewMarginMs: 60_000 });
    assert.equal(await mgr.findPrevious("198.18.0.51"), null);
    const held = await mgr.acquire({ publicIP: "198.18.0.51", backendType: "host-gw" }, null);
    // findPrevious's list, then the check after the create: not a third.
    assert.equal(calls.get("listPeerLeases"), 2);
    assert.equal((await r.getLease(held.key))?.revision, held.revision);
  }));

Deno.test("acquire: past the lost races one list serves, the next pick lists keys only", () =>
  withKv(async (r) => {
    for (let i = 1; i <= 30; i++) {
      await r.createLease(`198.19.${i}.0-28`, value(`198.18.1.${i}`), 600);
    }
    const { reg, calls } = counting(r, 6);
    const mgr = new LeaseManager(reg, cfg, { ttlSeconds: 600, renewMarginMs: 60_000 });
    const held = await mgr.acquire({ publicIP: "198.18.0.61", backendType: "host-gw" }, null);
    assert.equal(calls.get("createLease"), 7);
    // One full list (values), keys only for the picks after it, and the check after the
    // create reads only the leases written since the full list.
    assert.equal(calls.get("listPeerLeases"), 2);
    assert.equal(calls.get("listPeerLeasesSince"), 1);
    assert.ok((calls.get("listLeaseKeys") ?? 0) >= 1);
    assert.ok(!/^198\.19\.([1-9]|[12]\d|30)\.0-28$/.test(held.key), "a taken subnet was picked");
    assert.equal((await r.getLease(held.key))?.revision, held.revision);
  }));

Deno.test("acquire: a node with our public IP that wrote between our list and our create is found", () =>
  withKv(async (r) => {
    const me = { publicIP: "198.18.0.71", backendType: "host-gw", nodeId: "node-a" };
    const rivalKey = "198.19.99.0-28";
    const { reg } = counting(r);
    const create = reg.createLease;
    let first = true;
    // Just before our first create: another node (another identity) takes a lease for our IP.
    reg.createLease = async (k, v, ttl) => {
      if (first) {
        first = false;
        await r.createLease(rivalKey, encodeLeaseValue({ ...me, nodeId: "node-b" }), 600);
      }
      return create(k, v, ttl);
    };
    const mgr = new LeaseManager(reg, cfg, {
      ttlSeconds: 600,
      renewMarginMs: 60_000,
      claimWaitMs: 50,
    });
    const held = await mgr.acquire(me, null);
    assert.notEqual(held.key, rivalKey);
    // Its holder never answered the claim: the lease read as dead and was released.
    assert.equal(await r.getLease(rivalKey), null);
    assert.equal((await r.getLease(held.key))?.revision, held.revision);
  }));
