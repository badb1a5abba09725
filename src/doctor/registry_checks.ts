/**
 * Registry checks over the gathered facts (pure): reachable and how fast, the network config,
 * this node's lease and its renewal margin, and the leases that break peers: duplicate public
 * IPs, overlapping subnets, subnets outside the network, leases of another backend type.
 */
import { type CheckResult, fail, ok, warn } from "./check.ts";
import { type Facts, leaseAddress, leaseSubnets } from "./facts.ts";
import { hasIpv4Half } from "../health/targets.ts";
import { containsNet, formatCidr, sizeOf } from "../base/ipv4.ts";
import { formatCidr6 } from "../base/ipv6.ts";
import { type KnownLease, leaseBackendType } from "../lease/codec.ts";

/** A warm registry round trip slower than this is a warn (half doctor's registry timeout). */
export const SLOW_REGISTRY_MS = 2500;

/** How to remove a lease by hand, for the registry in use. */
export function deleteLeaseFix(f: Facts, l: KnownLease): string {
  const prefix = f.opts.registry.prefix;
  return f.registryKind === "etcd"
    ? `etcdctl del ${prefix}/subnets/${l.key} (then restart the agent on ${l.attrs.publicIP})`
    : `stop the agent that wrote ${l.key} and let the lease expire, or run 'weft cleanup ` +
      `--release-lease' on ${l.attrs.publicIP}`;
}

/** Human duration: "3 s", "12 min", "23 h". */
export function fmtDuration(ms: number): string {
  const s = Math.round(ms / 1000);
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${Math.round(s / 3600)} h`;
}

export function registryChecks(f: Facts): CheckResult[] {
  const out: CheckResult[] = [];
  if (f.registryError !== null) {
    out.push(fail(
      "registry.reachable",
      `${f.registryKind} registry: ${f.registryError}`,
      f.registryKind === "etcd"
        ? "check --etcd-endpoints, TLS and auth flags, and that etcd runs and is reachable"
        : "check --kv-path / --kv-url (the file must exist and be readable)",
    ));
    return out;
  }
  const ms = (f.registryLatencyMs ?? 0).toFixed(1);
  out.push(
    // Slow only when a round trip takes a good part of the time the agent allows it.
    (f.registryLatencyMs ?? 0) > SLOW_REGISTRY_MS
      ? warn(
        "registry.reachable",
        `${f.registryKind} registry listed the leases in ${ms} ms (slow)`,
        "check the registry's load and the network to it",
      )
      : ok("registry.reachable", `${f.registryKind} registry listed the leases in ${ms} ms`),
  );
  if (f.configText === null) {
    out.push(fail(
      "registry.config",
      "the registry has no network config",
      "store one: weft config set FILE (or start an agent with --net-config-path)",
    ));
  } else if (f.config === null) {
    out.push(fail(
      "registry.config",
      `the network config is invalid: ${f.configError}`,
      "fix it and store it again: weft config set FILE",
    ));
  } else {
    const c = f.config;
    const nets = [
      ...(c.enableIPv4 ? [`Network ${formatCidr(c.network)}, SubnetLen ${c.subnetLen}`] : []),
      ...(c.ipv6
        ? [`IPv6Network ${formatCidr6(c.ipv6.network)}, IPv6SubnetLen ${c.ipv6.subnetLen}`]
        : []),
    ];
    out.push(ok(
      "registry.config",
      `${nets.join(", ")}, backend ` +
        `${f.config.backendType}${
          f.backendType !== f.config.backendType ? ` (this node: ${f.backendType})` : ""
        }`,
    ));
  }
  out.push(...ownLeaseChecks(f));
  out.push(...leaseSetChecks(f));
  return out;
}

function ownLeaseChecks(f: Facts): CheckResult[] {
  // The address that names this node: PublicIPv6 in an IPv6-only network.
  const ip = f.config && !f.config.enableIPv4 ? f.ext?.publicIPv6 : f.ext?.publicIP;
  if (!ip) return []; // the interface check says why
  const l = f.own;
  if (!l) {
    return [fail(
      "registry.own-lease",
      `no lease for this node's public IP ${ip}`,
      "start the agent with these flags (weft run ...); it leases a subnet when it starts",
    )];
  }
  const subnet = leaseSubnets(l);
  if (l.expiresAt === null) {
    return [ok("registry.own-lease", `${subnet} for ${ip}, a reservation (no expiry)`, subnet)];
  }
  const left = l.expiresAt - f.now;
  const margin = f.opts.renewMarginMin * 60_000;
  // The agent clamps the margin to half the TTL; the TTL is unknown here, so only a lease left
  // with less than a few seconds is late for certain.
  if (left < Math.min(margin, 5_000)) {
    return [warn(
      "registry.own-lease",
      `${subnet} for ${ip} expires in ${fmtDuration(left)}: its renewal is overdue`,
      "check that the agent runs (agent checks below) and read its log for registry errors",
      subnet,
    )];
  }
  return [ok("registry.own-lease", `${subnet} for ${ip}, expires in ${fmtDuration(left)}`, subnet)];
}

