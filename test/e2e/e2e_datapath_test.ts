/**
 * End to end on real kernels: 3 hosts in network namespaces, a real registry, real agents.
 * For each backend (vxlan, vxlan with DirectRouting, host-gw) and each registry (etcd, Deno KV):
 * pods reach each other; the kernel state is exactly flannel's; a restart keeps pings flowing and
 * keeps subnet and VTEP MAC; a peer that vanished while an agent was down leaves nothing stale;
 * an expired lease's entries disappear from running peers; a deleted vxlan device comes back
 * with every peer's entries.
 */
import assert from "node:assert/strict";
import { type Cluster, type Host, withCluster } from "../kit/cluster.ts";
import { sleep, waitFor } from "../kit/proc.ts";
import { formatCidr, formatIp } from "../../src/base/ipv4.ts";

interface Combo {
  backend: "vxlan" | "host-gw";
  directRouting?: boolean;
  registry: "etcd" | "kv";
}

const combos: Combo[] = [
  { backend: "vxlan", registry: "etcd" },
  { backend: "vxlan", registry: "kv" },
  { backend: "vxlan", directRouting: true, registry: "etcd" },
  { backend: "vxlan", directRouting: true, registry: "kv" },
  { backend: "host-gw", registry: "etcd" },
  { backend: "host-gw", registry: "kv" },
];

const TTL = 6;

interface PeerFacts {
  host: Host;
  subnet: string;
  subnetAddr: string;
  mac: string | null;
}

async function json<T>(c: Cluster, h: string | Host, cmd: string[]): Promise<T> {
  const out = await c.exec(h, cmd);
  return JSON.parse(out || "[]") as T;
}

async function facts(c: Cluster, h: Host, vxlan: boolean): Promise<PeerFacts> {
  const env = (await c.readSubnetEnv(h))!;
  let mac: string | null = null;
  if (vxlan) {
    const l = await json<{ address: string }[]>(c, h, ["ip", "-j", "link", "show", "flannel.1"]);
    mac = l[0].address;
  }
  return { host: h, subnet: formatCidr(env.subnet), subnetAddr: formatIp(env.subnet.ip), mac };
}

interface JRoute {
  dst: string;
  gateway?: string;
  dev: string;
  /** Absent for "boot"; weft's routes say "87" (src/backend/routes.ts). */
  protocol?: string;
  flags: string[];
}

/** The kernel state on `h` must be exactly what `peers` justify (flannel-compat spec). */
async function assertKernelState(c: Cluster, h: Host, peers: PeerFacts[], combo: Combo) {
  const routes = (await json<JRoute[]>(c, h, ["ip", "-j", "route", "show", "table", "main"]))
    .filter((r) => r.dst.startsWith("198.19.") && r.dev !== "cni0");
  const own = await facts(c, h, combo.backend === "vxlan");
  const fmtRoutes = routes.map((r) =>
    `${r.dst} via ${r.gateway} dev ${r.dev} proto ${r.protocol ?? "boot"}` +
    `${r.flags.includes("onlink") ? " onlink" : ""}`
  ).sort();
  const direct = combo.backend === "host-gw" || combo.directRouting;
  const want = peers.map((p) =>
    direct
      ? `${p.subnet} via ${p.host.ip} dev eth0 proto 87`
      : `${p.subnet} via ${p.subnetAddr} dev flannel.1 proto 87 onlink`
  ).sort();
  assert.deepEqual(fmtRoutes, want, `routes on ${h.name}`);
  if (combo.backend !== "vxlan") return;

  const link = (await json<
    {
      mtu: number;
      linkinfo: { info_kind: string; info_data: Record<string, unknown> };
      addr_info?: { local: string; prefixlen: number }[];
    }[]
  >(c, h, ["ip", "-4", "-d", "-j", "addr", "show", "flannel.1"]))[0];
  assert.equal(link.linkinfo.info_kind, "vxlan");
  assert.equal(link.linkinfo.info_data.id, 1);
  assert.equal(link.linkinfo.info_data.local, h.ip);
  assert.equal(link.linkinfo.info_data.port, 8472);
  assert.equal(link.linkinfo.info_data.learning, false);
  assert.equal(link.mtu, 1500 - 50);
  assert.deepEqual(
    (link.addr_info ?? []).map((a) => `${a.local}/${a.prefixlen}`),
    [`${own.subnetAddr}/32`],
  );
  const neigh = (await json<{ dst: string; lladdr: string; state: string[] }[]>(
    c,
    h,
    ["ip", "-j", "neigh", "show", "dev", "flannel.1"],
  )).map((n) => `${n.dst} ${n.lladdr} ${n.state.join(",")}`).sort();
  const fdb = (await json<{ mac: string; dst?: string; flags?: string[]; state?: string }[]>(
    c,
    h,
    ["bridge", "-j", "fdb", "show", "dev", "flannel.1"],
  )).filter((f) => f.dst).map((f) => `${f.mac} ${f.dst} ${f.state}`).sort();
  const tunnelled = direct ? [] : peers;
  assert.deepEqual(
    neigh,
    tunnelled.map((p) => `${p.subnetAddr} ${p.mac} PERMANENT`).sort(),
    `neighbours on ${h.name}`,
  );
  assert.deepEqual(
    fdb,
    tunnelled.map((p) => `${p.mac} ${p.host.ip} permanent`).sort(),
    `fdb on ${h.name}`,
  );
}

