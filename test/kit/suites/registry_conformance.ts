/**
 * The behaviour every Registry (etcd, Deno KV) must show, as Deno tests. Implementation-neutral:
 * it uses only the Registry interface, and timing bounds leave room for lazy expiry sweeps.
 *
 * @example
 * ```ts
 * registryConformance("kv", async () => {
 *   const registry = await openKvRegistry({ path: await Deno.makeTempFile() });
 *   return { registry, cleanup: () => registry.close() };
 * });
 * ```
 */
import assert from "node:assert/strict";
import type {
  LeaseChange,
  Registry,
  RegistryLease,
  WatchMessage,
} from "../../../src/registry/contract/registry.ts";
import { sleep, waitFor } from "../proc.ts";

/** A fresh, empty registry; `cleanup` closes it and removes whatever `open` made. */
export type OpenRegistry = () => Promise<{ registry: Registry; cleanup(): Promise<void> }>;

const VALUE_A = '{"PublicIP":"198.18.0.1","PublicIPv6":null,"BackendType":"host-gw"}';
const VALUE_B = '{"PublicIP":"198.18.0.2","PublicIPv6":null,"BackendType":"host-gw"}';
const VALUE_C = '{"PublicIP":"198.18.0.3","PublicIPv6":null}';

/** Tolerance for comparing expiry times computed on both sides of a call, ms. */
const SLACK_MS = 2500;

function assertExpiry(l: RegistryLease, ttlSeconds: number, what: string): void {
  assert.ok(l.expiresAt !== null, `${what}: expiresAt is null but the lease has a TTL`);
  const want = Date.now() + ttlSeconds * 1000;
  assert.ok(
    Math.abs(l.expiresAt - want) < SLACK_MS,
    `${what}: expiresAt ${new Date(l.expiresAt).toISOString()} is not about now + ${ttlSeconds} s`,
  );
}

/**
 * Watches from `from` until `enough(changes)` holds, then for `graceMs` more to catch extras, all
 * within `timeoutMs`. Fails on a snapshot: nothing in these tests justifies one.
 */
export async function collectChanges(
  registry: Registry,
  from: number,
  enough: (changes: LeaseChange[]) => boolean,
  opts: { timeoutMs?: number; graceMs?: number; onWatching?: () => void } = {},
): Promise<{ changes: LeaseChange[]; messages: WatchMessage[] }> {
  const ac = new AbortController();
  const changes: LeaseChange[] = [];
  const messages: WatchMessage[] = [];
  let timer = setTimeout(() => ac.abort(), opts.timeoutMs ?? 30_000);
  let satisfied = false;
  try {
    const it = registry.watchLeases(from, ac.signal)[Symbol.asyncIterator]();
    opts.onWatching?.();
    while (true) {
      const r = await it.next();
      if (r.done) break;
      const m = r.value;
      messages.push(m);
      assert.equal(m.kind, "changes", `unexpected ${m.kind} message at revision ${m.revision}`);
      if (m.kind === "changes") changes.push(...m.changes);
      if (!satisfied && enough(changes)) {
        satisfied = true;
        clearTimeout(timer);
        if (!opts.graceMs) {
          await it.return?.();
          break;
        }
        timer = setTimeout(() => ac.abort(), opts.graceMs);
      }
    }
  } finally {
    clearTimeout(timer);
    ac.abort();
  }
  return { changes, messages };
}

const brief = (c: LeaseChange) =>
  c.type === "put" ? `put ${c.lease.key}@${c.lease.revision}` : `delete ${c.key}@${c.revision}`;
const revOf = (c: LeaseChange) => c.type === "put" ? c.lease.revision : c.revision;

