/**
 * IPv6-only networks (`"EnableIPv4": false`): vxlan on Deno KV with hosts that have no IPv4
 * address at all, host-gw (nftables) on etcd with hosts whose IPv4 address (the registry's
 * underlay) goes unused. Three hosts each: leases as flanneld writes them (key `0.0.0.0-0&…`,
 * `"PublicIP":"0.0.0.0"`, vxlan's data in BackendV6Data only), subnet.env without the IPv4 lines,
 * the exact IPv6 entries per peer, pods reaching each other over IPv6, no IPv4 state at all (no
 * `flannel.1`, no proto-87 IPv4 route, no IPv4 FLANNEL chains or `ip flannel-ipv4` table), a
 * restart keeping the lease (found by PublicIPv6 and the subnet.env IPv6 subnet), a peer's
 * removal taking its entries, and `weft cleanup` removing the rest.
 */
import assert from "node:assert/strict";
import { type Cluster, type Host, type RunResult, withCluster } from "../kit/cluster.ts";
import { waitFor } from "../kit/proc.ts";
import { deleteLease, leaseEntries } from "../kit/faults.ts";
import { entries6, type Peer6, VTEP6, wantEntries6 } from "../kit/entries6.ts";
import { formatCidr6, formatIp6 } from "../../src/base/ipv6.ts";

const WAIT = { timeoutMs: 20_000, intervalMs: 200 };
const HEALTHZ = 9481;
/**
 * The agents' flags beyond the cluster's (registry, --iface, --subnet-file), given to `weft
 * doctor` too so it checks what the agent does. The agents reconcile rarely so they do not repair
 * the doctor's breakage while it looks (peer changes come by the watch, not the reconcile).
 */
const AGENT_FLAGS = [
  "--ip-masq",
  "--ip-blackhole-route",
  "--peer-probe-interval",
  "2",
  "--reconcile-interval",
  "3600",
];

/** `weft doctor` on `h` with its agent's flags. */
async function doctor(c: Cluster, h: Host): Promise<RunResult> {
  return await c.weft(h, ["doctor", ...c.hostFlags(h, HEALTHZ), ...AGENT_FLAGS], {
    timeoutMs: 30_000,
  });
}

const lines = (r: RunResult, status: string) =>
  r.stdout.split("\n").filter((l) => l.startsWith(`${status} `));
const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/**
 * Doctor on a healthy IPv6-only node: exit 0, no warn or fail, nothing about an IPv4 half (no
 * `0.0.0.0/0`, no IPv4-only check, no IPv4 route to delete).
 */
async function expectHealthy(c: Cluster, h: Host, what: string): Promise<string> {
  const r = await doctor(c, h);
  const out = r.stdout + r.stderr;
  assert.deepEqual([...lines(r, "warn"), ...lines(r, "fail")], [], `${what}: ${out}`);
  assert.equal(r.code, 0, `${what}: ${out}`);
  assert.ok(!out.includes("0.0.0.0"), `${what}: an IPv4 half named:\n${out}`);
  const v4checks = r.stdout.split("\n").filter((l) =>
    /^\w+ +(kernel\.device|kernel\.stale|host\.ip-forward|host\.forward|host\.masquerade|host\.iptables|host\.rp-filter|host\.tx-checksum) *:/
      .test(l)
  );
  assert.deepEqual(v4checks, [], `${what}: IPv4 checks on an IPv6-only node:\n${out}`);
  assert.ok(!/route del|flannel\.1\b|iptables /.test(r.stdout), `${what}: ${out}`);
  return r.stdout;
}

