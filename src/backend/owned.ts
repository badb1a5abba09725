/**
 * Finding and removing what the owners (backends and agent parts) declared as theirs, as
 * `weft cleanup` does: devices whose name and kind an owner claims, the routes on them, and the
 * routes an owner's predicate claims. Look-alikes (another kind, another VNI) are left with a
 * note saying why. Knows no device name or route rule itself; the {@link Owned} declarations do.
 *
 * @example
 * ```ts
 * const plan = planKernel(owners, { links, routes, network, own, extIndex });
 * removeKernel(netlink(), plan, report);
 * ```
 */
import type { Ipv4Net } from "../base/ipv4.ts";
import type { Ipv6Net } from "../base/ipv6.ts";
import {
  isNotFound,
  type Link,
  type Netlink,
  type Route,
  RT_TABLE_MAIN,
  RTN_BLACKHOLE,
} from "../../ffi/libnl/mod.ts";
import type { CleanupReport, Owned } from "./backend.ts";

/** What the owners have in the kernel, found by {@link planKernel}. */
export interface KernelPlan {
  routes: { route: Route; text: string }[];
  devices: { link: Link; text: string }[];
  /** Things that look like weft's but are left alone, with the reason. */
  notes: string[];
}

export interface KernelFacts {
  links: Link[];
  /** Routes of the main table (unicast and blackhole). */
  routes: Route[];
  /** The cluster network, when known (registry config or subnet.env). */
  network: Ipv4Net | null;
  /** This node's subnet, when known. */
  own: Ipv4Net | null;
  /** The external interface's ifindex, when it could be determined. */
  extIndex: number | null;
  /** The config's SubnetLen when known; else the own subnet's prefix is used. */
  subnetLen?: number | null;
  /** The IPv6 side, when known (IPv6 routes are judged only then). */
  network6?: Ipv6Net | null;
  own6?: Ipv6Net | null;
  subnetLen6?: number | null;
}

/** A route as `ip route` shows it, with interface names. */
export function describeRoute(r: Route, links: Link[]): string {
  if (r.type === RTN_BLACKHOLE) return `blackhole ${r.dst} metric ${r.metric}`;
  const dev = links.find((l) => l.index === r.dev)?.name ?? `if${r.dev}`;
  return `${r.dst}${r.gw ? ` via ${r.gw}` : ""}${r.dev !== undefined ? ` dev ${dev}` : ""}` +
    `${r.onlink ? " onlink" : ""}`;
}

/**
 * Pure: which devices and routes are the owners'. Devices: those an owner claims by name and
 * kind (under the current config, or any when the config is unknown). Routes: every main-table
 * route through those devices (they would vanish with the device anyway; listing them makes the
 * output complete), and, when the network is known, those an owner's `routes` predicate claims:
 * the same rule as the running agent's (routes.ts), so cleanup removes only routes weft made or
 * flanneld's exact ones.
 */
export function planKernel(owners: Owned[], f: KernelFacts): KernelPlan {
  const notes: string[] = [];
  const devices: KernelPlan["devices"] = [];
  const claims = owners.flatMap((o) => o.devices ?? []);
  for (const l of f.links) {
    const named = claims.filter((c) => c.names.test(l.name));
    if (named.length === 0) continue;
    const sameKind = named.filter((c) => c.kind === l.kind);
    const mine = sameKind.find((c) => c.current === null || c.current === l.name);
    if (mine) devices.push({ link: l, text: mine.describe(l) });
    else if (sameKind.length) {
      notes.push(
        `left ${l.name}: ${sameKind[0].otherwise ?? "not the current config's"}; delete it by ` +
          `hand (ip link del ${l.name}) if it is a leftover`,
      );
    } else notes.push(`left ${l.name}: it is a ${l.kind ?? "plain"} device, not one weft creates`);
  }
  const devIdx = new Set(devices.map((d) => d.link.index));
  const scope = (f.network || f.network6) && {
    // No IPv4 network known: the empty one, which claims no IPv4 route (routes.ts).
    network: f.network ?? { ip: 0, prefix: 0 },
    own: f.own,
    ext: f.extIndex,
    subnetLen: f.subnetLen ?? f.own?.prefix ?? null,
    network6: f.network6 ?? null,
    own6: f.own6 ?? null,
    subnetLen6: f.subnetLen6 ?? f.own6?.prefix ?? null,
  };
  const routes: KernelPlan["routes"] = [];
  for (const r of f.routes) {
    const viaDevice = r.dev !== undefined && devIdx.has(r.dev) &&
      (r.table ?? RT_TABLE_MAIN) === RT_TABLE_MAIN;
    if (viaDevice || (scope && owners.some((o) => o.routes?.(r, scope)))) {
      routes.push({ route: r, text: describeRoute(r, f.links) });
    }
  }
  return { routes, devices, notes };
}

/** The links and main-table routes (unicast and blackhole) {@link planKernel} looks at. */
export function kernelState(nl: Netlink): Pick<KernelFacts, "links" | "routes"> {
  return {
    links: nl.linkList(),
    routes: [
      ...nl.routeList({ table: RT_TABLE_MAIN }),
      ...nl.routeList({ type: RTN_BLACKHOLE }),
      ...nl.routeList({ table: RT_TABLE_MAIN, family: 6 }),
      // The kernel shows an IPv6 blackhole route on lo; deleting it names no device.
      ...nl.routeList({ type: RTN_BLACKHOLE, family: 6 }).map(({ dev: _, ...r }) => r),
    ],
  };
}

/** Removes the kernel state in `plan`: routes first, then the devices; a dry run only reports. */
export function removeKernel(nl: Netlink, plan: KernelPlan, rep: CleanupReport): void {
  // Batched (32 requests a send): thousands of peers' routes go in well under a second.
  const errs = rep.dryRun ? [] : nl.deleteMany(plan.routes.map(({ route }) => ({ route })));
  plan.routes.forEach(({ text }, i) => {
    const e = errs[i] ?? null;
    if (e === null) rep.did(`route ${text}`);
    else if (!isNotFound(e)) rep.fail(`cannot remove route ${text}: ${e.message}`);
    // Not found: it went with something removed before.
  });
  for (const { link, text } of plan.devices) {
    try {
      if (!rep.dryRun) nl.linkDel(link.index);
      rep.did(`device ${text}`);
    } catch (e) {
      if (isNotFound(e)) continue;
      rep.fail(`cannot remove device ${link.name}: ${(e as Error).message}`);
    }
  }
}