async function passes(fn: () => Promise<void>): Promise<boolean> {
  await fn();
  return true;
}

for (const combo of combos) {
  const label = `${combo.backend}${
    combo.directRouting ? "+DirectRouting" : ""
  } over ${combo.registry}`;
  Deno.test({
    name: `datapath: ${label}`,
    sanitizeOps: false,
    sanitizeResources: false,
    async fn() {
      await withCluster({ hosts: 3, registry: combo.registry, podsPerHost: 1 }, async (c) => {
        const vx = combo.backend === "vxlan";
        const opts = {
          backend: combo.backend,
          ttl: TTL,
          netConfig: combo.directRouting ? { Backend: { DirectRouting: true } } : undefined,
          extraArgs: ["--iptables-forward-rules=false"],
        };
        await c.startAll(opts);
        const [h1, h2, h3] = c.hosts;
        const [p1, p2, p3] = c.pods();

        // 1. Every pod reaches every other pod, once every agent has programmed every peer
        //    (ready means its own lease is applied; a peer started later arrives by the watch).
        const f = await Promise.all(c.hosts.map((h) => facts(c, h, vx)));
        await waitFor("every host to program every peer", () =>
          passes(async () => {
            for (const h of c.hosts) {
              await assertKernelState(c, h, f.filter((x) => x.host !== h), combo);
            }
          }), { timeoutMs: 20_000, intervalMs: 200 });
        const m = await c.pingMatrix({ count: 2, timeoutS: 2 });
        assert.ok(m.ok, `ping matrix failed: ${JSON.stringify(m.failed)}`);

        // 2. Kernel state exactly per the spec on every host.
        for (const h of c.hosts) {
          await assertKernelState(c, h, f.filter((x) => x.host !== h), combo);
        }

        // 3. Restart h1's agent while p2 pings p1: no loss, same subnet, same VTEP MAC.
        const pinging = c.ping(p2, p1, { count: 40, intervalS: 0.1, timeoutS: 1 });
        await sleep(500); // let some echoes through before the restart
        await h1.agent!.restart("SIGTERM");
        const env1 = await h1.agent!.waitReady();
        const pr = await pinging;
        assert.equal(pr.received, pr.sent, `pings lost during restart: ${JSON.stringify(pr)}`);
        assert.equal(formatCidr(env1.subnet), f[0].subnet, "subnet changed across restart");
        const after = await facts(c, h1, vx);
        assert.equal(after.mac, f[0].mac, "VTEP MAC changed across restart");

        // 4. h3 dies and its lease expires while h1's agent is down: after h1 restarts, nothing
        //    of h3 remains on h1; h2 (running all along) removed h3's entries on expiry.
        await h1.agent!.stop("SIGTERM");
        await h3.agent!.kill();
        // h1's lease expires too while it is down, before or after h3's (their last renewals
        // are seconds apart, in either order): h2 may have dropped h1's entries as well.
        await waitFor(`h3's entries to leave h2 after its lease expired`, () =>
          passes(async () => {
            try {
              await assertKernelState(c, h2, [f[0]], combo);
            } catch (e) {
              await assertKernelState(c, h2, [], combo).catch(() => Promise.reject(e));
            }
          }), { timeoutMs: (TTL + 10) * 1000, intervalMs: 200 });
        await h1.agent!.restart();
        const env1b = await h1.agent!.waitReady();
        // h1's lease expired too while it was down; subnet.env brings it the same subnet back.
        assert.equal(formatCidr(env1b.subnet), f[0].subnet, "subnet changed after lease expiry");
        await waitFor(
          "h1 to reconcile away h3's entries",
          () => passes(() => assertKernelState(c, h1, [f[1]], combo)),
          { timeoutMs: 20_000, intervalMs: 200 },
        );
        // h2 may have dropped h1 when its lease expired: the reply needs h1's entries back on h2.
        await waitFor(
          "h2 to program h1 again",
          () => passes(() => assertKernelState(c, h2, [f[0]], combo)),
          { timeoutMs: 20_000, intervalMs: 200 },
        );
        const r12 = await c.ping(p1, p2, { count: 2 });
        assert.equal(r12.received, 2);
        void p3;

        // 5. vxlan: the device deleted by hand comes back with every peer's entries.
        if (vx) {
          await c.exec(h2, ["ip", "link", "del", "flannel.1"]);
          await waitFor("flannel.1 recreated on h2 with h1's entries", async () => {
            const again = await facts(c, h2, true);
            assert.equal(again.mac, f[1].mac, "recreated device must keep its VTEP MAC");
            await assertKernelState(c, h2, [f[0]], combo);
            return true;
          }, { timeoutMs: 15_000, intervalMs: 200 });
          const back = await c.ping(p1, p2, { count: 2, timeoutS: 2 });
          assert.equal(back.received, 2, "pods cannot reach each other after device recreation");
        }
      });
    },
  });
}
