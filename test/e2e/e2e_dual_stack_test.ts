/**
 * Dual stack on host-gw and vxlan, on Deno KV and etcd: three hosts with IPv4 and IPv6 underlay
 * addresses, one lease per host holding both halves, IPv6 entries beside the IPv4 ones (host-gw:
 * routes via each peer's PublicIPv6; vxlan: `flannel-v6.1` with per-peer neighbour, FDB and
 * onlink route; routes marked proto 87), pods reaching each other over both families, a route
 * deleted by hand put back (host-gw) or the IPv6 VTEP recreated and replayed (vxlan), a peer's
 * removal taking both families' entries with it, and `weft cleanup` removing both families'
 * routes and nothing else. Except with DirectRouting: an agent restarted (SIGTERM) while pods ping
 * over IPv4 and IPv6 loses no echo, and leaves the same leases and entries behind.
 */
import assert from "node:assert/strict";
import { withCluster } from "../kit/cluster.ts";
import { sleep, waitFor } from "../kit/proc.ts";
import { deleteLease, leaseEntries } from "../kit/faults.ts";
import { entries6, type Peer6, wantEntries6 } from "../kit/entries6.ts";
import { formatCidr6 } from "../../src/base/ipv6.ts";
import { formatCidr } from "../../src/base/ipv4.ts";

