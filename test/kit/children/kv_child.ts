/**
 * A separate writer process for the KV registry tests: several of these on one KV file are what
 * makes SQLite report "database is locked" and what `kv.watch()` cannot see. Prints one JSON
 * line per result on stdout; exits 1 with the error on stderr when anything throws.
 *
 * @example
 * ```sh
 * # race for 48 subnets, starting at epoch ms 1700000000000:
 * deno run -A test/kit/children/kv_child.ts create /tmp/x/reg.kv /test 3 48 1700000000000
 * # write 5 leases 150 ms apart, printing when each committed:
 * deno run -A test/kit/children/kv_child.ts write /tmp/x/reg.kv /test 5 150
 * ```
 */
import { openKvRegistry } from "../../../src/registry/kv/mod.ts";
import { metrics } from "../../../src/base/metrics.ts";

const [mode, path, prefix, ...rest] = Deno.args;
const reg = await openKvRegistry({ path, prefix });
try {
  if (mode === "create") {
    // Every child tries every subnet of the pool, in its own random order, from the same instant.
    const [id, pool, startAt] = rest.map(Number);
    const keys = Array.from({ length: pool }, (_, i) => `198.19.${i}.0-24`);
    for (let i = keys.length - 1; i > 0; i--) {
      const j = Math.floor(Math.random() * (i + 1));
      [keys[i], keys[j]] = [keys[j], keys[i]];
    }
    await new Promise((r) => setTimeout(r, Math.max(0, startAt - Date.now())));
    const won: { key: string; revision: number }[] = [];
    for (const key of keys) {
      const value = `{"PublicIP":"198.18.0.${id}","PublicIPv6":null,"BackendType":"host-gw"}`;
      const l = await reg.createLease(key, value, 3600);
      if (l) won.push({ key, revision: l.revision });
    }
    const lockRetries = metrics.counter("weft_registry_kv_lock_retries_total", "").get();
    const conflicts = metrics.counter("weft_registry_kv_conflict_retries_total", "").get();
    console.log(JSON.stringify({ id, won, lockRetries, conflicts }));
  } else if (mode === "write") {
    const [count, gapMs] = rest.map(Number);
    for (let i = 0; i < count; i++) {
      const key = `198.19.${100 + i}.0-24`;
      const l = await reg.createLease(key, `{"PublicIP":"198.18.0.9","PublicIPv6":null}`, 3600);
      if (!l) throw new Error(`lease ${key} already existed`);
      console.log(JSON.stringify({ key, revision: l.revision, committedAt: Date.now() }));
      await new Promise((r) => setTimeout(r, gapMs));
    }
  } else {
    throw new Error(`unknown mode "${mode}": use create or write`);
  }
} finally {
  await reg.close();
}
