/**
 * The external interface: the host interface whose address carries overlay traffic and is
 * published in the lease (flannel's --iface / --iface-regex / --iface-can-reach / --public-ip).
 * With IPv6 enabled, also its global IPv6 address (or --public-ipv6); --iface and --iface-regex
 * match IPv6 addresses too (flanneld's match IPv4 only). In an IPv6-only network (`ipv4: false`)
 * nothing needs an IPv4 address: --iface takes any interface by name (one without a global
 * IPv6 address with --public-ipv6) or IPv6 address, --iface-regex the interfaces with a global
 * IPv6 address, --iface-can-reach an IPv6 target, the default is the IPv6 default route's
 * interface, and the IPv4 fields are empty (`publicIP` "0.0.0.0", as flanneld's IPv6-only lease).
 */
import { isIp } from "../base/ipv4.ts";
import { formatIp6, isIp6, parseIp6 } from "../base/ipv6.ts";
import { ipv6Problem } from "../config/unicast.ts";
import { FatalError } from "../base/errors.ts";

export interface ExternalInterface {
  /** Interface name, e.g. "eth0". */
  name: string;
  /** Kernel ifindex. */
  index: number;
  /** The interface's own IPv4 address (tunnel source / bind address); "" when IPv6-only. */
  ifaceAddr: string;
  /** Address published in the lease: --public-ip, else ifaceAddr; "0.0.0.0" when IPv6-only. */
  publicIP: string;
  /**
   * With IPv6: the interface's global IPv6 address (the IPv6 VTEP's underlay address); absent
   * when it has none and --public-ipv6 names the address to publish.
   */
  ifaceAddr6?: string;
  /** With IPv6: PublicIPv6 in the lease: --public-ipv6, else ifaceAddr6. */
  publicIPv6?: string;
  /** The interface's MTU. */
  mtu: number;
}

/** No interface matched the operator's selection; the message lists what was tried. */
export class InterfaceError extends FatalError {
  override name = "InterfaceError";
}

export interface IfaceSelection {
  /** --iface values: names or IPv4 addresses, tried in order. */
  iface?: string[];
  /** --iface-regex values, tried in order against names and addresses. */
  ifaceRegex?: string[];
  /** --iface-can-reach: the interface the kernel would use to reach this address. */
  ifaceCanReach?: string;
  /** --public-ip override of the advertised address. */
  publicIP?: string;
  /** The config enables IPv6: find the interface's IPv6 address too. */
  ipv6?: boolean;
  /**
   * false: an IPv6-only network (EnableIPv4 false): no IPv4 address is looked for or needed
   * (implies `ipv6`). Default true.
   */
  ipv4?: boolean;
  /** --public-ipv6 override of the advertised IPv6 address. */
  publicIPv6?: string;
}

interface Candidate {
  name: string;
  address: string;
}

function ipv4Interfaces(): Candidate[] {
  return Deno.networkInterfaces()
    .filter((i) => i.family === "IPv4")
    .map((i) => ({ name: i.name, address: i.address }));
}

/**
 * The global unicast IPv6 addresses of each interface (RFC 5952 text), in the kernel's order: no
 * link-local, loopback or other address a peer could not route to.
 */
function ipv6Addresses(): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const i of Deno.networkInterfaces()) {
    if (i.family !== "IPv6" || !isIp6(i.address) || ipv6Problem(i.address)) continue;
    const list = out.get(i.name) ?? [];
    list.push(formatIp6(parseIp6(i.address)));
    out.set(i.name, list);
  }
  return out;
}

function sysNum(name: string, file: string): number {
  try {
    return Number(Deno.readTextFileSync(`/sys/class/net/${name}/${file}`).trim());
  } catch {
    return 0;
  }
}

/** The empty IPv4 address an IPv6-only node publishes as PublicIP (as flanneld does). */
export const NO_PUBLIC_IP = "0.0.0.0";

/** The interface of the default route with the lowest metric (from /proc/net/route). */
export function defaultRouteInterface(): string | null {
  let text: string;
  try {
    text = Deno.readTextFileSync("/proc/net/route");
  } catch {
    return null;
  }
  let best: { name: string; metric: number } | null = null;
  for (const line of text.split("\n").slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 8 || f[1] !== "00000000" || f[7] !== "00000000") continue;
    const metric = Number(f[6]);
    if (!best || metric < best.metric) best = { name: f[0], metric };
  }
  return best?.name ?? null;
}

/** The interface of the IPv6 default route with the lowest metric (from /proc/net/ipv6_route). */
export function defaultRouteInterface6(): string | null {
  let text: string;
  try {
    text = Deno.readTextFileSync("/proc/net/ipv6_route");
  } catch {
    return null;
  }
  let best: { name: string; metric: number } | null = null;
  for (const line of text.split("\n")) {
    // dst, dst len, src, src len, next hop, metric, refcnt, use, flags, device
    const f = line.trim().split(/\s+/);
    if (f.length < 10 || !/^0+$/.test(f[0]) || f[1] !== "00" || f[9] === "lo") continue;
    const metric = parseInt(f[5], 16);
    if (!best || metric < best.metric) best = { name: f[9], metric };
  }
  return best?.name ?? null;
}

/**
 * The local source address the kernel picks to reach `target` (a netlink route lookup; no packet
 * is sent). libnl is loaded only for this flag.
 */