for (const registry of ["kv", "etcd"] as const) {
  for (
    const [backend, direct] of [["host-gw", false], ["vxlan", false], ["vxlan", true]] as const
  ) {
    // DirectRouting (peers on one link get plain routes via their public addresses) on KV only.
    if (direct && registry === "etcd") continue;
    Deno.test({
      name:
        `dual stack ${backend}${
          direct ? " DirectRouting" : ""
        } on ${registry}: 3 hosts, pods ping over IPv4 and IPv6, ` +
        `entries per family, removal`,
      sanitizeOps: false,
      sanitizeResources: false,
      async fn() {
        await withCluster({ hosts: 3, registry, ipv6: true }, async (c) => {
          await c.startAll({
            backend,
            // Masquerade rules per family: nftables on host-gw, iptables/ip6tables on vxlan.
            netConfig: {
              EnableIPv6: true,
              IPv6Network: c.network6,
              ...(backend === "host-gw" ? { EnableNFTables: true } : {}),
              ...(direct ? { Backend: { DirectRouting: true } } : {}),
            },
            // The self-checks (every 5 s) put back a route deleted by hand.
            extraArgs: ["--iptables-forward-rules=false", "--ip-masq"],
          });
          const envs = await Promise.all(c.hosts.map(async (h) => (await c.readSubnetEnv(h))!));
          for (const e of envs) {
            assert.ok(e.ipv6, "subnet.env has the IPv6 lines");
            assert.equal(formatCidr6(e.ipv6.network), "2001:db8:1::/56");
            assert.equal(e.ipv6.subnet.prefix, 64);
          }
          // Each lease: both halves in the key, PublicIPv6 in the value.
          {
            const leases = await leaseEntries(c);
            assert.equal(leases.length, 3);
            for (const [i, h] of c.hosts.entries()) {
              const key = `${formatCidr(envs[i].subnet).replace("/", "-")}&${
                formatCidr6(envs[i].ipv6!.subnet).replace("/", "-")
              }`;
              const l = leases.find((x) => x.key === key);
              assert.ok(l, `${h.name}: no lease ${key} in ${leases.map((x) => x.key)}`);
              assert.match(
                l.value,
                new RegExp(
                  `^\\{"PublicIP":"${h.ip}","PublicIPv6":"${h.ip6}","BackendType":"${backend}"`,
                ),
              );
              if (backend === "vxlan") {
                // flanneld's form: BackendV6Data with the IPv6 VTEP's own MAC.
                const mac6 =
                  JSON.parse(await c.exec(h, ["ip", "-j", "link", "show", "flannel-v6.1"]))[0]
                    .address;
                assert.ok(
                  l.value.includes(`"BackendV6Data":{"VNI":1,"VtepMAC":"${mac6}"}`),
                  l.value,
                );
                // Pods get the smaller MTU: VXLAN over IPv6 costs 70 bytes, over IPv4 50.
                assert.equal(envs[i].mtu, 1430);
              }
            }
            const macs6 = new Map<string, string>();
            for (const l of leases) {
              const v = JSON.parse(l.value);
              if (v.BackendV6Data) macs6.set(v.PublicIPv6, v.BackendV6Data.VtepMAC);
            }
            const peers6: Peer6[] = c.hosts.map((h, i) => ({
              host: h,
              subnet6: envs[i].ipv6!.subnet,
              mac6: macs6.get(h.ip6!),
            }));
            await c.waitPeersProgrammed();
            // The masquerade rules of each family, for the IPv6 halves of config and lease.
            for (const [i, h] of c.hosts.entries()) {
              const net6 = formatCidr6(envs[i].ipv6!.network);
              const pod6 = formatCidr6(envs[i].ipv6!.subnet);
              await waitFor(`${h.name}: IPv6 masquerade rules`, async () => {
                if (backend === "host-gw") {
                  const t = await c.exec(h, ["nft", "list", "table", "ip6", "flannel-ipv6"]);
                  assert.match(t, new RegExp(`ip6 saddr ${pod6} ip6 daddr ${net6} return`));
                  assert.match(t, new RegExp(`ip6 saddr ${net6} ip6 daddr != ff00::/8 masquerade`));
                  await c.exec(h, ["nft", "list", "table", "ip", "flannel-ipv4"]);
                } else {
                  const t = await c.exec(h, ["ip6tables-save", "-t", "nat"]);
                  assert.match(t, new RegExp(`-A FLANNEL-POSTRTG -s ${pod6} -d ${net6} `));
                  assert.match(t, new RegExp(`-A FLANNEL-POSTRTG -s ${net6} ! -d ff00::/8 `));
                  const t4 = await c.exec(h, ["iptables-save", "-t", "nat"]);
                  assert.match(t4, /-A FLANNEL-POSTRTG -s 198\.19\.0\.0\/16 ! -d 224\.0\.0\.0\/4 /);
                }
                return true;
              }, { timeoutMs: 20_000, intervalMs: 200 });
            }
            // Exact IPv6 routes on every host: each peer's IPv6 subnet via its PublicIPv6; vxlan:
            // per peer the IPv6 neighbour and FDB entry on flannel-v6.1 (DirectRouting: none, all
            // hosts share one link).
            const o6 = { vxlan: backend === "vxlan", direct };
            const want6 = (h: typeof c.hosts[0], peers = c.hosts) =>
              wantEntries6(h, peers6.filter((p) => peers.includes(p.host)), o6);
            const lines = async (h: typeof c.hosts[0]) => (await entries6(c, h)).routes;
            const vxlan6 = async (h: typeof c.hosts[0]) => {
              const e = await entries6(c, h);
              return { neigh: e.neigh, fdb: e.fdb };
            };
            for (const h of c.hosts) {
              await waitFor(`${h.name}: IPv6 routes to both peers`, async () => {
                assert.deepEqual(await lines(h), want6(h).routes);
                return true;
              }, { timeoutMs: 20_000, intervalMs: 200 });
              if (backend === "vxlan") {
                assert.deepEqual(await vxlan6(h), { neigh: want6(h).neigh, fdb: want6(h).fdb });
              }
            }
            // Pods on every host reach each other over both families.
            for (const h of c.hosts) await c.addPod(h);
            for (const p of c.pods()) assert.ok(p.ip6, `${p.name} has an IPv6 address`);
            const m4 = await c.pingMatrix({ count: 2 });
            assert.ok(m4.ok, `IPv4 pings failed: ${JSON.stringify(m4.failed)}`);
            const m6 = await c.pingMatrix({ count: 2, family: 6 });
            assert.ok(m6.ok, `IPv6 pings failed: ${JSON.stringify(m6.failed)}`);
            if (backend === "vxlan" && !direct) {
              // Full-size packets at the pod MTU cross flannel-v6.1 unfragmented: the IPv6 VTEP
              // is 70 bytes under the underlay (the kernel caps it there; a pod MTU 50 under, as
              // flannel writes, would not fit).
              const [a, b] = c.pods();
              const mtus = await c.exec(a.host, ["ip", "-o", "link", "show", "flannel-v6.1"]);
              assert.match(mtus, / mtu 1430 /);
              const full = await c.ping(a, b.ip6!, {
                count: 2,
                size: envs[0].mtu - 40 - 8, // IPv6 and ICMPv6 headers
                dontFragment: true,
              });
              assert.equal(full.received, 2, `full-size IPv6 pings: ${JSON.stringify(full)}`);
            }

            // h1's agent stopped with SIGTERM and started again while h2's pod pings h1's pod
            // over IPv4 and IPv6: no echo lost in either family, and afterwards the same leases
            // and the same entries of both families on every host.
            const [h1, h2, h3] = c.hosts;
            if (!direct) {
              const [p1, p2] = c.pods();
              const snapshot = async () => ({
                leases: (await leaseEntries(c)).map((l) => `${l.key} ${l.value}`).sort(),
                entries: await Promise.all(c.hosts.map(async (h) => {
                  const out = [
                    ...(await c.exec(h, ["ip", "route", "show", "proto", "87"])).split("\n"),
                    ...(await lines(h)),
                  ];
                  if (backend === "vxlan") {
                    for (const dev of ["flannel.1", "flannel-v6.1"]) {
                      const neigh = ["ip", "neigh", "show", "dev", dev, "nud", "permanent"];
                      out.push(...(await c.exec(h, neigh)).split("\n").map((x) => `${dev} ${x}`));
                      out.push(
                        ...(await c.exec(h, ["bridge", "fdb", "show", "dev", dev])).split("\n")
                          .filter((x) => x.includes(" dst ")),
                      );
                    }
                  }
                  return `${h.name}:\n${
                    out.map((x) => x.trim()).filter(Boolean).sort().join("\n")
                  }`;
                })),
              });
              const before = await snapshot();
              // Back-to-back batches of 10 echoes (0.1 s apart) until one batch has run wholly
              // after h1 is ready again: the pings span the whole restart however long it takes.
              let readyAt = Infinity;
              const across = async (to: string) => {
                const sum = { sent: 0, received: 0, batches: 0 };
                for (let i = 0; i < 100; i++) {
                  const t = Date.now();
                  const p = await c.ping(p2, to, { count: 10, intervalS: 0.1, timeoutS: 1 });
                  sum.sent += p.sent;
                  sum.received += p.received;
                  sum.batches++;
                  if (t > readyAt) return sum;
                }
                throw new Error(`h1's agent not ready again after 100 ping batches to ${to}`);
              };
              const pinging = Promise.all([across(p1.ip), across(p1.ip6!)]);
              await sleep(500); // let some echoes through before the restart
              await h1.agent!.restart("SIGTERM");
              const env1 = await h1.agent!.waitReady();
              readyAt = Date.now();
              const [pr4, pr6] = await pinging;
              console.log(
                `pings across the restart: IPv4 ${pr4.received}/${pr4.sent}, ` +
                  `IPv6 ${pr6.received}/${pr6.sent}`,
              );
              assert.ok(pr4.sent > 0 && pr6.sent > 0, "no pings sent across the restart");
              assert.equal(pr4.received, pr4.sent, `IPv4 pings lost: ${JSON.stringify(pr4)}`);
              assert.equal(pr6.received, pr6.sent, `IPv6 pings lost: ${JSON.stringify(pr6)}`);
              assert.equal(formatCidr(env1.subnet), formatCidr(envs[0].subnet));
              assert.equal(formatCidr6(env1.ipv6!.subnet), formatCidr6(envs[0].ipv6!.subnet));
              // The restarted agent reconciles its peers after ready: wait for the exact state.
              await waitFor("the same leases and entries after h1's restart", async () => {
                assert.deepEqual(await snapshot(), before);
                return true;
              }, { timeoutMs: 20_000, intervalMs: 200 });
            }

            // host-gw: a route deleted by hand comes back (the backend's self-check). vxlan: the
            // IPv6 VTEP deleted by hand is recreated (same MAC) with every peer's entries replayed.
            if (backend === "host-gw") {
              await c.exec(h1, ["ip", "-6", "route", "del", formatCidr6(envs[1].ipv6!.subnet)]);
            } else await c.exec(h1, ["ip", "link", "del", "flannel-v6.1"]);
            await waitFor("h1 to put back its IPv6 entries", async () => {
              assert.deepEqual(await lines(h1), want6(h1).routes);
              if (backend === "vxlan") {
                assert.deepEqual(await vxlan6(h1), { neigh: want6(h1).neigh, fdb: want6(h1).fdb });
              }
              return true;
            }, { timeoutMs: 20_000, intervalMs: 200 });
            if (backend === "vxlan") {
              const r6 = await c.ping(c.pods()[1], c.pods()[0].ip6!, { count: 2 });
              assert.equal(r6.received, 2, "h2 to h1 over IPv6 after flannel-v6.1 was recreated");
            }

            // h3 stops (its datapath and lease stay) and its lease is deleted: both families' routes
            // to it go from h1 and h2.
            await h3.agent!.stop();
            const key3 = leases.find((l) =>
              l.key.startsWith(formatCidr(envs[2].subnet).replace("/", "-"))
            )!
              .key;
            assert.ok(await deleteLease(c, key3));
            for (const h of [h1, h2]) {
              await waitFor(`${h.name}: h3's routes removed in both families`, async () => {
                assert.deepEqual(await lines(h), want6(h, [h1, h2]).routes);
                const v4 = await c.exec(h, ["ip", "route", "show", "proto", "87"]);
                assert.ok(!v4.includes(formatCidr(envs[2].subnet)), v4);
                if (backend === "vxlan") {
                  assert.deepEqual(await vxlan6(h), {
                    neigh: want6(h, [h1, h2]).neigh,
                    fdb: want6(h, [h1, h2]).fdb,
                  });
                }
                return true;
              }, { timeoutMs: 20_000, intervalMs: 200 });
            }
            const m6b = await c.ping(c.pods()[0], c.pods()[1].ip6!, { count: 2 });
            assert.equal(m6b.received, 2, "h1 to h2 over IPv6 after h3 left");

            // weft cleanup on h1 (agent stopped) removes its routes of both families (and vxlan's two
            // devices), nothing else.
            await h1.agent!.stop();
            const before6 = await c.exec(h1, ["ip", "-6", "route", "show"]);
            const cl = await c.weft(h1, c.cleanupArgs(h1), { timeoutMs: 60_000 });
            assert.equal(cl.code, 0, cl.stdout + cl.stderr);
            assert.deepEqual(await lines(h1), [], "IPv6 routes left after cleanup");
            assert.equal((await c.exec(h1, ["ip", "route", "show", "proto", "87"])).trim(), "");
            const links = await c.exec(h1, ["ip", "-o", "link", "show"]);
            assert.ok(!/flannel/.test(links), `weft's devices left after cleanup:\n${links}`);
            // ... and its masquerade rules of both families.
            const fw = backend === "host-gw"
              ? await c.exec(h1, ["nft", "list", "tables"])
              : (await c.exec(h1, ["ip6tables-save"])) + (await c.exec(h1, ["iptables-save"]));
            assert.ok(!/flannel|FLANNEL/.test(fw), `firewall rules left after cleanup:\n${fw}`);
            const after6 = await c.exec(h1, ["ip", "-6", "route", "show"]);
            assert.deepEqual(
              after6.trim().split("\n").sort(),
              // Weft's routes, and the kernel's on weft's devices (gone with them), only.
              before6.trim().split("\n").filter((l) =>
                !l.includes("proto 87") && !/ dev flannel(-v6)?\.1 /.test(l)
              ).sort(),
              "cleanup touched IPv6 routes that are not weft's",
            );
          }
        });
      },
    });
  }
}
