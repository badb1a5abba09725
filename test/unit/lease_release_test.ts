/** Releasing this node's lease (`weft cleanup --release-lease`) over a real Deno KV file. */
import assert from "node:assert/strict";
import { releaseOwnLease } from "../../src/lease/release.ts";
import { encodeLeaseValue } from "../../src/lease/codec.ts";
import { parseNetworkConfig } from "../../src/config/network.ts";
import { withTempKv } from "../kit/temp_kv.ts";
import type { Registry } from "../../src/registry/contract/registry.ts";

const cfg = parseNetworkConfig('{"Network":"198.19.0.0/16","Backend":{"Type":"vxlan"}}');
const value = (ip: string) => encodeLeaseValue({ publicIP: ip, backendType: "vxlan" });

const withKv = (fn: (r: Registry) => Promise<void>) => withTempKv("weft-release-", fn);

Deno.test("release: deletes only the lease naming our public IP; a dry run deletes nothing", () =>
  withKv(async (r) => {
    await r.createLease("198.19.1.0-24", value("198.18.0.1"), 60);
    await r.createLease("198.19.2.0-24", value("198.18.0.2"), 60);
    const dry = await releaseOwnLease(r, cfg, "198.18.0.2", { dryRun: true });
    assert.equal(dry.outcome, "released");
    assert.equal(dry.lease?.key, "198.19.2.0-24");
    assert.equal((await r.listLeases()).leases.length, 2);
    const real = await releaseOwnLease(r, null, "198.18.0.2", { dryRun: false });
    assert.equal(real.outcome, "released");
    assert.deepEqual((await r.listLeases()).leases.map((l) => l.key), ["198.19.1.0-24"]);
    const none = await releaseOwnLease(r, cfg, "198.18.0.9", { dryRun: false });
    assert.deepEqual(none, { outcome: "none", lease: null });
  }));

Deno.test("release: a lease renewed between the list and the delete is left alone", () =>
  withKv(async (r) => {
    const created = await r.createLease("198.19.3.0-24", value("198.18.0.3"), 60);
    assert.ok(created);
    const steps: string[] = [];
    const res = await releaseOwnLease(r, cfg, "198.18.0.3", {
      dryRun: false,
      // A running agent renews right after our list: the delete must see the new revision.
      step: async (p, what) => {
        steps.push(what);
        const v = await p;
        if (what === "listing leases") {
          assert.ok(await r.updateLease(created.key, created.value, 60, created.revision));
        }
        return v;
      },
    });
    assert.deepEqual(steps, ["listing leases", "deleting the lease"]);
    assert.equal(res.outcome, "changed");
    assert.ok(await r.getLease("198.19.3.0-24"));
  }));

Deno.test("release: another host's lease with our public IP is never released; ours is, by id", () =>
  withKv(async (r) => {
    const withId = (id: string) =>
      encodeLeaseValue({ publicIP: "198.18.0.4", backendType: "vxlan", nodeId: id });
    await r.createLease("198.19.4.0-24", withId("host-a"), 60);
    const other = await releaseOwnLease(r, cfg, "198.18.0.4", {
      dryRun: false,
      hints: { nodeId: "host-b" },
    });
    assert.equal(other.outcome, "other");
    assert.equal((await r.listLeases()).leases.length, 1);
    // Host b's own lease beside it is the one its identity picks and releases.
    await r.createLease("198.19.5.0-24", withId("host-b"), 60);
    const mine = await releaseOwnLease(r, cfg, "198.18.0.4", {
      dryRun: false,
      hints: { nodeId: "host-b" },
    });
    assert.equal(mine.outcome, "released");
    assert.equal(mine.lease?.key, "198.19.5.0-24");
    assert.deepEqual((await r.listLeases()).leases.map((l) => l.key), ["198.19.4.0-24"]);
  }));
