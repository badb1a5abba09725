import assert from "node:assert/strict";
import { parseNetworkConfig } from "../../src/config/network.ts";
import {
  capacity,
  chooseOwnLease,
  findOwnLease,
  freeSubnets,
  isAllocatable,
  isFree,
  isPeerSubnet,
} from "../../src/lease/allocate.ts";
import type { Lease } from "../../src/lease/codec.ts";
import { formatCidr, parseCidr } from "../../src/base/ipv4.ts";

const cfg = parseNetworkConfig(`{"Network":"198.19.0.0/16","Backend":{"Type":"alloc"}}`);
function lease(cidr: string, ip: string, expiresAt: number | null = Date.now() + 1e6): Lease {
  const subnet = parseCidr(cidr);
  return { key: cidr.replace("/", "-"), subnet, attrs: { publicIP: ip }, expiresAt, revision: 1 };
}

Deno.test("free subnets walk upward from SubnetMin, skipping leased ones", () => {
  const free = freeSubnets(cfg, [lease("198.19.1.0/24", "198.18.0.1")], 3).map(formatCidr);
  assert.deepEqual(free, ["198.19.2.0/24", "198.19.3.0/24", "198.19.4.0/24"]);
  assert.equal(freeSubnets(cfg, [], 1000).length, capacity(cfg));
  assert.equal(capacity(cfg), 255);
});

Deno.test("a lease of another SubnetLen blocks the subnets it overlaps", () => {
  const odd = lease("198.19.0.0/22", "198.18.0.1");
  const free = freeSubnets(cfg, [odd], 2).map(formatCidr);
  assert.deepEqual(free, ["198.19.4.0/24", "198.19.5.0/24"]);
  assert.equal(isFree(parseCidr("198.19.3.0/24"), [odd]), false);
});

Deno.test("own lease by public IP; a reservation wins; leases outside the config are ignored", () => {
  const a = lease("198.19.7.0/24", "198.18.0.9");
  const r = lease("198.19.9.0/24", "198.18.0.9", null);
  const outside = lease("198.20.1.0/24", "198.18.0.9");
  assert.equal(findOwnLease(cfg, [outside, a], "198.18.0.9"), a);
  assert.equal(findOwnLease(cfg, [a, r], "198.18.0.9"), r);
  assert.equal(findOwnLease(cfg, [a], "198.18.0.10"), null);
});

Deno.test("stray leases for a supernet or another network do not fill this network", () => {
  const stray = [
    lease("0.0.0.0/0", "198.18.0.1"),
    lease("198.0.0.0/8", "198.18.0.2"),
    lease("198.20.0.0/24", "198.18.0.3"),
  ];
  assert.equal(freeSubnets(cfg, stray, 1000).length, capacity(cfg));
});

Deno.test("peer leases need Network and SubnetLen; SubnetMin/SubnetMax bound only allocation", () => {
  const ranged = parseNetworkConfig(
    `{"Network":"198.19.0.0/16","SubnetMin":"198.19.10.0","SubnetMax":"198.19.20.0"}`,
  );
  const is = (cidr: string) => [
    isPeerSubnet(ranged, parseCidr(cidr)),
    isAllocatable(ranged, parseCidr(cidr)),
  ];
  assert.deepEqual(is("198.19.10.0/24"), [true, true]);
  assert.deepEqual(is("198.19.20.0/24"), [true, true]);
  // Another node's config (or flanneld's default range) drew it: a peer, never ours to take.
  assert.deepEqual(is("198.19.9.0/24"), [true, false]);
  assert.deepEqual(is("198.19.21.0/24"), [true, false]);
  assert.deepEqual(is("198.19.0.0/24"), [true, false]);
  // Not of this network's shape: neither.
  assert.deepEqual(is("198.19.10.0/25"), [false, false]);
  assert.deepEqual(is("198.20.10.0/24"), [false, false]);
  assert.deepEqual(is("0.0.0.0/0"), [false, false]);
  // Our own old lease outside the range is not reused; flanneld does the same.
  const old = lease("198.19.5.0/24", "198.18.0.9");
  assert.equal(findOwnLease(ranged, [old], "198.18.0.9"), null);
});

Deno.test("the choice among leases naming our IP is deterministic: reservation, subnet.env, own id", () => {
  const ip = "198.18.0.9";
  const withId = (l: Lease, nodeId: string): Lease => ({ ...l, attrs: { ...l.attrs, nodeId } });
  const a = lease("198.19.3.0/24", ip);
  const b = lease("198.19.5.0/24", ip);
  const r1 = lease("198.19.8.0/24", ip, null);
  const r2 = lease("198.19.7.0/24", ip, null);
  const hint = parseCidr("198.19.5.0/24");
  const pick = (ls: Lease[], h: { hint?: ReturnType<typeof parseCidr>; nodeId?: string }) =>
    chooseOwnLease(cfg, ls, ip, h).lease?.key ?? null;
  // Any listing order gives the same answer.
  for (const ls of [[a, b, r1, r2], [r2, r1, b, a]]) {
    assert.equal(pick(ls, {}), "198.19.7.0-24", "lowest reservation");
    assert.equal(pick(ls, { hint: parseCidr("198.19.8.0/24") }), "198.19.8.0-24");
  }
  for (const ls of [[a, b], [b, a]]) {
    assert.equal(pick(ls, { hint }), "198.19.5.0-24", "the subnet.env subnet");
    assert.equal(pick(ls, {}), "198.19.3.0-24", "no hint: the lowest, as flannel reuses");
  }
  const mine = withId(b, "me");
  assert.equal(pick([a, mine], { nodeId: "me" }), "198.19.5.0-24", "our identity");
  // A free subnet.env subnet wins over a TTL lease we did not write: allocate it.
  assert.equal(pick([a], { hint: parseCidr("198.19.9.0/24"), nodeId: "me" }), null);
  const choice = chooseOwnLease(cfg, [a, b, r1], ip, { hint });
  assert.deepEqual(choice.others.map((l) => l.key), ["198.19.3.0-24", "198.19.5.0-24"]);
});