for (
  const [backend, registry] of [["vxlan", "kv"], ["host-gw", "etcd"]] as const
) {
  // etcd listens on the registry host's IPv4 address: the etcd cluster's hosts keep theirs.
  const ipv4 = registry === "etcd";
  Deno.test({
    name: `IPv6-only ${backend} on ${registry}${ipv4 ? "" : " (hosts without IPv4)"}: ` +
      `flanneld's leases, IPv6 entries and pings, no IPv4 state, restart, removal, cleanup`,
    sanitizeOps: false,
    sanitizeResources: false,
    async fn() {
      await withCluster({ hosts: 3, registry, ipv6: true, ipv4 }, async (c) => {
        await c.startAll({
          backend,
          netConfig: {
            Network: undefined,
            EnableIPv4: false,
            EnableIPv6: true,
            IPv6Network: c.network6,
            ...(backend === "host-gw" ? { EnableNFTables: true } : {}),
          },
          healthzPort: HEALTHZ,
          extraArgs: AGENT_FLAGS,
        });
        const [h1, h2, h3] = c.hosts;
        // subnet.env as flanneld writes it for IPv6-only: the IPv6 lines, no IPv4 ones.
        const envs = await Promise.all(c.hosts.map(async (h) => (await c.readSubnetEnv(h))!));
        const mtu = backend === "vxlan" ? 1430 : 1500; // VXLAN over IPv6 costs 70 bytes
        for (const [i, h] of c.hosts.entries()) {
          const s6 = envs[i].ipv6!.subnet;
          assert.equal(s6.prefix, 64);
          assert.equal(
            await Deno.readTextFile(h.subnetFile),
            `FLANNEL_IPV6_NETWORK=2001:db8:1::/56\nFLANNEL_IPV6_SUBNET=${
              formatCidr6(s6)
                .replace("/", "1/")
            }\nFLANNEL_MTU=${mtu}\nFLANNEL_IPMASQ=true\n`,
          );
        }

        // One lease per host, as flanneld writes an IPv6-only lease.
        const leases = await leaseEntries(c);
        assert.equal(leases.length, 3, JSON.stringify(leases));
        const peers6: Peer6[] = [];
        for (const [i, h] of c.hosts.entries()) {
          const s6 = envs[i].ipv6!.subnet;
          const key = `0.0.0.0-0&${formatCidr6(s6).replace("/", "-")}`;
          const l = leases.find((x) => x.key === key);
          assert.ok(l, `${h.name}: no lease ${key} in ${leases.map((x) => x.key)}`);
          let mac6: string | undefined;
          let data = "";
          if (backend === "vxlan") {
            mac6 = JSON.parse(await c.exec(h, ["ip", "-j", "link", "show", VTEP6]))[0].address;
            data = `,"BackendV6Data":\\{"VNI":1,"VtepMAC":"${mac6}"\\}`;
          }
          assert.match(
            l.value,
            new RegExp(
              `^\\{"PublicIP":"0\\.0\\.0\\.0","PublicIPv6":"${h.ip6}",` +
                `"BackendType":"${backend}"${data}(,"WeftNodeID":"[^"]+")?\\}$`,
            ),
          );
          peers6.push({ host: h, subnet6: s6, mac6 });
        }

        // The exact IPv6 entries per peer on every host.
        const o6 = { vxlan: backend === "vxlan" };
        const want = (h: typeof h1, hosts = c.hosts) =>
          wantEntries6(h, peers6.filter((p) => hosts.includes(p.host)), o6);
        for (const h of c.hosts) {
          await waitFor(`${h.name}: IPv6 entries for both peers`, async () => {
            assert.deepEqual(await entries6(c, h), want(h));
            return true;
          }, WAIT);
        }

        // Masquerade rules for the IPv6 halves only; nothing IPv4.
        for (const [i, h] of c.hosts.entries()) {
          const pod6 = formatCidr6(envs[i].ipv6!.subnet);
          await waitFor(`${h.name}: IPv6 masquerade rules`, async () => {
            if (backend === "host-gw") {
              const t = await c.exec(h, ["nft", "list", "table", "ip6", "flannel-ipv6"]);
              assert.match(t, new RegExp(`ip6 saddr ${pod6} ip6 daddr 2001:db8:1::/56 return`));
            } else {
              const t = await c.exec(h, ["ip6tables-save", "-t", "nat"]);
              assert.match(t, new RegExp(`-A FLANNEL-POSTRTG -s ${pod6} -d 2001:db8:1::/56 `));
            }
            return true;
          }, WAIT);
        }
        for (const [i, h] of c.hosts.entries()) {
          // --ip-blackhole-route: the own IPv6 subnet's (as flanneld's AddBlackholeV6Route).
          const bh6 = await c.exec(h, ["ip", "-6", "route", "show", "type", "blackhole"]);
          assert.match(
            bh6,
            new RegExp(`^blackhole ${formatCidr6(envs[i].ipv6!.subnet)} .*metric 4294967295`, "m"),
          );
          assert.equal(
            (await c.exec(h, ["ip", "-4", "route", "show", "type", "blackhole"])).trim(),
            "",
          );
          const link = await c.run(h, ["ip", "link", "show", "flannel.1"]);
          assert.notEqual(link.code, 0, `${h.name} has flannel.1`);
          assert.equal((await c.exec(h, ["ip", "route", "show", "proto", "87"])).trim(), "");
          const v4rules = await c.exec(h, ["iptables-save"]);
          assert.ok(!/FLANNEL/.test(v4rules), `${h.name}: IPv4 chains:\n${v4rules}`);
          const tables = await c.exec(h, ["nft", "list", "tables"]);
          assert.ok(!/table ip flannel-ipv4/.test(tables), `${h.name}: ${tables}`);
          if (!ipv4) {
            const a = await c.exec(h, ["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
            assert.equal(a.trim(), "", `${h.name}'s eth0 has no IPv4 address`);
          }
        }

        // `weft leases` shows each lease's IPv6 subnet and PublicIPv6, "-" for the IPv4 half.
        const table = await c.weftOk(h1, ["leases", ...c.registryArgs()]);
        for (const p of peers6) {
          assert.match(
            table,
            new RegExp(`^-\\s+-\\s+${formatCidr6(p.subnet6)}\\s+${p.host.ip6}\\s+${backend}`, "m"),
          );
        }

        // Pods reach each other over IPv6 (they have no IPv4 address).
        for (const h of c.hosts) await c.addPod(h);
        for (const p of c.pods()) {
          assert.ok(p.ip6, `${p.name} has an IPv6 address`);
          assert.equal(p.ip, "", `${p.name} has no IPv4 address`);
        }
        const m6 = await c.pingMatrix({ count: 2, family: 6 });
        assert.ok(m6.ok, `IPv6 pings failed: ${JSON.stringify(m6.failed)}`);
        // The agent's own probes (ICMPv6 over the overlay) see both peers by their IPv6 subnets.
        await waitFor("h1's weft_peer_reachable 1 for both peers' IPv6 subnets", async () => {
          const { code, body } = await h1.agent!.readyzText("/metrics");
          if (code !== 200) return false;
          return envs.slice(1).every((e) =>
            new RegExp(
              `^weft_peer_reachable\\{[^}]*subnet="${formatCidr6(e.ipv6!.subnet)}"[^}]*\\} 1$`,
              "m",
            )
              .test(body)
          );
        }, { timeoutMs: 30_000, intervalMs: 250 });

        // weft doctor with the agent's flags: healthy, every check about the IPv6 half.
        const sub2 = formatCidr6(peers6[1].subnet6);
        const gw2 = formatIp6(peers6[1].subnet6.ip);
        // What the probes ping: vxlan the peer's VTEP address, host-gw its bridge's (subnet::1).
        const probed2 = backend === "vxlan" ? gw2 : formatIp6(peers6[1].subnet6.ip + 1n);
        const healthy = await expectHealthy(c, h1, "a healthy IPv6-only cluster");
        for (
          const re of [
            /^ok +iface\.external: eth0 /m,
            /^ok +host\.ip-forward6: /m,
            /^ok +host\.masquerade6: /m,
            new RegExp(`^ok +kernel\\.peer: peer ${esc(sub2)} \\(${esc(h2.ip6!)}\\)`, "m"),
            new RegExp(`^ok +probe\\.overlay: peer ${esc(sub2)} .*${esc(probed2)} answers`, "m"),
            ...(backend === "vxlan" ? [/^ok +kernel\.device6: flannel-v6\.1: /m] : []),
          ]
        ) assert.match(healthy, re);
        // weft status: the agent's picture, the peers by their IPv6 subnets.
        const st = await c.weft(h1, ["status", "--healthz-port", String(HEALTHZ)], {
          timeoutMs: 20_000,
        });
        assert.equal(st.code, 0, st.stdout + st.stderr);
        // (The lease's key is flanneld's `0.0.0.0-0&…`; no IPv4 subnet or address is shown.)
        assert.ok(!/0\.0\.0\.0\/0|public IP 0\.0\.0\.0/.test(st.stdout), st.stdout);
        assert.match(st.stdout, new RegExp(`^${esc(sub2)}\\s+${esc(h2.ip6!)}\\s+yes\\s`, "m"));
        // One break, named with its fix, then ok after the repair: vxlan h2's IPv6 neighbour,
        // host-gw h2's IPv6 route.
        if (backend === "vxlan") {
          await c.exec(h1, ["ip", "-6", "neigh", "del", gw2, "dev", VTEP6]);
          const r = await doctor(c, h1);
          const hit = lines(r, "fail").find((l) =>
            new RegExp(`^fail kernel\\.neigh: peer ${esc(sub2)} .*neighbour ${esc(gw2)} missing`)
              .test(l)
          );
          assert.ok(hit, r.stdout + r.stderr);
          assert.equal(r.code, 1, r.stdout);
          const set = ["neigh", "replace", gw2, "lladdr", peers6[1].mac6!, "dev", VTEP6];
          assert.match(hit, new RegExp(`fix: .*ip -6 ${esc(set.join(" "))} nud permanent`));
          await c.exec(h1, ["ip", "-6", ...set, "nud", "permanent"]);
        } else {
          // host-gw's self-check re-adds a deleted route within 5 s: stop the agent for the break
          // (SIGTERM keeps the datapath) and start it again after the repair.
          await h1.agent!.stop();
          await c.exec(h1, ["ip", "-6", "route", "del", sub2]);
          const r = await doctor(c, h1);
          const want = `${sub2} via ${h2.ip6} dev eth0`;
          const hit = lines(r, "fail").find((l) =>
            new RegExp(`^fail kernel\\.route: peer ${esc(sub2)} .*route missing`).test(l)
          );
          assert.ok(hit, r.stdout + r.stderr);
          assert.equal(r.code, 1, r.stdout);
          assert.match(hit, new RegExp(`fix: .*ip -6 route replace ${esc(want)} proto 87`));
          await c.exec(h1, ["ip", "-6", "route", "replace", ...want.split(" "), "proto", "87"]);
          await h1.agent!.restart();
          await h1.agent!.waitReady();
        }
        await expectHealthy(c, h1, "after the repair");

        // A restart keeps the lease: found by PublicIPv6 and the subnet.env IPv6 subnet.
        await h1.agent!.restart();
        await h1.agent!.waitReady();
        assert.deepEqual((await c.readSubnetEnv(h1))!.ipv6, envs[0].ipv6);
        assert.deepEqual((await leaseEntries(c)).map((l) => l.key), leases.map((l) => l.key));
        await waitFor("h1: IPv6 entries after the restart", async () => {
          assert.deepEqual(await entries6(c, h1), want(h1));
          return true;
        }, WAIT);

        // h3 stops (datapath and lease stay) and its lease is deleted: its entries go from h1, h2.
        await h3.agent!.stop();
        const key3 = leases.find((l) =>
          l.key.endsWith(formatCidr6(peers6[2].subnet6).replace("/", "-"))
        )!
          .key;
        assert.ok(await deleteLease(c, key3));
        for (const h of [h1, h2]) {
          await waitFor(`${h.name}: h3's entries removed`, async () => {
            assert.deepEqual(await entries6(c, h), want(h, [h1, h2]));
            return true;
          }, WAIT);
        }
        const r = await c.ping(c.pods()[0], c.pods()[1].ip6!, { count: 2 });
        assert.equal(r.received, 2, "h1 to h2 over IPv6 after h3 left");

        // weft cleanup on h1 (agent stopped) removes its IPv6 routes, devices and rules, and with
        // --release-lease its lease, found by PublicIPv6 (every IPv6-only lease says 0.0.0.0).
        await h1.agent!.stop();
        const cl = await c.weft(h1, [...c.cleanupArgs(h1), "--release-lease"], {
          timeoutMs: 60_000,
        });
        assert.equal(cl.code, 0, cl.stdout + cl.stderr);
        assert.deepEqual((await entries6(c, h1)).routes, [], "IPv6 routes left after cleanup");
        const bh = await c.exec(h1, ["ip", "-6", "route", "show", "type", "blackhole"]);
        assert.ok(!bh.includes("2001:db8:1:"), `blackhole route left after cleanup:\n${bh}`);
        const links = await c.exec(h1, ["ip", "-o", "link", "show"]);
        assert.ok(!/flannel/.test(links), `weft's devices left after cleanup:\n${links}`);
        const fw = (await c.exec(h1, ["nft", "list", "tables"])) +
          (await c.exec(h1, ["ip6tables-save"])) + (await c.exec(h1, ["iptables-save"]));
        assert.ok(!/flannel|FLANNEL/.test(fw), `firewall rules left after cleanup:\n${fw}`);
        assert.equal(await c.readSubnetEnv(h1), null, "subnet.env removed");
        const key2 = `0.0.0.0-0&${formatCidr6(peers6[1].subnet6).replace("/", "-")}`;
        assert.deepEqual((await leaseEntries(c)).map((l) => l.key), [key2], "h1's lease released");
      });
    },
  });
}
