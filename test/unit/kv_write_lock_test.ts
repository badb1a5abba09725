/**
 * Writers of one local KV file queue on `<file>.lock` (src/registry/kv/write_lock.ts) instead of
 * racing for the revision counter. Run with `deno run` this file is the writer process of the
 * first test: `deno run -A test/unit/kv_write_lock_test.ts <kv file> <id> <count> <startAt> <lock>`
 * creates `count` leases at once from epoch ms `startAt` and prints one JSON line.
 */
import assert from "node:assert/strict";
import { KvBusyError, openKvRegistry } from "../../src/registry/kv/mod.ts";
import { metrics } from "../../src/base/metrics.ts";
import type { Registry } from "../../src/registry/contract/registry.ts";
import { runOk, waitFor } from "../kit/proc.ts";

const PREFIX = "/weft-test";
const value = (id: number) => `{"PublicIP":"198.18.7.${id}","PublicIPv6":null}`;

async function writer(path: string, id: number, count: number, startAt: number, lock: boolean) {
  // A long budget: on a loaded machine the queue is slow, never failing.
  const reg = await openKvRegistry({ path, prefix: PREFIX, retryMs: 30_000, writeLock: lock });
  try {
    await new Promise((r) => setTimeout(r, Math.max(0, startAt - Date.now())));
    const rs = await Promise.allSettled(
      Array.from(
        { length: count },
        (_, i) => reg.createLease(`198.19.${id}.${i * 8}-29`, value(id), 3600),
      ),
    );
    const busy = rs.filter((r) => r.status === "rejected" && r.reason instanceof KvBusyError);
    const other = rs.filter((r) => r.status === "rejected" && !(r.reason instanceof KvBusyError));
    const created = rs.filter((r) => r.status === "fulfilled" && r.value).length;
    const conflicts = metrics.counter("weft_registry_kv_conflict_retries_total", "").get();
    console.log(JSON.stringify({
      id,
      created,
      busy: busy.length,
      other: other.map((r) => String((r as PromiseRejectedResult).reason)),
      conflicts,
    }));
  } finally {
    await reg.close();
  }
}

/**
 * Creates `key` with a registry whose budget is short: its lock wait may end before the kernel
 * grants the freed lock on a loaded machine, so a KvBusyError is retried (bounded).
 */
function createOnceFree(reg: Registry, key: string) {
  return waitFor(`create of ${key} once the lock is free`, async () => {
    try {
      return await reg.createLease(key, value(9), 60);
    } catch (e) {
      if (e instanceof KvBusyError) return false;
      throw e;
    }
  }, { timeoutMs: 20_000, stopOnError: true });
}

if (import.meta.main) {
  const [path, id, count, startAt, lock] = Deno.args;
  await writer(path, Number(id), Number(count), Number(startAt), lock !== "nolock");
  Deno.exit(0);
}

