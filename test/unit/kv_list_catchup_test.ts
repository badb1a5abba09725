/**
 * A KV list that writers race (src/registry/kv/list.ts) is caught up from the change log instead
 * of read again: the write lands between the list's two reads of the revision counter, on purpose
 * (a Kv whose lease scan lets another handle write after its first entry).
 */
import assert from "node:assert/strict";
import { KvRegistry, openKvRegistry } from "../../src/registry/kv/mod.ts";

const PREFIX = "/weft-test";
const value = `{"PublicIP":"198.18.7.1","PublicIPv6":null}`;

Deno.test("kv: a list raced by writers is caught up from the change log, not read again", async () => {
  const dir = await Deno.makeTempDir({ prefix: "weft-kv-list-" });
  const path = `${dir}/r.kv`;
  const other = await openKvRegistry({ path, prefix: PREFIX });
  const kv = await Deno.openKv(path);
  let scans = 0;
  let race: (() => Promise<void>) | null = null;
  // The registry's Kv, whose scans of the leases run `race` after their first entry.
  const racy = new Proxy(kv, {
    get(target, prop) {
      if (prop === "list") {
        return (sel: Deno.KvListSelector, opts?: Deno.KvListOptions) => {
          const isScan = "prefix" in sel && sel.prefix.includes("subnets");
          if (isScan) scans++;
          const it = target.list(sel, opts);
          if (!isScan) return it;
          return (async function* () {
            let first = true;
            for await (const e of it) {
              yield e;
              if (first && race) {
                const r = race;
                race = null;
                await r();
              }
              first = false;
            }
          })();
        };
      }
      const v = Reflect.get(target, prop, target);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
  const reg = new KvRegistry(racy as Deno.Kv, { path, prefix: PREFIX, wakeOnChange: false });
  try {
    for (const o of [0, 8, 16]) await other.createLease(`198.19.1.${o}-29`, value, 600);
    const kept = (await other.getLease("198.19.1.16-29"))!;
    // Between the list's counter reads: one create, one delete of a lease already listed, one
    // update of a lease not listed yet, one create that is deleted again.
    race = async () => {
      await other.createLease("198.19.1.24-29", value, 600);
      await other.deleteLease("198.19.1.0-29");
      await other.updateLease("198.19.1.16-29", value.replace("7.1", "7.2"), 600, kept.revision);
      await other.createLease("198.19.1.32-29", value, 600);
      await other.deleteLease("198.19.1.32-29");
    };
    scans = 0;
    const got = await reg.listLeases();
    assert.equal(race, null, "the race ran");
    assert.equal(scans, 1, "one scan of the leases: caught up, not listed again");
    const want = await other.listLeases();
    assert.equal(got.revision, want.revision);
    assert.deepEqual(got.leases, want.leases);
    assert.deepEqual(got.leases.map((l) => l.key), [
      "198.19.1.16-29",
      "198.19.1.24-29",
      "198.19.1.8-29",
    ]);
    assert.match(got.leases[0].value, /198\.18\.7\.2/);
  } finally {
    await reg.close();
    await other.close();
    await Deno.remove(dir, { recursive: true });
  }
});
