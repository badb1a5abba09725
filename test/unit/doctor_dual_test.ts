/**
 * `weft doctor` per IP family, over synthetic facts: a dual-stack vxlan node's IPv6 entries
 * (device, route, neighbour, FDB on flannel-v6.1) checked like the IPv4 ones with `ip -6` fixes;
 * an IPv6-only network never checks an IPv4 (`0.0.0.0/0`) entry; IPv6 forwarding, ip6tables and
 * MTU per family; the ICMPv6 and crafted VXLAN packet layouts.
 */
import assert from "node:assert/strict";
import type { Facts } from "../../src/doctor/facts.ts";
import { familyView, kernelChecks, type KernelSnapshot } from "../../src/doctor/kernel_checks.ts";
import { strayChecks } from "../../src/doctor/stray_checks.ts";
import { hostChecks, type HostSettings } from "../../src/doctor/host_checks.ts";
import { mtuChecks } from "../../src/doctor/mtu_checks.ts";
import { registryChecks } from "../../src/doctor/registry_checks.ts";
import { parseNetworkConfig } from "../../src/config/network.ts";
import { parseCidr } from "../../src/base/ipv4.ts";
import { parseCidr6, parseIp6 } from "../../src/base/ipv6.ts";
import type { KnownLease } from "../../src/lease/codec.ts";
import type { Link } from "../../ffi/libnl/mod.ts";
import { echoRequest6, parseIcmp6 } from "../../ffi/libc/icmp6.ts";
import { echoRequest, inetChecksum } from "../../ffi/libc/icmp.ts";
import { doctorFacts, ETH0 } from "../kit/doctor_facts.ts";
import { vxlanEchoFrame } from "../../src/health/vxlan_probe.ts";
import { overlayTargets } from "../../src/health/targets.ts";

const MAC1 = "0e:00:00:00:00:01";
const MAC2 = "0e:00:00:00:00:02";
const MAC61 = "0e:00:00:00:06:01";
const MAC62 = "0e:00:00:00:06:02";
const VTEP = 5;
const VTEP6 = 6;

/** Host i: 198.19.i.0/24 + 2001:db8:1:i::/64, public 198.18.0.1i and 2001:db8:ff::1i. */
function lease(i: number, v4 = true): KnownLease {
  return {
    key: v4 ? `198.19.${i}.0-24&2001:db8:1:${i}::-64` : `0.0.0.0-0&2001:db8:1:${i}::-64`,
    subnet: v4 ? parseCidr(`198.19.${i}.0/24`) : { ip: 0, prefix: 0 },
    subnet6: parseCidr6(`2001:db8:1:${i}::/64`),
    attrs: {
      publicIP: v4 ? `198.18.0.1${i}` : "0.0.0.0",
      publicIPv6: `2001:db8:ff::1${i}`,
      backendType: "vxlan",
      ...(v4 ? { backendData: { VNI: 1, VtepMAC: i === 1 ? MAC1 : MAC2 } } : {}),
      backendV6Data: { VNI: 1, VtepMAC: i === 1 ? MAC61 : MAC62 },
    },
    expiresAt: null,
    revision: 1,
  };
}

function facts(v4 = true): Facts {
  const leases = [lease(1, v4), lease(2, v4)];
  const config = parseNetworkConfig(JSON.stringify({
    ...(v4 ? { Network: "198.19.0.0/16" } : { EnableIPv4: false }),
    EnableIPv6: true,
    IPv6Network: "2001:db8:1::/56",
    Backend: { Type: "vxlan" },
  }));
  const base = doctorFacts(leases);
  return doctorFacts(leases, {
    opts: { ...base.opts, ipMasq: true, forwardRules: false },
    configText: config.raw,
    config,
    ext: { ...base.ext!, ifaceAddr6: "2001:db8:ff::11", publicIPv6: "2001:db8:ff::11" },
  });
}

const vtep = (index: number, name: string, mac: string, local: string, mtu: number): Link => ({
  index,
  name,
  kind: "vxlan",
  mtu,
  up: true,
  mac,
  master: null,
  vxlan: { id: 1, local, port: 8472, learning: false, gbp: false, devIndex: 2 },
});

