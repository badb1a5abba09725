/**
 * Doctor facts for unit tests: an etcd registry, eth0 198.18.0.11, a vxlan IPv4 network, the first
 * of `leases` ours and the rest peers; `over` replaces any field (a dual-stack config, an IPv6
 * address, other options).
 */
import type { Facts } from "../../src/doctor/facts.ts";
import { parseNetworkConfig } from "../../src/config/network.ts";
import type { KnownLease } from "../../src/lease/codec.ts";
import type { Link } from "../../ffi/libnl/mod.ts";

/** The host's underlay link in a kernel snapshot, matching the facts' `ext` (eth0, index 2). */
export const ETH0: Link = {
  index: 2,
  name: "eth0",
  kind: "veth",
  mtu: 1500,
  up: true,
  mac: "0e:00:00:00:01:00",
  master: null,
};

export function doctorFacts(leases: KnownLease[], over: Partial<Facts> = {}): Facts {
  const own = leases[0];
  return {
    opts: {
      registry: {
        kind: "etcd",
        prefix: "/coreos.com/network",
        endpoints: ["http://198.18.0.2:2379"],
      },
      iface: {},
      subnetFile: "/run/flannel/subnet.env",
      healthzIp: "0.0.0.0",
      healthzPort: 0,
      ipMasq: false,
      forwardRules: true,
      renewMarginMin: 60,
    },
    now: 0,
    registryKind: "etcd",
    registryError: null,
    registryLatencyMs: 2,
    configText: "{}",
    config: parseNetworkConfig(`{"Network":"198.19.0.0/16","Backend":{"Type":"vxlan"}}`),
    configError: null,
    leases,
    ext: { name: "eth0", index: 2, ifaceAddr: "198.18.0.11", publicIP: "198.18.0.11", mtu: 1500 },
    extError: null,
    subnetEnv: null,
    subnetEnvError: null,
    backendType: "vxlan",
    own,
    peers: leases.slice(1),
    ...over,
  };
}
