/**
 * Deno KV registry tests on real KV files in temp dirs: the shared conformance suite, then the
 * KV-specific parts: separate writer processes, cross-process watch latency, expiry reaping,
 * compaction, and opening errors.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { KvRegistry, openKvRegistry } from "../../src/registry/kv/mod.ts";
import { FileWake, touchAfterCommit } from "../../src/registry/kv/wake.ts";
import { withTimeout } from "../../src/base/async.ts";
import { RegistryError, type WatchMessage } from "../../src/registry/contract/registry.ts";
import { registryConformance } from "../kit/suites/registry_conformance.ts";
import { run, sleep, waitFor } from "../kit/proc.ts";
import { denoRun } from "../kit/netns.ts";

const CHILD = new URL("../kit/children/kv_child.ts", import.meta.url).pathname;
const VALUE = `{"PublicIP":"198.18.0.3","PublicIPv6":null,"BackendType":"host-gw"}`;

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "weft-kv-test-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/**
 * Runs a watch in the background, recording messages with their arrival time, until `done`
 * holds or `timeoutMs` passes; `stop()` ends it and returns what arrived.
 */
function startWatch(
  reg: KvRegistry,
  from: number,
  done: (msgs: WatchMessage[]) => boolean,
  timeoutMs: number,
) {
  const ac = new AbortController();
  const msgs: WatchMessage[] = [];
  const times: number[] = [];
  const timer = setTimeout(() => ac.abort(), timeoutMs);
  const running = (async () => {
    for await (const m of reg.watchLeases(from, ac.signal)) {
      msgs.push(m);
      times.push(Date.now());
      if (done(msgs)) break;
    }
  })();
  return {
    msgs,
    times,
    /** Waits for the watch to end by itself (done or timeout). */
    async finished() {
      try {
        await running;
      } finally {
        clearTimeout(timer);
      }
      return msgs;
    },
    async stop() {
      ac.abort();
      return await this.finished();
    },
  };
}

registryConformance("kv", async () => {
  const dir = await Deno.makeTempDir({ prefix: "weft-kv-conf-" });
  const registry = await openKvRegistry({ path: join(dir, "reg.kv"), prefix: "/conformance" });
  return {
    registry,
    async cleanup() {
      await registry.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
});

function putsOf(msgs: WatchMessage[]) {
  return msgs.flatMap((m) => m.kind === "changes" ? m.changes : []);
}

async function runChild(args: string[]): Promise<{ code: number; out: string; err: string }> {
  // Bounded by the kit (a child that hangs is killed): the race waits for 1.5 s, then writes.
  const r = await run(denoRun([CHILD, ...args], { flags: ["--unstable-kv"] }), {
    timeoutMs: 120_000,
  });
  return { code: r.code, out: r.stdout, err: r.stderr };
}

Deno.test("kv: 8 processes race to create leases in one file: no lost write, no lock error", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "reg.kv");
    const prefix = "/race";
    const pool = 48;
    const reg = await openKvRegistry({ path, prefix });
    try {
      const seen = startWatch(reg, 0, (m) => putsOf(m).length >= pool, 90_000);
      const startAt = Date.now() + 1500; // after all children have started up
      const t0 = performance.now();
      const results = await Promise.all(
        Array.from(
          { length: 8 },
          (_, i) =>
            runChild(["create", path, prefix, String(i + 1), String(pool), String(startAt)]),
        ),
      );
      const wall = performance.now() - t0;
      const winners = new Map<string, { id: number; revision: number }>();
      let lockRetries = 0, conflicts = 0;
      for (const r of results) {
        assert.equal(r.code, 0, `child failed: ${r.err}`);
        assert.doesNotMatch(r.err, /database is locked/);
        const res = JSON.parse(r.out);
        lockRetries += res.lockRetries;
        conflicts += res.conflicts;
        for (const w of res.won) {
          assert.ok(!winners.has(w.key), `${w.key} created twice (by ${res.id} and another)`);
          winners.set(w.key, { id: res.id, revision: w.revision });
        }
      }
      console.log(
        `8 children, ${pool} subnets: ${wall.toFixed(0)} ms, ${lockRetries} lock retries, ` +
          `${conflicts} counter races`,
      );
      assert.equal(winners.size, pool, "every subnet was created by exactly one child");
      const revs = [...winners.values()].map((w) => w.revision).sort((a, b) => a - b);
      assert.deepEqual(revs, Array.from({ length: pool }, (_, i) => i + 1));

      const { leases, revision } = await reg.listLeases();
      assert.equal(revision, pool);
      assert.equal(leases.length, pool);
      for (const l of leases) {
        const w = winners.get(l.key)!;
        assert.equal(l.revision, w.revision);
        assert.equal(JSON.parse(l.value).PublicIP, `198.18.0.${w.id}`, `value of ${l.key}`);
      }

      // The watcher in this process saw every write of the other processes, in order, once.
      const changes = putsOf(await seen.finished());
      assert.deepEqual(
        changes.map((c) => c.type === "put" ? [c.lease.key, c.lease.revision] : ["delete"]),
        [...winners].sort((a, b) => a[1].revision - b[1].revision).map((
          [k, w],
        ) => [k, w.revision]),
      );
    } finally {
      await reg.close();
    }
  });
});