function snapshot(v4 = true, over: Partial<KernelSnapshot> = {}): KernelSnapshot {
  const eth0: Link = { ...ETH0 };
  return {
    links: [
      eth0,
      ...(v4 ? [vtep(VTEP, "flannel.1", MAC1, "198.18.0.11", 1450)] : []),
      vtep(VTEP6, "flannel-v6.1", MAC61, "2001:db8:ff::11", 1430),
    ],
    routes: v4
      ? [{ dst: "198.19.2.0/24", gw: "198.19.2.0", dev: VTEP, onlink: true, protocol: 87 }]
      : [],
    neigh: v4
      ? [{ dev: VTEP, ip: "198.19.2.0", mac: MAC2, state: 0x80, flags: 0, permanent: true }]
      : [],
    fdb: v4
      ? [{
        dev: VTEP,
        mac: MAC2,
        dst: "198.18.0.12",
        state: 0x80,
        flags: 2,
        permanent: true,
        self: true,
      }]
      : [],
    vtepAddrs: v4 ? ["198.19.1.0/32"] : [],
    routes6: [{
      dst: "2001:db8:1:2::/64",
      gw: "2001:db8:1:2::",
      dev: VTEP6,
      onlink: true,
      protocol: 87,
    }],
    neigh6: [{
      dev: VTEP6,
      ip: "2001:db8:1:2::",
      mac: MAC62,
      state: 0x80,
      flags: 0,
      permanent: true,
    }],
    fdb6: [{
      dev: VTEP6,
      mac: MAC62,
      dst: "2001:db8:ff::12",
      state: 0x80,
      flags: 2,
      permanent: true,
      self: true,
    }],
    vtepAddrs6: ["2001:db8:1:1::/128"],
    ...over,
  };
}

const notOk = (rs: { status: string }[]) => rs.filter((r) => r.status !== "ok");

Deno.test("doctor dual stack: IPv6 device, route, neighbour and FDB entry checked with ip -6 fixes", () => {
  const good = kernelChecks(facts(), snapshot());
  assert.deepEqual(notOk(good), [], JSON.stringify(good, null, 1));
  assert.ok(good.some((r) => r.check === "kernel.device6" && /flannel-v6\.1: VNI 1/.test(r.saw)));
  assert.ok(good.some((r) => r.subnet === "2001:db8:1:2::/64" && r.check === "kernel.peer"));
  const none = kernelChecks(facts(), snapshot(true, { routes6: [], neigh6: [], fdb6: [] }));
  const fails = none.filter((r) => r.status === "fail");
  assert.deepEqual(fails.map((r) => [r.check, r.subnet]), [
    ["kernel.route", "2001:db8:1:2::/64"],
    ["kernel.neigh", "2001:db8:1:2::/64"],
    ["kernel.fdb", "2001:db8:1:2::/64"],
  ]);
  assert.match(
    fails[0].fix!,
    /ip -6 route replace 2001:db8:1:2::\/64 via 2001:db8:1:2:: dev flannel-v6\.1 onlink/,
  );
  assert.match(
    fails[1].fix!,
    /ip -6 neigh replace 2001:db8:1:2:: lladdr 0e:00:00:00:06:02 dev flannel-v6\.1/,
  );
  assert.match(fails[2].saw, /0e:00:00:00:06:02 dev flannel-v6\.1 dst 2001:db8:ff::12 missing/);
  // The IPv6 VTEP gone, or on the wrong underlay address.
  const noDev = kernelChecks(
    facts(),
    snapshot(true, { links: snapshot().links.filter((l) => l.index !== VTEP6) }),
  );
  assert.match(
    noDev.find((r) => r.check === "kernel.device6")!.saw,
    /flannel-v6\.1 does not exist/,
  );
  const wrong = snapshot();
  wrong.links = wrong.links.map((l) =>
    l.index === VTEP6 ? vtep(VTEP6, "flannel-v6.1", MAC61, "2001:db8:ff::99", 1430) : l
  );
  assert.match(
    kernelChecks(facts(), wrong).find((r) => r.check === "kernel.device6")!.saw,
    /local address 2001:db8:ff::99, not 2001:db8:ff::11/,
  );
  // A stray IPv6 route inside IPv6Network that no lease holds.
  const stray = kernelChecks(
    facts(),
    snapshot(true, {
      routes6: [...snapshot().routes6!, {
        dst: "2001:db8:1:44::/64",
        gw: "2001:db8:1:44::",
        dev: VTEP6,
        onlink: true,
        protocol: 87,
      }],
    }),
  );
  assert.match(
    stray.find((r) => r.check === "kernel.stale-route")!.fix!,
    /^ip -6 route del 2001:db8:1:44::\/64/,
  );
});