export async function sourceAddressFor(target: string): Promise<string> {
  const { netlink } = await import("../../ffi/libnl/mod.ts");
  const r = netlink().routeGet(target);
  if (!r.src) throw new Error(`the route to ${target} has no source address`);
  return r.src;
}

/** Picks the external interface the way flanneld does and describes it. */
export async function selectExternalInterface(sel: IfaceSelection): Promise<ExternalInterface> {
  const v4 = sel.ipv4 !== false;
  const v6 = ipv6Addresses();
  // IPv6-only: every interface, its IPv4 address never used (one without a global IPv6 address
  // still serves with --public-ipv6, as in dual stack).
  const all: Candidate[] = v4
    ? ipv4Interfaces()
    : [...new Set(Deno.networkInterfaces().map((i) => i.name))].map((name) => ({
      name,
      address: "",
    }));
  const byV6 = (addr: string) => {
    const a = formatIp6(parseIp6(addr));
    return all.find((c) => v6.get(c.name)?.includes(a));
  };
  // What a regex picks from: interfaces with an address of the network's family.
  const addressed = v4 ? all : all.filter((c) => v6.has(c.name));
  const byV4 = (addr: string) => all.find((c) => c.address !== "" && c.address === addr);
  let chosen: Candidate | undefined;
  const tried: string[] = [];
  if (sel.iface?.length) {
    for (const want of sel.iface) {
      chosen = isIp(want)
        ? byV4(want)
        : isIp6(want)
        ? byV6(want)
        : all.find((c) => c.name === want);
      tried.push(`--iface ${want}`);
      if (chosen) break;
    }
  } else if (sel.ifaceRegex?.length) {
    for (const re of sel.ifaceRegex) {
      let rx: RegExp;
      try {
        rx = new RegExp(re);
      } catch (e) {
        throw new InterfaceError(
          `--iface-regex "${re}" is not a valid regular expression: ${(e as Error).message}`,
        );
      }
      chosen = addressed.find((c) =>
        c.name !== "lo" &&
        ((c.address !== "" && rx.test(c.address)) || rx.test(c.name) ||
          (v6.get(c.name) ?? []).some((a) => rx.test(a)))
      );
      tried.push(`--iface-regex ${re}`);
      if (chosen) break;
    }
  } else if (sel.ifaceCanReach) {
    tried.push(`--iface-can-reach ${sel.ifaceCanReach}`);
    try {
      const src = await sourceAddressFor(sel.ifaceCanReach);
      chosen = isIp6(src) ? byV6(src) : byV4(src);
    } catch (e) {
      throw new InterfaceError(
        `--iface-can-reach ${sel.ifaceCanReach}: no route to that address (${
          (e as Error).message
        }); check the host's routes or use --iface`,
      );
    }
  } else {
    const name = v4 ? defaultRouteInterface() : defaultRouteInterface6();
    tried.push(v4 ? "the default route's interface" : "the IPv6 default route's interface");
    if (name) chosen = all.find((c) => c.name === name);
  }
  if (!chosen) {
    const have = v4
      ? all.map((c) => `${c.name} ${c.address}`).join(", ")
      : all.map((c) => `${c.name} ${v6.get(c.name)?.join(" ") ?? "(no global IPv6)"}`)
        .join(", ");
    throw new InterfaceError(
      `no external interface found by ${tried.join(", ")} (${
        v4 ? "IPv4 interfaces" : "interfaces and their global IPv6 addresses"
      } here: ${have || "none"}); pass --iface NAME or --iface IP`,
    );
  }
  if (sel.publicIP !== undefined && !isIp(sel.publicIP)) {
    throw new InterfaceError(`--public-ip "${sel.publicIP}" is not an IPv4 address`);
  }
  if (sel.publicIP !== undefined && !v4) {
    throw new InterfaceError(
      `--public-ip ${sel.publicIP} is given but the network is IPv6-only (EnableIPv4 false): ` +
        `drop it, or use --public-ipv6`,
    );
  }
  let ifaceAddr6: string | undefined, publicIPv6: string | undefined;
  if (sel.ipv6 || !v4) {
    ifaceAddr6 = v6.get(chosen.name)?.[0];
    if (sel.publicIPv6 !== undefined) {
      const p = ipv6Problem(sel.publicIPv6);
      if (p) throw new InterfaceError(`--public-ipv6: ${p}`);
      publicIPv6 = formatIp6(parseIp6(sel.publicIPv6));
    } else publicIPv6 = ifaceAddr6;
    if (!publicIPv6) {
      throw new InterfaceError(
        `EnableIPv6 is true but ${chosen.name} has no global IPv6 address (link-local ones ` +
          `cannot be routed to): add one to ${chosen.name}, pick another interface, or pass ` +
          `--public-ipv6`,
      );
    }
  }
  const index = sysNum(chosen.name, "ifindex");
  if (!index) {
    throw new InterfaceError(
      `cannot read the interface index of ${chosen.name} from /sys/class/net; is /sys mounted ` +
        `(containers need the host's /sys and network namespace)?`,
    );
  }
  return {
    name: chosen.name,
    index,
    ifaceAddr: chosen.address,
    publicIP: v4 ? sel.publicIP ?? chosen.address : NO_PUBLIC_IP,
    ...(publicIPv6 ? { publicIPv6 } : {}),
    ...(ifaceAddr6 ? { ifaceAddr6 } : {}),
    mtu: sysNum(chosen.name, "mtu") || 1500,
  };
}