Deno.test("kv: a watcher sees another process's write quickly", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "reg.kv");
    const reg = await openKvRegistry({ path, prefix: "/latency" });
    try {
      const writes = 5;
      const w = startWatch(reg, 0, (m) => putsOf(m).length >= writes, 20_000);
      const r = await runChild(["write", path, "/latency", String(writes), "150"]);
      assert.equal(r.code, 0, `child failed: ${r.err}`);
      await w.finished();
      const committed = r.out.trim().split("\n").map((l) => JSON.parse(l));
      const arrived = new Map<string, number>();
      w.msgs.forEach((m, i) => {
        if (m.kind === "changes") {
          for (const c of m.changes) if (c.type === "put") arrived.set(c.lease.key, w.times[i]);
        }
      });
      const lat = committed.map((c) => {
        assert.ok(arrived.has(c.key), `write of ${c.key} never reached the watcher`);
        return arrived.get(c.key)! - c.committedAt;
      });
      console.log(`cross-process watch latency ms: ${lat.join(", ")} (max ${Math.max(...lat)})`);
      // A sanity bound only (10x the old 1 s): watch latency is a speed, measured in bench/.
      assert.ok(Math.max(...lat) < 10_000, `latency ${Math.max(...lat)} ms exceeds 10 s`);
    } finally {
      await reg.close();
    }
  });
});

Deno.test("kv: another handle's commit to the file is seen by the file watch", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "reg.kv");
    const writer = await openKvRegistry({ path, prefix: "/wake" });
    const wake = FileWake.start(path);
    assert.ok(wake, "the file watch could not start");
    try {
      // Quiet first: opening the file may still be settling.
      await sleep(200);
      const seen = wake.generation;
      assert.ok(await writer.createLease("198.19.1.0-24", VALUE, 60));
      // Bounded wait for the exact state: a change event after `seen`.
      await wake.wait(seen, 20_000, AbortSignal.timeout(20_000));
      assert.notEqual(wake.generation, seen, "no change event within 20 s of a commit");
    } finally {
      await wake.close();
      await writer.close();
    }
  });
});

Deno.test("kv: closing the file watch ends its wait at once and wakes its waiters", async () => {
  await withTempDir(async (dir) => {
    const wake = FileWake.start(join(dir, "reg.kv"));
    assert.ok(wake, "the file watch could not start");
    assert.ok(wake.alive);
    // A waiter with a far deadline: only close() can end it within the bound below.
    const waiting = wake.wait(wake.generation, 600_000, new AbortController().signal);
    await withTimeout(wake.close(), 20_000, "close of the file watch");
    await withTimeout(waiting, 20_000, "a waiter of the closed file watch");
    assert.equal(wake.alive, false);
    await wake.close(); // idempotent
  });
});

Deno.test("kv: the file watch sees the KV file's log created and its times set", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "reg.kv");
    const wake = FileWake.start(path);
    assert.ok(wake, "the file watch could not start");
    try {
      let seen = wake.generation;
      await Deno.writeTextFile(`${path}-wal`, "x");
      await wake.wait(seen, 20_000, AbortSignal.timeout(20_000));
      assert.notEqual(wake.generation, seen, "no event within 20 s of writing the -wal file");
      assert.equal(wake.fileChangedSince(seen), false, "the -wal file is not the database file");
      await Deno.writeTextFile(path, "x");
      seen = wake.generation;
      await touchAfterCommit(path);
      await waitFor("an event for the touch", () => wake.fileChangedSince(seen), {
        timeoutMs: 20_000,
      });
    } finally {
      await wake.close();
    }
  });
});