function leaseSetChecks(f: Facts): CheckResult[] {
  const out: CheckResult[] = [];
  const byIp = new Map<string, KnownLease[]>();
  for (const l of f.leases) byIp.set(leaseAddress(l), [...byIp.get(leaseAddress(l)) ?? [], l]);
  let dup = false;
  for (const [ip, ls] of byIp) {
    if (ls.length < 2) continue;
    dup = true;
    const stale = ls.find((l) => l !== f.own) ?? ls[1];
    out.push(fail(
      "registry.duplicate-public-ip",
      `${ip.includes(":") ? "PublicIPv6" : "PublicIP"} ${ip} is in ${ls.length} leases: ${
        ls.map((l) => l.key).join(", ")
      }; peers ` +
        "send that host's traffic to one subnet only",
      `delete the stale lease: ${deleteLeaseFix(f, stale)}`,
    ));
  }
  if (!dup) {
    out.push(ok("registry.duplicate-public-ip", `${f.leases.length} leases, no PublicIP twice`));
  }
  // The IPv4 range checks: IPv6-only leases carry the empty network 0.0.0.0/0 (no IPv4 half).
  const v4 = f.leases.filter(hasIpv4Half);
  if (f.config) {
    const net = f.config.network;
    for (const l of f.config.enableIPv4 ? v4 : []) {
      if (!containsNet(net, l.subnet)) {
        out.push(fail(
          "registry.lease-range",
          `lease ${l.key} (${l.attrs.publicIP}) lies outside the Network ${formatCidr(net)}`,
          `delete it: ${deleteLeaseFix(f, l)}`,
          formatCidr(l.subnet),
        ));
      }
    }
    // Sorted by start, widest first: a lease overlaps an earlier one iff it starts before the
    // furthest end seen so far (n log n, so 5000 leases cost nothing).
    const end = (l: KnownLease) => l.subnet.ip + sizeOf(l.subnet.prefix);
    const sorted = [...v4].sort((a, b) =>
      a.subnet.ip - b.subnet.ip || a.subnet.prefix - b.subnet.prefix
    );
    let widest: KnownLease | null = null;
    for (const b of sorted) {
      if (widest && b.subnet.ip < end(widest)) {
        const stale = b === f.own ? widest : b;
        out.push(fail(
          "registry.lease-overlap",
          `leases ${widest.key} (${widest.attrs.publicIP}) and ${b.key} (${b.attrs.publicIP}) overlap`,
          `delete the stale one: ${deleteLeaseFix(f, stale)}`,
          formatCidr(b.subnet),
        ));
      }
      if (!widest || end(b) > end(widest)) widest = b;
    }
    const want = f.config.backendType;
    for (const l of f.leases) {
      const t = leaseBackendType(l.attrs);
      if (t !== want && t !== "alloc") {
        out.push(warn(
          "registry.lease-backend",
          `lease ${l.key} (${leaseAddress(l)}) is of backend ${t}, the network's is ${want}: ` +
            "no route to it is programmed",
          `run that host's agent with the network's backend, or ${deleteLeaseFix(f, l)}`,
          leaseSubnets(l),
        ));
      }
    }
  }
  return out;
}