Deno.test("doctor IPv6-only: no IPv4 half is checked, never a 0.0.0.0/0 entry", () => {
  const f = facts(false);
  const k = kernelChecks(f, snapshot(false));
  assert.deepEqual(notOk(k), [], JSON.stringify(k, null, 1));
  assert.ok(!k.some((r) => /0\.0\.0\.0|flannel\.1\b/.test(r.saw)), JSON.stringify(k));
  assert.ok(k.some((r) => r.check === "kernel.peer" && r.subnet === "2001:db8:1:2::/64"));
  const reg = registryChecks(f);
  assert.deepEqual(notOk(reg), [], JSON.stringify(reg, null, 1));
  assert.ok(!reg.some((r) => /0\.0\.0\.0/.test(r.saw)), JSON.stringify(reg));
  const settings: HostSettings = {
    ipForward: "0", // IPv4 forwarding does not matter without IPv4
    rpFilter: 0,
    bridgeNfCallIptables: null,
    filterRules: null,
    natRules: null,
    iptablesError: "no iptables",
    txChecksum: false,
    ipv6: {
      forwarding: "1",
      filterRules: ["-P FORWARD ACCEPT", "-A FORWARD -j FLANNEL-FWD"],
      natRules: ["-A POSTROUTING -j FLANNEL-POSTRTG", "-A FLANNEL-POSTRTG -j MASQUERADE"],
      iptablesError: null,
    },
  };
  const host = hostChecks(f, snapshot(false), settings);
  assert.deepEqual(notOk(host), [], JSON.stringify(host, null, 1));
  assert.ok(host.some((r) => r.check === "host.masquerade6"));
  // With a bridge, br_netfilter's IPv6 sysctl is the one that counts, not the IPv4 one.
  const cni0: Link = { ...snapshot().links[0], index: 9, name: "cni0", kind: "bridge" };
  const bridged = snapshot(false, { links: [...snapshot(false).links, cni0] });
  const br = (v6: string | null) =>
    hostChecks(f, bridged, { ...settings, ipv6: { ...settings.ipv6!, bridgeNfCallIp6tables: v6 } })
      .find((r) => r.check === "host.br-netfilter")!;
  assert.equal(br("1").status, "ok", br("1").saw);
  assert.equal(br("1").saw, "bridge cni0; bridge-nf-call-ip6tables = 1");
  assert.equal(br("0").status, "warn");
  assert.match(br("0").saw, /bridge-nf-call-ip6tables = 0: ip6tables /);
  assert.equal(
    br("0").fix,
    "modprobe br_netfilter && sysctl -w net.bridge.bridge-nf-call-ip6tables=1",
  );
  const mtu = mtuChecks(f, snapshot(false));
  assert.deepEqual(mtu.map((r) => r.check), ["mtu.device6"]);
  // Probe targets: the IPv6 VTEP address only.
  assert.deepEqual(overlayTargets("vxlan", f.peers[0]).map((t) => t.address), ["2001:db8:1:2::"]);
  assert.deepEqual(overlayTargets("host-gw", f.peers[0]).map((t) => t.address), [
    "2001:db8:1:2::1",
  ]);
});

