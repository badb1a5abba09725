/**
 * The Deno KV write path of a joining node (issue #12): mutations read and commit on a handle of
 * their own (so the read-check-commit under the write lock never queues behind the registry's
 * lists on one handle), and the check after a create reads the change log since the list it
 * made instead of every lease again. Real KV files behind counting Proxies.
 */
import assert from "node:assert/strict";
import { KvRegistry } from "../../src/registry/kv/mod.ts";
import { MAX_LOG_SINCE } from "../../src/registry/kv/partial_list.ts";

const PREFIX = "/weft-test";
const value = (i: number) => `{"PublicIP":"198.18.7.${i}","PublicIPv6":null}`;

/** `kv` with its lease scans, reads and commits counted. */
function counted(kv: Deno.Kv) {
  const n = { scans: 0, gets: 0, atomics: 0 };
  const proxy = new Proxy(kv, {
    get(target, prop) {
      if (prop === "list") {
        return (sel: Deno.KvListSelector, opts?: Deno.KvListOptions) => {
          if ("prefix" in sel && sel.prefix.includes("subnets")) n.scans++;
          return target.list(sel, opts);
        };
      }
      if (prop === "get" || prop === "getMany") n.gets++;
      if (prop === "atomic") n.atomics++;
      const v = Reflect.get(target, prop, target);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
  return { kv: proxy, n };
}

async function withFile(fn: (path: string) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "weft-kv-write-path-" });
  try {
    await fn(`${dir}/r.kv`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("kv: mutations read and commit on the write handle, not the one lists use", () =>
  withFile(async (path) => {
    const main = counted(await Deno.openKv(path));
    const write = counted(await Deno.openKv(path));
    const reg = new KvRegistry(
      main.kv,
      { path, prefix: PREFIX, wakeOnChange: false },
      null,
      write.kv,
    );
    try {
      const l = await reg.createLease("198.19.1.0-29", value(1), 3600);
      assert.ok(l);
      assert.ok(await reg.updateLease(l.key, value(1), 3600, l.revision));
      assert.equal(main.n.atomics, 0, "no commit on the main handle");
      assert.ok(write.n.atomics >= 2, `commits on the write handle: ${write.n.atomics}`);
      const before = write.n.gets;
      assert.equal((await reg.listLeases()).leases.length, 1);
      assert.equal(write.n.gets, before, "the list reads on the main handle only");
    } finally {
      await reg.close();
    }
  }));

Deno.test("kv: leases written since a recent revision are read from the change log, not listed", () =>
  withFile(async (path) => {
    const main = counted(await Deno.openKv(path));
    const reg = new KvRegistry(main.kv, { path, prefix: PREFIX, wakeOnChange: false });
    try {
      const a = (await reg.createLease("198.19.1.0-29", value(1), 3600))!;
      const b = (await reg.createLease("198.19.1.8-29", value(2), 3600))!;
      const { revision: since } = await reg.listLeases();
      const scans = main.n.scans;
      await reg.updateLease(a.key, value(3), 3600, a.revision);
      await reg.createLease("198.19.1.16-29", value(4), 3600);
      await reg.createLease("198.19.1.24-29", value(5), 3600);
      await reg.deleteLease("198.19.1.24-29");
      const got = await reg.listPeerLeases(since);
      assert.equal(main.n.scans, scans, "no scan of the leases");
      const want = await reg.listLeases();
      assert.deepEqual(got.leases, want.leases.filter((l) => l.revision > since));
      assert.deepEqual(got.leases.map((l) => l.key), ["198.19.1.0-29", "198.19.1.16-29"]);
      assert.equal(got.revision, want.revision);
      assert.ok(!got.leases.some((l) => l.key === b.key), "b was written before `since`");
      // Nothing written since: no leases, the same revision, still no scan.
      const scans2 = main.n.scans;
      assert.deepEqual(await reg.listPeerLeases(want.revision), {
        leases: [],
        count: 3,
        revision: want.revision,
      });
      assert.equal(main.n.scans, scans2);
    } finally {
      await reg.close();
    }
  }));

Deno.test("kv: leases written since a revision too old or compacted away are listed", () =>
  withFile(async (path) => {
    const main = counted(await Deno.openKv(path));
    const reg = new KvRegistry(main.kv, {
      path,
      prefix: PREFIX,
      wakeOnChange: false,
      keepLog: 1,
    });
    try {
      await reg.createLease("198.19.1.0-29", value(1), 3600);
      await reg.createLease("198.19.1.8-29", value(2), 3600);
      await reg.createLease("198.19.1.16-29", value(3), 3600);
      assert.ok(await reg.compact() > 0);
      const scans = main.n.scans;
      const got = await reg.listPeerLeases(1);
      assert.equal(main.n.scans, scans + 1, "the log since 1 is gone: listed");
      assert.deepEqual(got.leases.map((l) => l.key), ["198.19.1.16-29", "198.19.1.8-29"]);
      const far = await reg.listPeerLeases(got.revision - MAX_LOG_SINCE - 1);
      assert.equal(main.n.scans, scans + 2, `more than ${MAX_LOG_SINCE} revisions: listed`);
      assert.equal(far.leases.length, 3);
    } finally {
      await reg.close();
    }
  }));

Deno.test("kv: the keys after a recent list are caught up from the change log, not listed", () =>
  withFile(async (path) => {
    const main = counted(await Deno.openKv(path));
    const reg = new KvRegistry(main.kv, { path, prefix: PREFIX, wakeOnChange: false });
    try {
      await reg.createLease("198.19.1.0-29", value(1), 3600);
      const b = (await reg.createLease("198.19.1.8-29", value(2), 3600))!;
      // Nothing listed yet: the keys come from a list.
      let scans = main.n.scans;
      await reg.listLeaseKeys();
      assert.equal(main.n.scans, scans + 1, "no list to start from: listed");
      await reg.createLease("198.19.1.16-29", value(3), 3600);
      await reg.deleteLease(b.key);
      await reg.createLease("198.19.1.24-29", value(4), 3600);
      scans = main.n.scans;
      const got = await reg.listLeaseKeys();
      assert.equal(main.n.scans, scans, "no scan of the leases");
      const want = await reg.listLeases();
      assert.deepEqual(got, {
        keys: want.leases.map((l) => ({ key: l.key, revision: l.revision })),
        revision: want.revision,
      });
      assert.deepEqual(got.keys.map((k) => k.key), [
        "198.19.1.0-29",
        "198.19.1.16-29",
        "198.19.1.24-29",
      ]);
    } finally {
      await reg.close();
    }
  }));
