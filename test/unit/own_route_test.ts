import assert from "node:assert/strict";
import { strayOwnRoutes } from "../../src/agent/own_route.ts";
import { ReadinessState } from "../../src/agent/readiness.ts";
import { parseCidr } from "../../src/base/ipv4.ts";

Deno.test("own subnet routes: the bridge's is fine, via a gateway or into the overlay is stray", () => {
  const own = parseCidr("198.19.5.0/24");
  const names: Record<number, string> = { 3: "cni0", 4: "flannel.1", 5: "eth0", 6: "flannel0" };
  const stray = (r: Parameters<typeof strayOwnRoutes>[0]) =>
    strayOwnRoutes(r, own, (i) => names[i] ?? "?").map((x) => `${x.dst} ${x.gw ?? ""} ${x.dev}`);
  assert.deepEqual(stray([{ dst: "198.19.5.0/24", dev: 3 }]), []);
  assert.deepEqual(stray([{ dst: "198.19.6.0/24", gw: "198.19.6.0", dev: 4, onlink: true }]), []);
  assert.deepEqual(stray([{ dst: "198.19.5.0/24", gw: "198.19.5.0", dev: 4, onlink: true }]), [
    "198.19.5.0/24 198.19.5.0 4",
  ]);
  assert.deepEqual(stray([{ dst: "198.19.5.0/24", gw: "198.18.0.3", dev: 5 }]), [
    "198.19.5.0/24 198.18.0.3 5",
  ]);
  assert.deepEqual(stray([{ dst: "198.19.5.0/24", dev: 6 }]), ["198.19.5.0/24  6"]);
  // Other tables and the blackhole route are not the pods' route.
  assert.deepEqual(stray([{ dst: "198.19.5.0/24", gw: "198.18.0.3", dev: 5, table: 100 }]), []);
  assert.deepEqual(stray([{ dst: "198.19.5.0/24", type: 6 }]), []);
});

Deno.test("readiness: a part's problem and a lease conflict keep the node not ready", () => {
  const r = new ReadinessState();
  r.lease = r.subnetEnv = r.peersSynced = true;
  let problem: string | null = "own subnet routed away";
  const part = { name: "own subnet route", problem: () => problem };
  r.partsApplied.add(part);
  assert.deepEqual(r.report({ leaseLost: false, parts: [part] }), {
    ok: false,
    reason: "own subnet routed away",
  });
  problem = null;
  assert.deepEqual(r.report({ leaseLost: false, parts: [part] }), { ok: true });
  assert.deepEqual(
    r.report({ leaseLost: true, conflict: "two hosts share 198.18.0.3", parts: [] }),
    {
      ok: false,
      reason: "two hosts share 198.18.0.3",
    },
  );
});