/** This process's POSIX locks on the file at `path` (from /proc/locks), as "READ 128-128" etc. */
function ownLocks(path: string): string[] {
  const ino = Deno.statSync(path).ino;
  return Deno.readTextFileSync("/proc/locks").split("\n").map((l) => l.trim().split(/\s+/))
    .filter((f) => f[1] === "POSIX" && f[4] === String(Deno.pid) && f[5]?.endsWith(`:${ino}`))
    .map((f) => `${f[3]} ${f[6]}-${f[7]}`);
}

Deno.test("kv: the file watch never opens the database files, so SQLite keeps its locks", async () => {
  // Closing any descriptor of a file drops all of the process's POSIX locks on it. Deno.watchFs
  // opens and closes every file it reports: SQLite's lock on `-shm` went with it, another
  // process opening the database then took itself for the first and truncated `-shm`, and this
  // one died of SIGBUS reading its mapping.
  await withTempDir(async (dir) => {
    const path = join(dir, "reg.kv");
    const reg = await openKvRegistry({ path, prefix: "/locks" });
    const wake = FileWake.start(path);
    assert.ok(wake, "the file watch could not start");
    try {
      assert.ok(await reg.createLease("198.19.1.0-24", VALUE, 60));
      const shm = `${path}-shm`;
      const before = ownLocks(shm);
      assert.ok(before.length > 0, "SQLite holds no lock on -shm: nothing to check");
      const seen = wake.generation;
      await Deno.utime(shm, new Date(), new Date()); // an event for -shm itself
      await wake.wait(seen, 20_000, AbortSignal.timeout(20_000));
      assert.notEqual(wake.generation, seen, "no event within 20 s of touching -shm");
      assert.deepEqual(ownLocks(shm), before);
      assert.ok(await reg.getLease("198.19.1.0-24"));
    } finally {
      await wake.close();
      await reg.close();
    }
  });
});

Deno.test("kv: a write wakes the watchers of the file; without a file watch they poll", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "reg.kv");
    // Safety poll and reaping far beyond the wait below: only a wake-up can deliver in time.
    const woken = await openKvRegistry({
      path,
      prefix: "/wake",
      idlePollMs: 60_000,
      reapMs: 60_000,
      wakeOnChange: true,
    });
    const polling = await openKvRegistry({ path, prefix: "/wake", wakeOnChange: false });
    const writer = await openKvRegistry({ path, prefix: "/wake" });
    try {
      const writes = 3;
      const watches = [woken, polling].map((r) =>
        startWatch(r, 0, (m) => putsOf(m).length >= writes, 20_000)
      );
      for (let i = 1; i <= writes; i++) {
        assert.ok(await writer.createLease(`198.19.${i}.0-24`, VALUE, 60));
        await sleep(100);
      }
      for (const w of watches) {
        const puts = putsOf(await w.finished());
        assert.deepEqual(
          puts.map((c) => c.type === "put" ? c.lease.key : c.key),
          ["198.19.1.0-24", "198.19.2.0-24", "198.19.3.0-24"],
        );
      }
    } finally {
      for (const r of [woken, polling, writer]) await r.close();
    }
  });
});

Deno.test("kv: an expired lease is reaped once, as a delete every watcher sees", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "reg.kv");
    // Two handles on one file stand in for two agents; both reap, only one delete may land.
    const a = await openKvRegistry({ path, prefix: "/reap", reapMs: 100 });
    const b = await openKvRegistry({ path, prefix: "/reap", reapMs: 100 });
    try {
      const resv = await a.createLease("198.19.1.0-24", VALUE, null);
      const short = await a.createLease("198.19.2.0-24", VALUE, 1);
      assert.ok(resv && short);
      const hasDelete = (m: WatchMessage[]) => putsOf(m).some((c) => c.type === "delete");
      const wa = startWatch(a, short.revision, hasDelete, 20_000);
      const wb = startWatch(b, short.revision, hasDelete, 20_000);
      const [ma, mb] = await Promise.all([wa.finished(), wb.finished()]);
      const deleteAt = wa.times[wa.times.length - 1];
      for (const msgs of [ma, mb]) {
        assert.deepEqual(putsOf(msgs), [{
          type: "delete",
          key: "198.19.2.0-24",
          revision: short.revision + 1,
        }]);
      }
      console.log(
        `expiry delete delivered ${deleteAt - short.expiresAt!} ms after the lease expired`,
      );
      // A sanity bound only (10x the old 2 s; the watches give up at 20 s anyway): how soon a
      // reap lands is a speed, measured in bench/.
      assert.ok(deleteAt - short.expiresAt! < 20_000);
      // No second reap landed, the reservation stayed, and reads agree. A window, not a state:
      // both handles reap every 100 ms, so a second reap would have landed by now.
      await sleep(300);
      const { leases, revision } = await b.listLeases();
      assert.equal(revision, short.revision + 1);
      assert.deepEqual(leases, [resv]);
      assert.equal(await a.getLease("198.19.2.0-24"), null);
      // An expired key counts as absent for create.
      const again = await b.createLease("198.19.2.0-24", VALUE, 3600);
      assert.equal(again?.revision, short.revision + 2);
    } finally {
      await a.close();
      await b.close();
    }
  });
});

