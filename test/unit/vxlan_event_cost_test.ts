/**
 * The vxlan backend's cost per peer event: with 2000 peers programmed, a removal (or an addition)
 * looks at the leases of its events only — entries are computed for those, not for every peer
 * (issue #12: an event costs the same with 5000 peers as with 5) — and an FDB entry two leases
 * share (a stale duplicate of a live peer's VTEP) still outlives the removal of one of them.
 * Counts calls, never times them; the kernel is an in-memory recorder.
 */
import assert from "node:assert/strict";
import { parseNetworkConfig } from "../../src/config/network.ts";
import { formatIp, parseCidr } from "../../src/base/ipv4.ts";
import type { Lease } from "../../src/lease/codec.ts";
import type { DeleteRequest, Netlink } from "../../ffi/libnl/mod.ts";
import { withReads } from "../kit/fake_reads.ts";
import { VxlanBackend } from "../../src/backend/vxlan/backend.ts";
import { extIface, vtepLink } from "../kit/vtep_fixture.ts";

const N = 2000;
const ext = extIface("198.18.0.11");
const vtep = vtepLink(ext, "02:00:00:00:00:11");

/** A kernel that holds nothing and records what is deleted. */
class RecordingNl {
  deleted: DeleteRequest[] = [];
  linkByName = (name: string) => name === vtep.name ? vtep : null;
  linkByIndex = (i: number) => i === vtep.index ? vtep : null;
  addrList = () => [{ cidr: "198.19.0.8/32" }];
  addrReplace() {}
  addrDel() {}
  routeList = () => [];
  fdbList = () => [];
  neighList = () => [];
  neighSet() {}
  fdbSet() {}
  routeReplace() {}
  deleteMany(reqs: DeleteRequest[]): (Error | null)[] {
    this.deleted.push(...reqs);
    return reqs.map(() => null);
  }
}

const mac = (i: number) =>
  `0e:be:00:00:${((i >> 8) & 255).toString(16).padStart(2, "0")}:${
    (i & 255).toString(16).padStart(2, "0")
  }`;

/** Peer i: subnet 198.19.(i+2)·8/29, its own VTEP MAC unless given one. */
function peer(i: number, vtepMac = mac(i)): Lease {
  const subnet = parseCidr(`${formatIp(parseCidr("198.19.0.0/16").ip + (i + 2) * 8)}/29`);
  return {
    key: `${formatIp(subnet.ip)}-29`,
    subnet,
    attrs: {
      publicIP: formatIp(parseCidr("198.18.8.0/21").ip + i + 1),
      backendType: "vxlan",
      backendData: { VNI: 1, VtepMAC: vtepMac },
    },
    expiresAt: null,
    revision: i + 1,
  };
}

Deno.test("vxlan apply: one event among 2000 peers computes entries for its own lease only", async () => {
  const nl = withReads(new RecordingNl());
  const b = new VxlanBackend(nl as unknown as Netlink);
  const cfg = parseNetworkConfig(
    JSON.stringify({ Network: "198.19.0.0/16", SubnetLen: 29, Backend: { Type: "vxlan" } }),
  );
  await b.prepare({ config: cfg, ext, previous: null });
  await b.start(peer(-1, vtep.mac));
  const peers = Array.from({ length: N }, (_, i) => peer(i));
  // Peer N reuses peer 7's VTEP MAC (a stale lease of the same host).
  const dup = peer(N, mac(7));
  await b.reconcile([...peers, dup]);

  // Count every entry computation from here on (the backend's own calls go through the instance).
  let looked = 0;
  const entriesFor = b.entriesFor.bind(b);
  b.entriesFor = (l: Lease) => {
    looked++;
    return entriesFor(l);
  };

  await b.apply([{ type: "removed", lease: peers[3] }]);
  assert.ok(looked <= 3, `${looked} entry computations for one removal among ${N} peers`);
  const fdb3 = nl.deleted.filter((r) => "fdb" in r).map((r) => "fdb" in r && r.fdb.mac);
  assert.deepEqual(fdb3, [mac(3)], "the removed peer's own FDB entry goes");

  looked = 0;
  nl.deleted = [];
  await b.apply([{ type: "removed", lease: dup }]);
  assert.ok(looked <= 3, `${looked} entry computations for one removal among ${N} peers`);
  assert.equal(
    nl.deleted.filter((r) => "fdb" in r).length,
    0,
    "peer 7 still names that VTEP MAC: its FDB entry stays",
  );
  assert.equal(nl.deleted.filter((r) => "neigh" in r).length, 1, "the stale neighbour goes");

  looked = 0;
  nl.deleted = [];
  await b.apply([{ type: "added", lease: peer(N + 1) }, { type: "removed", lease: peers[7] }]);
  assert.ok(looked <= 6, `${looked} entry computations for two events among ${N} peers`);
  const fdb7 = nl.deleted.filter((r) => "fdb" in r).map((r) => "fdb" in r && r.fdb.mac);
  assert.deepEqual(fdb7, [mac(7)], "the last lease naming that MAC is gone: its FDB entry goes");
});
