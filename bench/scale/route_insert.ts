/**
 * What one peer's vxlan entries cost the kernel next to N others (issue #12's per-event goal):
 * in a scratch namespace with a VTEP, `N` peers are programmed as the vxlan backend programs them
 * (`installPeer`: neighbour, FDB entry, onlink route marked with weft's protocol), then 500 new
 * peers are added one kind at a time and removed (`removePeers`), timed in CPU (this process's
 * user + system, which includes the kernel's work in sendmsg). Each size runs in its own
 * namespace; `--proto` also times the routes with another protocol than the N programmed ones.
 * CPU per entry includes the netlink round trip (libnl over FFI), the same in every size.
 *
 * Found with it (session 7): a new IPv4 route costs 150–280 µs of kernel CPU next to 5000 routes
 * on the VTEP against ~25 µs next to 5, and ~800 against ~180 when the routes come 10 ms apart
 * (`--spacing-ms 10`, the agent's pace in `event_cost.ts`: the walk then misses the caches).
 * The kernel keys its fib_info hash table by protocol, scope, prefsrc, metric and nexthop device,
 * not by gateway (net/ipv4/fib_semantics.c, fib_info_hashfn), so every peer route (one device, one
 * protocol, its own gateway) lands in one bucket, and each insertion walks all of them
 * (fib_find_info). Removals and re-writes of an
 * existing route do not walk it. A route of another protocol lands elsewhere (`--proto 3`: cheap
 * again), which shows the cause; weft's routes keep their protocol (the reconcile tells its own
 * routes by it).
 *
 * @example
 * ```sh
 * deno run -A bench/scale/route_insert.ts --sizes 5,5000 --reps 3
 * # {"peers":5000,"reps":[{"neighUs":…,"fdbUs":…,"routeUs":…,"removeUs":…}],…}
 * ```
 */
import { parseArgs } from "node:util";
import { cpuUsage } from "node:process";
import { netlink } from "../../ffi/libnl/mod.ts";
import { installPeer, removePeers } from "../../src/backend/vxlan/program.ts";
import type { PeerEntries } from "../../src/backend/vxlan/entries.ts";
import { PeerFailures } from "../../src/backend/peer_errors.ts";
import { RTPROT_WEFT } from "../../src/backend/routes.ts";
import { createNs, deleteNs, denoInNs, nsExec } from "../../test/kit/netns.ts";
import { runOk } from "../../test/kit/proc.ts";

const { values: v } = parseArgs({
  args: Deno.args,
  options: {
    sizes: { type: "string", default: "5,5000" },
    reps: { type: "string", default: "3" },
    /** Child mode: the peers to program in this namespace. */
    child: { type: "string" },
    proto: { type: "string" },
    /** Pause between the new routes (the agent's events come apart; the walk then misses cache). */
    "spacing-ms": { type: "string", default: "0" },
  },
});
const NEW = 500;

/** Peer `i`'s entries (i < 8000): its /29 in 198.18.0.0/16, VTEP address and underlay in 198.19/16. */
function entries(dev: number, i: number, protocol = RTPROT_WEFT): PeerEntries {
  const a = i >> 8, b = i & 255;
  const mac = `02:00:00:00:${a.toString(16).padStart(2, "0")}:${b.toString(16).padStart(2, "0")}`;
  const gw = `198.19.${a}.${b}`;
  if (i >= 8000) throw new RangeError(`peer ${i}: at most 8000`);
  const s = i * 8;
  return {
    dev,
    neigh: { ip: gw, mac },
    fdb: { mac, dst: `198.19.${128 + a}.${b}` },
    route: {
      dst: `198.18.${s >> 8}.${s & 255}/29`,
      gw,
      dev,
      onlink: true,
      protocol,
    },
  };
}

async function child(n: number, reps: number, proto: number | undefined, spacingMs: number) {
  const nl = netlink();
  const dev = nl.linkByName("flannel.1")!.index;
  for (let i = 0; i < n; i++) installPeer(nl, entries(dev, i));
  const cpu = () => {
    const u = cpuUsage();
    return u.user + u.system;
  };
  const out = [];
  for (let r = 0; r < reps; r++) {
    const fresh = Array.from({ length: NEW }, (_, k) => entries(dev, 6000 + k, proto));
    const t = [cpu()];
    for (const e of fresh) nl.neighSet({ dev, ...e.neigh!, permanent: true });
    t.push(cpu());
    for (const e of fresh) nl.fdbSet({ dev, ...e.fdb! });
    t.push(cpu());
    // Each insertion timed alone, so pauses between them (--spacing-ms) are not counted.
    let routeCpu = 0;
    for (const e of fresh) {
      if (spacingMs > 0) await new Promise((r) => setTimeout(r, spacingMs));
      const c = cpu();
      nl.routeReplace(e.route);
      routeCpu += cpu() - c;
    }
    t.push(cpu());
    for (const e of fresh) installPeer(nl, e); // all three present: re-writes
    t.push(cpu());
    for (const e of fresh) removePeers(nl, [[e.route.dst, e]], new PeerFailures());
    t.push(cpu());
    const us = (i: number) => Math.round((t[i + 1] - t[i]) / NEW);
    const routeUs = Math.round(routeCpu / NEW);
    out.push({ neighUs: us(0), fdbUs: us(1), routeUs, rewriteUs: us(3), removeUs: us(4) });
  }
  console.log(JSON.stringify({ peers: n, proto: proto ?? RTPROT_WEFT, reps: out }));
}

if (v.child !== undefined) {
  await child(
    Number(v.child),
    Number(v.reps),
    v.proto ? Number(v.proto) : undefined,
    Number(v["spacing-ms"]),
  );
} else {
  const id = Math.random().toString(36).slice(2, 8);
  const rows: string[] = [];
  for (const n of v.sizes.split(",").map(Number)) {
    for (const proto of [undefined, ...(v.proto ? [v.proto] : [])]) {
      const ns = `wrtins-${id}-${n}`;
      await createNs(ns);
      try {
        await nsExec(ns, [
          "ip",
          "link",
          "add",
          "flannel.1",
          "type",
          "vxlan",
          "id",
          "1",
          "local",
          "198.19.255.1",
          "dstport",
          "8472",
          "nolearning",
        ]);
        await nsExec(ns, ["ip", "link", "set", "flannel.1", "up"]);
        const args = [
          new URL(import.meta.url).pathname,
          "--child",
          String(n),
          "--reps",
          v.reps,
          "--spacing-ms",
          v["spacing-ms"],
        ];
        rows.push(
          (await runOk(denoInNs(ns, [...args, ...(proto ? ["--proto", proto] : [])]), {
            timeoutMs: 300_000,
          })).trim(),
        );
      } finally {
        await deleteNs(ns);
      }
    }
  }
  console.log(`route_insert (load ${Deno.loadavg()[0]}): µs of CPU per entry, ${NEW} new peers`);
  for (const r of rows) console.log(r);
}