Deno.test("kv: createLease overwrites an expired lease that nobody reaped yet", async () => {
  await withTempDir(async (dir) => {
    const reg = await openKvRegistry({ path: join(dir, "reg.kv"), prefix: "/over" });
    try {
      // 2 s, not less: the lease must still be live at the next call on a loaded machine.
      const old = await reg.createLease("198.19.3.0-24", VALUE, 2);
      assert.ok(old);
      assert.equal(await reg.createLease("198.19.3.0-24", VALUE, 60), null);
      await waitFor("the lease to expire", () => Date.now() > old.expiresAt!, {
        timeoutMs: 10_000,
      });
      const taken = await reg.createLease("198.19.3.0-24", VALUE.replace(".3", ".4"), 60);
      // The old lease's delete takes old.revision + 1, the new put the revision after it.
      assert.equal(taken?.revision, old.revision + 2);
      assert.equal(await reg.updateLease("198.19.3.0-24", VALUE, 60, old.revision), null);
      assert.equal((await reg.getLease("198.19.3.0-24"))?.value, VALUE.replace(".3", ".4"));
    } finally {
      await reg.close();
    }
  });
});

Deno.test("kv: a peer list since a revision reads the change log, and lists in full when it must", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "reg.kv");
    // compactEvery 10 / keepLog 5: the mutation path itself trims the log.
    const reg = await openKvRegistry({ path, prefix: "/since", keepLog: 5, compactEvery: 10 });
    const other = await openKvRegistry({ path, prefix: "/since" });
    const keys = (l: { leases: { key: string }[] }) => l.leases.map((x) => x.key).sort();
    try {
      for (let i = 0; i < 3; i++) await reg.createLease(`198.19.${i}.0-24`, VALUE, 3600);
      const full = await reg.listPeerLeases();
      assert.equal(full.count, 3);
      // Another handle's writes are in the log this one reads.
      const e = await other.createLease("198.19.9.0-24", VALUE, 1);
      assert.ok(e && await other.deleteLease("198.19.1.0-24"));
      // Calls at once take turns on the index: the same answer for each.
      const [since, ...more] = await Promise.all(
        [0, 1, 2].map(() => reg.listPeerLeases(full.revision)),
      );
      assert.deepEqual(keys(since), ["198.19.9.0-24"]);
      assert.equal(since.count, 3);
      for (const m of more) assert.deepEqual(m, since);
      // Expired and not reaped by anyone (no watch runs): neither listed nor counted.
      await waitFor("the lease to expire", () => Date.now() > e.expiresAt!, { timeoutMs: 10_000 });
      const expired = await reg.listPeerLeases(full.revision);
      assert.deepEqual({ leases: expired.leases, count: expired.count }, { leases: [], count: 2 });
      // The log trimmed past the index: the same answer, from a full list.
      for (let i = 20; i < 32; i++) await other.createLease(`198.19.${i}.0-24`, VALUE, 3600);
      await other.compact();
      const trimmed = await reg.listPeerLeases(full.revision);
      assert.equal(trimmed.count, 14);
      assert.equal(trimmed.leases.length, 12);
      assert.equal(trimmed.revision, (await reg.listLeases()).revision);
    } finally {
      await other.close();
      await reg.close();
    }
  });
});