Deno.test("doctor never calls a route stale that is not weft's or flanneld's (underlay, foreign, IPv6-only)", () => {
  const eth0 = 2;
  const kernel = 2; // proto kernel: the underlay's connected routes, the bridge's
  const underlay6 = [
    { dst: "2001:db8:ff::/64", dev: eth0, protocol: kernel, metric: 256 },
    { dst: "::/0", gw: "2001:db8:ff::1", dev: eth0, protocol: 3, metric: 1024 },
  ];
  const underlay4 = [
    { dst: "198.18.0.0/24", dev: eth0, protocol: kernel },
    { dst: "0.0.0.0/0", gw: "198.18.0.1", dev: eth0, protocol: 3 },
  ];
  for (const v4 of [true, false]) {
    const k = snapshot(v4, {
      routes: [...snapshot(v4).routes, ...underlay4],
      routes6: [...snapshot(v4).routes6!, ...underlay6],
    });
    const rs = kernelChecks(facts(v4), k);
    assert.deepEqual(notOk(rs), [], `${v4 ? "dual" : "IPv6-only"}: ${JSON.stringify(rs, null, 1)}`);
    assert.ok(!rs.some((r) => /route del/.test(r.fix ?? "")), JSON.stringify(rs));
  }
  // IPv6-only: the IPv4 family has the empty network 0.0.0.0/0; nothing of it is a stray.
  const f6 = facts(false);
  const k6 = snapshot(false, { routes: underlay4 });
  assert.deepEqual(strayChecks(f6, k6, familyView(k6, 4), null, "eth0"), []);
  // Inside IPv6Network, no lease: weft's own (proto 87) is stale with its `ip -6 route del`; an
  // operator's static route there is named, never to be deleted.
  const hostGw = { ...f6, backendType: "host-gw" };
  hostGw.config = parseNetworkConfig(JSON.stringify({
    EnableIPv4: false,
    EnableIPv6: true,
    IPv6Network: "2001:db8:1::/56",
    Backend: { Type: "host-gw" },
  }));
  const ours = { dst: "2001:db8:1:44::/64", gw: "2001:db8:ff::44", dev: eth0, protocol: 87 };
  const static6 = { dst: "2001:db8:1:55::/64", gw: "2001:db8:ff::55", dev: eth0, protocol: 4 };
  const k = snapshot(false, {
    routes6: [
      { dst: "2001:db8:1:2::/64", gw: "2001:db8:ff::12", dev: eth0, protocol: 87 },
      ours,
      static6,
      ...underlay6,
    ],
  });
  const rs = kernelChecks(hostGw, k);
  const stale = rs.filter((r) => r.check === "kernel.stale-route");
  assert.equal(stale.length, 1, JSON.stringify(rs, null, 1));
  assert.match(stale[0].fix!, /^ip -6 route del 2001:db8:1:44::\/64 via 2001:db8:ff::44 dev eth0$/);
  const foreign = rs.filter((r) => r.check === "kernel.foreign-route");
  assert.equal(foreign.length, 1, JSON.stringify(rs, null, 1));
  assert.match(foreign[0].saw, /2001:db8:1:55::\/64 via 2001:db8:ff::55 dev eth0 \(proto 4\)/);
  assert.ok(!/del/.test(foreign[0].fix!), foreign[0].fix!);
  assert.ok(rs.some((r) => r.check === "kernel.peer" && r.subnet === "2001:db8:1:2::/64"));
  // A foreign route over part of a peer's subnet breaks it (fail) but is never to be deleted.
  const part = { dst: "2001:db8:1:2::/80", dev: 9, protocol: kernel };
  const over = kernelChecks(hostGw, snapshot(false, { routes6: [...k.routes6!, part] }));
  const cover = over.find((r) => r.check === "kernel.stale-route" && r.subnet);
  assert.ok(cover, JSON.stringify(over, null, 1));
  assert.equal(cover.status, "fail");
  assert.match(cover.saw, /2001:db8:1:2::\/80 dev if9 \(proto 2, not weft's\) covers peer/);
  assert.ok(!/route del/.test(cover.fix!), cover.fix!);
});

Deno.test("doctor dual stack: IPv6 forwarding, ip6tables masquerade and the IPv6 VTEP's MTU", () => {
  const f = facts();
  const base: HostSettings = {
    ipForward: "1",
    rpFilter: 0,
    bridgeNfCallIptables: null,
    filterRules: ["-P FORWARD ACCEPT"],
    natRules: ["-A POSTROUTING -j FLANNEL-POSTRTG", "-A FLANNEL-POSTRTG -j MASQUERADE"],
    iptablesError: null,
    txChecksum: true,
    ipv6: { forwarding: "0", filterRules: ["-P FORWARD DROP"], natRules: [], iptablesError: null },
  };
  const r = hostChecks(f, snapshot(), base);
  assert.match(
    r.find((x) => x.check === "host.ip-forward6")!.fix!,
    /sysctl -w net\.ipv6\.conf\.all\.forwarding=1/,
  );
  assert.match(
    r.find((x) => x.check === "host.forward6")!.fix!,
    /ip6tables -A FORWARD -s 2001:db8:1::\/56 -j ACCEPT/,
  );
  assert.match(r.find((x) => x.check === "host.masquerade6")!.saw, /ip6tables nat table lacks/);
  assert.equal(r.find((x) => x.check === "host.masquerade")!.status, "ok");
  const big = snapshot();
  big.links = big.links.map((l) =>
    l.index === VTEP6 ? vtep(VTEP6, "flannel-v6.1", MAC61, "2001:db8:ff::11", 1450) : l
  );
  const m = mtuChecks(f, big);
  assert.equal(m.find((x) => x.check === "mtu.device")!.status, "ok");
  assert.match(
    m.find((x) => x.check === "mtu.device6" && x.status === "fail")!.saw,
    /flannel-v6\.1 MTU 1450 > eth0 MTU 1500 - 70/,
  );
});

Deno.test("doctor ICMPv6: echo request size, replies and packet-too-big parsed", () => {
  const req = echoRequest6(0x1234, 7, 1280);
  assert.equal(req.length, 1240);
  assert.equal(req[0], 128);
  const from = parseIp6("2001:db8:1:2::");
  const reply = req.slice(0, 64);
  reply[0] = 129;
  assert.deepEqual(parseIcmp6(reply, reply.length, from), {
    kind: "reply",
    from,
    id: 0x1234,
    seq: 7,
  });
  // Packet too big, MTU 1400, quoting our echo to 2001:db8:1:2::.
  const err = new Uint8Array(8 + 40 + 8);
  const v = new DataView(err.buffer);
  err[0] = 2;
  v.setUint32(4, 1400);
  err[8] = 0x60;
  err[8 + 6] = 58;
  v.setBigUint64(8 + 24, from >> 64n);
  v.setBigUint64(8 + 32, from & 0xffffffffffffffffn);
  err.set(req.subarray(0, 8), 48);
  assert.deepEqual(parseIcmp6(err, err.length, parseIp6("2001:db8:ff::1")), {
    kind: "unreachable",
    from: parseIp6("2001:db8:ff::1"),
    type: 2,
    mtu: 1400,
    dst: from,
    id: 0x1234,
    seq: 7,
  });
  assert.equal(parseIcmp6(reply, 4, from), null);
});

Deno.test("doctor crafted VXLAN probe: VNI, inner MACs, IPv4 header and echo in place", () => {
  const frame = vxlanEchoFrame(
    { vni: 7, mac: MAC1, vtepIp: "198.19.1.0", localIp: "198.18.0.11" },
    { publicIP: "198.18.0.12", port: 8472, mac: MAC2, vtepIp: "198.19.2.0" },
    0x1234,
    9,
    84,
  );
  assert.equal(frame.length, 8 + 14 + 84);
  const v = new DataView(frame.buffer);
  assert.equal(frame[0], 0x08, "the I flag");
  assert.equal(v.getUint32(4) >>> 8, 7, "the VNI");
  assert.deepEqual([...frame.subarray(8, 14)], [0x0e, 0, 0, 0, 0, 2], "to the peer's VTEP MAC");
  assert.deepEqual([...frame.subarray(14, 20)], [0x0e, 0, 0, 0, 0, 1], "from ours");
  assert.equal(v.getUint16(20), 0x0800);
  const ip = frame.subarray(22, 42);
  assert.equal(inetChecksum(ip), 0, "a valid IPv4 header checksum");
  assert.equal(v.getUint16(22 + 2), 84);
  assert.deepEqual([...ip.subarray(12, 20)], [198, 19, 1, 0, 198, 19, 2, 0]);
  assert.deepEqual([...frame.subarray(42)], [...echoRequest(0x1234, 9, 84)]);
});
