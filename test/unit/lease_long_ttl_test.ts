/**
 * A lease TTL longer than one timer can wait (issue #10, defect 3): renewal must wait for it, not
 * renew in a loop. A real Deno KV file.
 */
import assert from "node:assert/strict";
import { LeaseManager } from "../../src/lease/manager.ts";
import { parseNetworkConfig } from "../../src/config/network.ts";
import { openRegistry } from "../../src/registry/open.ts";
import { sleep } from "../../src/base/async.ts";

Deno.test("lease manager: a 30-day TTL is not renewed in a loop", async () => {
  const dir = await Deno.makeTempDir({ prefix: "weft-longttl-" });
  const r = await openRegistry({ kind: "kv", prefix: "/weft-test", kvPath: `${dir}/r.kv` });
  const ctl = new AbortController();
  try {
    const cfg = parseNetworkConfig('{"Network":"198.19.0.0/16","Backend":{"Type":"host-gw"}}');
    const mgr = new LeaseManager(r, cfg, { ttlSeconds: 30 * 86_400, renewMarginMs: 3_600_000 });
    const held = await mgr.acquire({ publicIP: "198.18.0.21", backendType: "host-gw" }, null);
    const loop = mgr.runRenewal(ctl.signal, () => {});
    // Renewal is due in ~30 days: within this short interval nothing may be written.
    await sleep(500);
    const now = await r.getLease(held.key);
    assert.equal(now?.revision, held.revision, "the lease was rewritten (renewal loop)");
    assert.equal(mgr.lease?.revision, held.revision);
    ctl.abort();
    await loop;
  } finally {
    ctl.abort();
    await r.close();
    await Deno.remove(dir, { recursive: true });
  }
});