Deno.test("kv: a watcher behind the compacted log gets a snapshot, then changes again", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "reg.kv");
    // compactEvery 10 / keepLog 5: the mutation path itself trims the log.
    const reg = await openKvRegistry({ path, prefix: "/compact", keepLog: 5, compactEvery: 10 });
    try {
      for (let i = 0; i < 20; i++) await reg.createLease(`198.19.${i}.0-24`, VALUE, 3600);
      assert.ok(await reg.deleteLease("198.19.0.0-24"));
      const now = await reg.listLeases();
      assert.equal(now.revision, 21);

      // A new watcher from revision 0: history before 16 is gone.
      const w0 = startWatch(reg, 0, () => true, 20_000);
      const [first] = await w0.finished();
      assert.equal(first?.kind, "snapshot");
      assert.deepEqual(first, { kind: "snapshot", ...now });

      // A live watcher that stops pulling while the log is trimmed past its position.
      const ac = new AbortController();
      const it = reg.watchLeases(now.revision, ac.signal)[Symbol.asyncIterator]();
      try {
        const pending = it.next();
        await reg.createLease("198.19.50.0-24", VALUE, 3600);
        const m1 = (await pending).value as WatchMessage;
        assert.equal(m1.kind, "changes");
        assert.equal(m1.revision, 22);
        for (let i = 51; i < 60; i++) await reg.createLease(`198.19.${i}.0-24`, VALUE, 3600);
        await reg.deleteLease("198.19.50.0-24");
        assert.ok(await reg.compact() > 0);
        const m2 = (await it.next()).value as WatchMessage;
        assert.equal(m2.kind, "snapshot");
        assert.deepEqual(m2, { kind: "snapshot", ...await reg.listLeases() });
        assert.ok(!m2.leases.some((l) => l.key === "198.19.50.0-24"));
        // It resumes from the snapshot's revision with ordinary changes.
        const next = it.next();
        const put = await reg.createLease("198.19.60.0-24", VALUE, 3600);
        const m3 = (await next).value as WatchMessage;
        assert.deepEqual(m3, {
          kind: "changes",
          changes: [{ type: "put", lease: put }],
          revision: 33,
        });
      } finally {
        ac.abort();
        await it.return?.();
      }
    } finally {
      await reg.close();
    }
  });
});

Deno.test("kv: age-based compaction drops old entries without disturbing a current watcher", async () => {
  await withTempDir(async (dir) => {
    const reg = await openKvRegistry({
      path: join(dir, "reg.kv"),
      prefix: "/age",
      keepLogMs: 1,
      compactEvery: 1e9,
    });
    try {
      for (let i = 0; i < 3; i++) await reg.createLease(`198.19.${i}.0-24`, VALUE, 3600);
      await sleep(5); // time, not a state: the entries must be older than keepLogMs (1 ms)
      assert.equal(await reg.compact(), 3);
      const w = startWatch(reg, 3, () => true, 20_000);
      const put = await reg.createLease("198.19.9.0-24", VALUE, null);
      assert.deepEqual(await w.finished(), [{
        kind: "changes",
        changes: [{ type: "put", lease: put }],
        revision: 4,
      }]);
    } finally {
      await reg.close();
    }
  });
});

Deno.test("kv: opening errors name what to fix; parent dirs are created", async () => {
  const saved = Deno.env.get("DENO_KV_ACCESS_TOKEN");
  Deno.env.delete("DENO_KV_ACCESS_TOKEN");
  try {
    await assert.rejects(
      openKvRegistry({ url: "https://api.deno.com/databases/x/connect" }),
      (e) => e instanceof RegistryError && /DENO_KV_ACCESS_TOKEN/.test(e.message),
    );
  } finally {
    if (saved !== undefined) Deno.env.set("DENO_KV_ACCESS_TOKEN", saved);
  }
  await assert.rejects(openKvRegistry({}), RegistryError);
  await assert.rejects(
    openKvRegistry({ url: "ftp://198.18.0.1/kv" }),
    (e) => e instanceof RegistryError && /http/.test(e.message),
  );
  await withTempDir(async (dir) => {
    await assert.rejects(
      openKvRegistry({ path: join(dir, "a.kv"), url: "https://198.18.0.1/" }),
      RegistryError,
    );
    await assert.rejects(openKvRegistry({ path: join(dir, "b.kv"), pollMs: 0 }), RegistryError);
    const path = join(dir, "deep", "er", "reg.kv");
    const reg = await openKvRegistry({ path });
    try {
      await reg.putConfig(`{"Network":"198.19.0.0/16"}`);
      assert.equal(await reg.getConfig(), `{"Network":"198.19.0.0/16"}`);
      assert.ok((await Deno.stat(path)).isFile);
    } finally {
      await reg.close();
    }
    await assert.rejects(reg.getLease("198.19.1.0-24"), /closed/);
  });
});