// Queued writers never lose the revision counter's check: zero conflicts is exact, not timing
// (optimistic writers lose it hundreds of times here, and at 4 × 500 mostly run out of budget).
Deno.test("kv: 4 processes × 50 concurrent creates on one file all commit: writers queue", async () => {
  const dir = await Deno.makeTempDir({ prefix: "weft-kv-lock-" });
  const path = `${dir}/r.kv`;
  try {
    (await openKvRegistry({ path, prefix: PREFIX })).close();
    const procs = 4, each = 50;
    // The same instant for all, after the children have started (deno starts in < 5 s).
    const startAt = Date.now() + 5000;
    const outs = await Promise.all(Array.from({ length: procs }, (_, id) =>
      runOk([
        Deno.execPath(),
        "run",
        "-A",
        "--no-check",
        new URL(import.meta.url).pathname,
        path,
        String(id + 1),
        String(each),
        String(startAt),
        "lock",
      ], { timeoutMs: 60_000 })));
    const rs = outs.map((o) => JSON.parse(o.trim().split("\n").pop()!));
    for (const r of rs) {
      assert.deepEqual(r.other, [], `writer ${r.id}: unexpected errors`);
      assert.equal(r.busy, 0, `writer ${r.id}: ${r.busy} creates gave up with KvBusyError`);
      assert.equal(r.created, each, `writer ${r.id}: created ${r.created} of ${each}`);
      assert.equal(r.conflicts, 0, `writer ${r.id}: lost the counter's check ${r.conflicts} times`);
    }
    const reg = await openKvRegistry({ path, prefix: PREFIX });
    try {
      const { leases, revision } = await reg.listLeases();
      assert.equal(leases.length, procs * each);
      assert.equal(new Set(leases.map((l) => l.revision)).size, procs * each);
      assert.equal(revision, procs * each);
    } finally {
      await reg.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("kv: a write lock held too long fails the write with an error naming the lock file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "weft-kv-lock-" });
  const path = `${dir}/r.kv`;
  const reg = await openKvRegistry({ path, prefix: PREFIX, retryMs: 300 });
  const holder = await Deno.open(`${path}.lock`, { read: true, write: true, create: true });
  try {
    await holder.lock(true);
    await assert.rejects(
      reg.createLease("198.19.1.0-29", value(1), 60),
      (e: Error) => {
        assert.ok(e instanceof KvBusyError, String(e));
        assert.match(e.message, new RegExp(`write lock ${path}\\.lock`));
        return true;
      },
    );
    await holder.unlock();
    const l = await createOnceFree(reg, "198.19.1.0-29");
    assert.ok(l, "the create after the lock was released");
  } finally {
    holder.close();
    await reg.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("kv: without a usable lock file writers fall back to the optimistic commit", async () => {
  const dir = await Deno.makeTempDir({ prefix: "weft-kv-lock-" });
  const path = `${dir}/r.kv`;
  await Deno.mkdir(`${path}.lock`); // a directory: cannot be opened for writing
  const reg = await openKvRegistry({ path, prefix: PREFIX });
  try {
    const ls = await Promise.all(
      [0, 8, 16].map((o) => reg.createLease(`198.19.2.${o}-29`, value(2), 60)),
    );
    assert.ok(ls.every((l) => l !== null));
    assert.equal((await reg.listLeases()).leases.length, 3);
  } finally {
    await reg.close();
    await Deno.remove(dir, { recursive: true });
  }
});

/** Threads of this process blocked in flock(2) (their kernel wait channel). */
function threadsInFlock(): number {
  let n = 0;
  for (const t of Deno.readDirSync("/proc/self/task")) {
    try {
      if (/lock_inode_wait|flock/.test(Deno.readTextFileSync(`/proc/self/task/${t.name}/wchan`))) {
        n++;
      }
    } catch { /* the thread ended */ }
  }
  return n;
}

Deno.test("kv: writes that time out on the write lock leave one kernel wait, not one each", async () => {
  const dir = await Deno.makeTempDir({ prefix: "weft-kv-lock-" });
  const path = `${dir}/r.kv`;
  const reg = await openKvRegistry({ path, prefix: PREFIX, retryMs: 200 });
  const holder = await Deno.open(`${path}.lock`, { read: true, write: true, create: true });
  try {
    await holder.lock(true);
    await assert.rejects(reg.createLease("198.19.3.0-29", value(3), 60), KvBusyError);
    await waitFor("the write's kernel wait for the lock", () => threadsInFlock() === 1, {
      timeoutMs: 10_000,
    });
    for (let i = 1; i <= 4; i++) {
      await assert.rejects(reg.createLease(`198.19.3.${i * 8}-29`, value(3), 60), KvBusyError);
    }
    assert.equal(threadsInFlock(), 1, "5 timed-out writes: still one wait in flock(2)");
    await holder.unlock();
    assert.ok(await createOnceFree(reg, "198.19.3.0-29"));
  } finally {
    holder.close();
    await reg.close();
    await Deno.remove(dir, { recursive: true });
  }
});