/** Registers the conformance tests for one Registry implementation under `name`. */
export function registryConformance(name: string, open: OpenRegistry): void {
  const test = (title: string, fn: (r: Registry) => Promise<void>) =>
    Deno.test(`${name} registry: ${title}`, async () => {
      const { registry, cleanup } = await open();
      try {
        await fn(registry);
      } finally {
        await cleanup();
      }
    });

  test("config is null when absent, then round-trips and overwrites", async (r) => {
    assert.equal(await r.getConfig(), null);
    const cfg = '{"Network":"198.19.0.0/16","Backend":{"Type":"vxlan"}}';
    await r.putConfig(cfg);
    assert.equal(await r.getConfig(), cfg);
    await r.putConfig('{"Network":"198.19.0.0/17"}');
    assert.equal(await r.getConfig(), '{"Network":"198.19.0.0/17"}');
    // The config is not a lease.
    assert.deepEqual((await r.listLeases()).leases, []);
  });

  test("createLease is create-only", async (r) => {
    assert.equal(await r.getLease("198.19.1.0-24"), null);
    const first = await r.createLease("198.19.1.0-24", VALUE_A, 60);
    assert.ok(first, "first create returned null");
    assert.equal(first.key, "198.19.1.0-24");
    assert.equal(first.value, VALUE_A);
    assert.ok(first.revision > 0, `revision ${first.revision} is not positive`);
    assertExpiry(first, 60, "created lease");
    assert.equal(await r.createLease("198.19.1.0-24", VALUE_B, 60), null, "second create won");
    const got = await r.getLease("198.19.1.0-24");
    assert.ok(got);
    assert.equal(got.value, VALUE_A);
    assert.equal(got.revision, first.revision);
    assertExpiry(got, 60, "stored lease");
  });

  test("partial lists: the keys alone, and the leases written since a revision", async (r) => {
    const a = await r.createLease("198.19.7.0-24", VALUE_A, 60);
    const b = await r.createLease("198.19.8.0-24", VALUE_B, null);
    assert.ok(a && b);
    const keys = await r.listLeaseKeys();
    assert.deepEqual(
      keys.keys.map((k) => `${k.key}@${k.revision}`).sort(),
      [`198.19.7.0-24@${a.revision}`, `198.19.8.0-24@${b.revision}`],
    );
    assert.ok(keys.revision >= b.revision, `keys listed at ${keys.revision} < ${b.revision}`);
    const c = await r.createLease("198.19.9.0-24", VALUE_C, 60);
    const a2 = await r.updateLease("198.19.7.0-24", VALUE_B, 60, a.revision);
    assert.ok(c && a2);
    assert.ok(await r.deleteLease("198.19.8.0-24"));
    // Written after b: c and a's rewrite, with their values; the delete of b is not reported.
    const since = await r.listPeerLeases(b.revision);
    assert.deepEqual(
      since.leases.map((l) => `${l.key}@${l.revision}=${l.value}`).sort(),
      [`198.19.7.0-24@${a2.revision}=${VALUE_B}`, `198.19.9.0-24@${c.revision}=${VALUE_C}`],
    );
    assert.ok(since.revision >= a2.revision);
    assert.deepEqual((await r.listPeerLeases(since.revision)).leases, []);
    assert.equal((await r.listPeerLeases()).leases.length, 2, "without since: every lease");
  });

  test("peer lists count every lease, also when they list only those written since", async (r) => {
    const a = await r.createLease("198.19.7.0-24", VALUE_A, 60);
    assert.ok(a && await r.createLease("198.19.8.0-24", VALUE_B, null));
    // A value no reader decodes is a lease all the same.
    assert.ok(await r.createLease("198.19.9.0-24", "{garbage", 60));
    const full = await r.listPeerLeases();
    assert.equal(full.count, 3);
    assert.equal(full.leases.length, 3);
    const none = await r.listPeerLeases(full.revision);
    assert.deepEqual({ leases: none.leases, count: none.count }, { leases: [], count: 3 });
    const a2 = await r.updateLease("198.19.7.0-24", VALUE_A, 60, a.revision);
    const d = await r.createLease("198.19.10.0-24", VALUE_C, 60);
    assert.ok(a2 && d);
    const some = await r.listPeerLeases(full.revision);
    assert.deepEqual(
      some.leases.map((l) => `${l.key}@${l.revision}`).sort(),
      [`198.19.10.0-24@${d.revision}`, `198.19.7.0-24@${a2.revision}`],
    );
    assert.equal(some.count, 4);
    // A delete is not listed, and counted out: 4 - 1, with the same two leases written since.
    assert.ok(await r.deleteLease("198.19.8.0-24"));
    const after = await r.listPeerLeases(full.revision);
    assert.equal(after.leases.length, 2);
    assert.equal(after.count, 3);
    assert.ok(after.revision > some.revision);
    const later = await r.listPeerLeases(after.revision);
    assert.deepEqual({ leases: later.leases, count: later.count }, { leases: [], count: 3 });
    // An expired lease is no longer counted once the registry no longer holds it.
    assert.ok(await r.createLease("198.19.11.0-24", VALUE_C, 1));
    await waitFor(
      "expired lease gone",
      async () => !(await r.listLeaseKeys()).keys.some((k) => k.key === "198.19.11.0-24"),
      { timeoutMs: 20_000, intervalMs: 200, stopOnError: true },
    );
    assert.equal((await r.listPeerLeases(later.revision)).count, 3);
  });

  test("concurrent creates of one key: exactly one wins", async (r) => {
    const results = await Promise.all(
      [VALUE_A, VALUE_B, VALUE_C].map((v) => r.createLease("198.19.2.0-24", v, 60)),
    );
    const winners = results.filter((x) => x !== null);
    assert.equal(winners.length, 1, `${winners.length} creates won`);
    assert.equal((await r.getLease("198.19.2.0-24"))?.value, winners[0]!.value);
  });

  test("updateLease compares the revision", async (r) => {
    const a = await r.createLease("198.19.3.0-24", VALUE_A, 60);
    assert.ok(a);
    const b = await r.updateLease("198.19.3.0-24", VALUE_B, 120, a.revision);
    assert.ok(b, "update with the current revision failed");
    assert.ok(b.revision > a.revision, `revision did not grow: ${a.revision} -> ${b.revision}`);
    assert.equal(b.value, VALUE_B);
    assertExpiry(b, 120, "renewed lease");
    assert.equal(
      await r.updateLease("198.19.3.0-24", VALUE_C, 60, a.revision),
      null,
      "update with a stale revision succeeded",
    );
    const got = await r.getLease("198.19.3.0-24");
    assert.equal(got?.value, VALUE_B);
    assert.equal(got?.revision, b.revision);
    // Dropping the TTL turns it into a reservation.
    const c = await r.updateLease("198.19.3.0-24", VALUE_C, null, b.revision);
    assert.ok(c);
    assert.equal(c.expiresAt, null);
    assert.equal((await r.getLease("198.19.3.0-24"))?.expiresAt, null);
    assert.equal(
      await r.updateLease("198.19.4.0-24", VALUE_A, 60, c.revision),
      null,
      "update of an absent key succeeded",
    );
    assert.equal(await r.getLease("198.19.4.0-24"), null);
  });

  test("deleteLease with and without a revision compare", async (r) => {
    const a = await r.createLease("198.19.5.0-24", VALUE_A, 60);
    assert.ok(a);
    const b = await r.updateLease("198.19.5.0-24", VALUE_B, 60, a.revision);
    assert.ok(b);
    assert.equal(await r.deleteLease("198.19.5.0-24", a.revision), false, "stale delete succeeded");
    assert.equal((await r.getLease("198.19.5.0-24"))?.value, VALUE_B);
    assert.equal(await r.deleteLease("198.19.5.0-24", b.revision), true);
    assert.equal(await r.getLease("198.19.5.0-24"), null);
    assert.equal(await r.deleteLease("198.19.5.0-24"), false, "deleting an absent key said true");
    assert.ok(await r.createLease("198.19.6.0-24", VALUE_C, null));
    assert.equal(await r.deleteLease("198.19.6.0-24"), true);
    assert.equal(await r.getLease("198.19.6.0-24"), null);
    assert.deepEqual((await r.listLeases()).leases, []);
  });

  test("listLeases: leases and reservations, not the config", async (r) => {
    await r.putConfig('{"Network":"198.19.0.0/16"}');
    const a = await r.createLease("198.19.7.0-24", VALUE_A, 300);
    const res = await r.createLease("198.19.8.0-24", VALUE_B, null);
    assert.ok(a && res);
    assert.equal(res.expiresAt, null);
    const { leases, revision } = await r.listLeases();
    const byKey = new Map(leases.map((l) => [l.key, l]));
    assert.deepEqual([...byKey.keys()].sort(), ["198.19.7.0-24", "198.19.8.0-24"]);
    assert.equal(byKey.get("198.19.8.0-24")!.expiresAt, null, "reservation has an expiry");
    assert.equal(byKey.get("198.19.8.0-24")!.value, VALUE_B);
    assertExpiry(byKey.get("198.19.7.0-24")!, 300, "listed lease");
    assert.equal(byKey.get("198.19.7.0-24")!.revision, a.revision);
    assert.ok(
      revision >= res.revision,
      `list revision ${revision} < write revision ${res.revision}`,
    );
  });

  test("a lease with a 2 s TTL expires: gone from list and delivered as a delete", async (r) => {
    const start = (await r.listLeases()).revision;
    const t0 = Date.now();
    const short = await r.createLease("198.19.9.0-24", VALUE_A, 2);
    const long = await r.createLease("198.19.10.0-24", VALUE_B, 300);
    const resv = await r.createLease("198.19.11.0-24", VALUE_C, null);
    assert.ok(short && long && resv);
    assertExpiry(short, 2, "short lease");
    // Watch from before the create: the put and, later, the expiry's delete must both arrive.
    const watched = collectChanges(
      r,
      start,
      (cs) => cs.some((c) => c.type === "delete" && c.key === "198.19.9.0-24"),
      { timeoutMs: 30_000 },
    );
    // Bounded wait for the expiry (etcd expires leases late on a loaded machine).
    const listed = await waitFor("the 2 s lease to leave the list", async () => {
      const keys = (await r.listLeases()).leases.map((l) => l.key).sort();
      return keys.includes("198.19.9.0-24") ? undefined : keys;
    }, { timeoutMs: 20_000, intervalMs: 200 });
    assert.deepEqual(listed, ["198.19.10.0-24", "198.19.11.0-24"], "expired lease still listed");
    assert.ok(Date.now() - t0 >= 1500, "lease vanished well before its TTL");
    assert.equal(await r.getLease("198.19.9.0-24"), null);
    const { changes } = await watched;
    const mine = changes.filter((c) =>
      (c.type === "put" ? c.lease.key : c.key) === "198.19.9.0-24"
    );
    assert.deepEqual(mine.map((c) => c.type), ["put", "delete"], mine.map(brief).join(", "));
    assert.ok(revOf(mine[1]) > revOf(mine[0]), "delete revision not after the put");
  });

  test("create over an expired, not yet deleted lease: delete then put, new lease stored", async (r) => {
    const key = "198.19.16.0-24";
    const start = (await r.listLeases()).revision;
    const old = await r.createLease(key, VALUE_A, 2);
    assert.ok(old && typeof old.expiresAt === "number");
    // Nothing reads the key meanwhile (a read may delete an expired lease): wait out the TTL.
    await sleep(Math.max(0, old.expiresAt! - Date.now()) + 50);
    const created = await r.createLease(key, VALUE_B, 60);
    assert.ok(created, "create over an expired lease returned null");
    assert.equal(created.value, VALUE_B);
    assert.ok(created.revision > old.revision + 1, "no revision left for the old lease's delete");
    assertExpiry(created, 60, "lease created over an expired one");
    const got = await r.getLease(key);
    assert.equal(got?.value, VALUE_B);
    assert.equal(got?.revision, created.revision);
    // A watcher from before sees: the old put, its delete, the new put (revision order).
    const { changes } = await collectChanges(
      r,
      start,
      (cs) => cs.some((c) => c.type === "put" && c.lease.revision === created.revision),
    );
    const mine = changes.filter((c) => (c.type === "put" ? c.lease.key : c.key) === key);
    const shown = mine.map(brief).join(", ");
    assert.deepEqual(mine.map((c) => c.type), ["put", "delete", "put"], shown);
    assert.equal(revOf(mine[0]), old.revision, shown);
    assert.ok(revOf(mine[1]) > old.revision && revOf(mine[1]) < created.revision, shown);
    assert.equal(revOf(mine[2]), created.revision, shown);
    const last = mine[2];
    assert.ok(last.type === "put" && last.lease.value === VALUE_B, shown);
    for (const c of changes) {
      if (c.type !== "put") continue;
      const e = c.lease.expiresAt;
      // A watch's expiry is a time, null (no TTL) or "unknown": never a stand-in like 0.
      assert.ok(e === null || e === "unknown" || e > Date.now() - 60_000, `${brief(c)}: ${e}`);
    }
  });

  test("watch delivers changes in revision order and resumes exactly", async (r) => {
    const start = (await r.listLeases()).revision;
    const ops: { type: "put" | "delete"; key: string; revision: number }[] = [];
    const put = (l: RegistryLease | null) => {
      assert.ok(l, "write failed");
      ops.push({ type: "put", key: l.key, revision: l.revision });
      return l;
    };
    // A watch started before the writes (from the revision before them).
    let watching!: () => void;
    const ready = new Promise<void>((res) => watching = res);
    const live = collectChanges(r, start, (cs) => cs.length >= 7, {
      graceMs: 300,
      onWatching: watching,
    });
    await ready;
    const a = put(await r.createLease("198.19.12.0-24", VALUE_A, 60));
    const b = put(await r.createLease("198.19.13.0-24", VALUE_B, null));
    await r.putConfig('{"Network":"198.19.0.0/16"}'); // not a lease change: must not appear
    put(await r.updateLease("198.19.12.0-24", VALUE_C, 60, a.revision));
    assert.ok(await r.deleteLease("198.19.13.0-24", b.revision));
    ops.push({ type: "delete", key: "198.19.13.0-24", revision: -1 });
    put(await r.createLease("198.19.14.0-24", VALUE_A, 60));
    put(await r.createLease("198.19.13.0-24", VALUE_C, 60));
    assert.ok(await r.deleteLease("198.19.14.0-24"));
    ops.push({ type: "delete", key: "198.19.14.0-24", revision: -1 });

    const check = (got: LeaseChange[], want: typeof ops, what: string) => {
      const shown = got.map(brief).join(", ");
      assert.deepEqual(
        got.map((c) => `${c.type} ${c.type === "put" ? c.lease.key : c.key}`),
        want.map((o) => `${o.type} ${o.key}`),
        `${what}: got ${shown}`,
      );
      for (let i = 0; i < got.length; i++) {
        if (want[i].revision > 0) {
          assert.equal(revOf(got[i]), want[i].revision, `${what}: ${shown}`);
        }
        if (i > 0) {
          assert.ok(revOf(got[i]) > revOf(got[i - 1]), `${what}: not increasing: ${shown}`);
        }
      }
      for (const c of got) if (c.type === "put") assert.ok(c.lease.value.startsWith('{"PublicIP"'));
    };
    const liveRes = await live;
    check(liveRes.changes, ops, "live watch");
    for (const m of liveRes.messages) {
      if (m.kind !== "changes") continue;
      const top = Math.max(...m.changes.map(revOf));
      assert.ok(m.revision >= top, `message revision ${m.revision} < its change ${top}`);
    }
    const revs = liveRes.changes.map(revOf);
    // Resume from history: from the 2nd change on, exactly the later ones, none twice.
    const resumed = await collectChanges(r, revs[1], (cs) => cs.length >= 5, { graceMs: 300 });
    check(resumed.changes, ops.slice(2), "resumed watch");
    // Resume from the last change: nothing old, then only the new write.
    const last = revs[revs.length - 1];
    const tail = collectChanges(r, last, (cs) => cs.length >= 1, {
      graceMs: 300,
      onWatching: () => {
        setTimeout(() => r.createLease("198.19.15.0-24", VALUE_B, 60).catch(() => {}), 300);
      },
    });
    const tailRes = await tail;
    assert.deepEqual(tailRes.changes.map(brief).map((s) => s.split("@")[0]), [
      "put 198.19.15.0-24",
    ]);
    assert.ok(revOf(tailRes.changes[0]) > last);
  });
}
