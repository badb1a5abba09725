/**
 * The agent's flags: every flanneld flag with its name, default and meaning, plus weft's own.
 * Each is also read from FLANNELD_<NAME> or WEFT_<NAME> when not given.
 */
import type { FlagTable, FlagValues } from "./flags.ts";
import type { IfaceSelection } from "../net/iface.ts";

/** The interface-selection flags as `selectExternalInterface` takes them (run, doctor, cleanup). */
export function ifaceSelection(v: FlagValues): IfaceSelection {
  return {
    iface: v.iface as string[],
    ifaceRegex: v["iface-regex"] as string[],
    ifaceCanReach: String(v["iface-can-reach"] || "") || undefined,
    publicIP: String(v["public-ip"] || "") || undefined,
    publicIPv6: String(v["public-ipv6"] || "") || undefined,
  };
}

/** Flags that select and reach the registry (shared by `run`, `config`, `leases`, `cleanup`). */
export const registryFlags: FlagTable = {
  "registry": {
    type: "string",
    default: "kv",
    choices: ["kv", "etcd"],
    arg: "kv|etcd",
    help: "registry: embedded Deno KV (a file, or a KV Connect URL) or etcd v3",
  },
  "kv-path": {
    type: "string",
    default: "/var/lib/weft/registry.kv",
    arg: "FILE",
    help: "Deno KV registry file (shared by agents on one machine or a shared filesystem)",
  },
  "kv-url": {
    type: "string",
    default: "",
    arg: "URL",
    help: "KV Connect URL instead of --kv-path (token in DENO_KV_ACCESS_TOKEN)",
  },
  "etcd-endpoints": {
    type: "string",
    default: "http://127.0.0.1:4001,http://127.0.0.1:2379",
    arg: "URLS",
    help: "comma-separated etcd endpoints",
  },
  "etcd-prefix": {
    type: "string",
    default: "/coreos.com/network",
    arg: "PATH",
    help: "registry key prefix (also namespaces Deno KV)",
  },
  "etcd-keyfile": { type: "string", default: "", arg: "FILE", help: "TLS client key for etcd" },
  "etcd-certfile": { type: "string", default: "", arg: "FILE", help: "TLS client cert for etcd" },
  "etcd-cafile": { type: "string", default: "", arg: "FILE", help: "CA bundle to verify etcd" },
  "etcd-username": { type: "string", default: "", arg: "USER", help: "etcd username" },
  "etcd-password": { type: "string", default: "", arg: "PASS", help: "etcd password" },
  "log-level": {
    type: "string",
    default: "info",
    choices: ["debug", "info", "warning", "error"],
    arg: "LEVEL",
    help: "log level",
  },
  "log-format": {
    type: "string",
    default: "text",
    choices: ["text", "json"],
    arg: "text|json",
    help: "log output format",
  },
  "v": {
    type: "int",
    default: 0,
    min: 0,
    arg: "N",
    help: "verbosity (flanneld -v); ≥ 1 means debug",
  },
};

export const agentFlags: FlagTable = {
  ...registryFlags,
  "iface": {
    type: "list",
    default: [],
    arg: "NAME|IP",
    help: "external interface by name or address (repeatable; first match wins)",
  },
  "iface-regex": {
    type: "list",
    default: [],
    arg: "REGEX",
    help: "external interface by regex over names and addresses (repeatable)",
  },
  "iface-can-reach": {
    type: "string",
    default: "",
    arg: "IP",
    form: "ipv4",
    help: "external interface = the one used to reach this address",
  },
  "public-ip": {
    type: "string",
    default: "",
    arg: "IP",
    form: "ipv4",
    help: "address to publish to peers",
  },
  "public-ipv6": {
    type: "string",
    default: "",
    arg: "IP6",
    form: "ipv6",
    help: "IPv6 address to publish (EnableIPv6; default: the interface's global IPv6 address)",
  },
  "subnet-file": {
    type: "string",
    default: "/run/flannel/subnet.env",
    arg: "FILE",
    help: "where to write the subnet.env that CNI reads",
  },
  "subnet-lease-renew-margin": {
    type: "int",
    default: 60,
    min: 1,
    max: 1439,
    arg: "MIN",
    help: "renew the lease this many minutes before it expires",
  },
  "subnet-lease-ttl": {
    type: "int",
    default: 86400,
    min: 2,
    // etcd refuses longer leases ("too large lease TTL"); one limit for both registries.
    max: 9_000_000_000,
    boundsWhy: "etcd's longest lease TTL",
    arg: "SEC",
    help: "lease TTL in seconds (flannel: 24 h)",
  },
  "node-id-file": {
    type: "string",
    default: "/var/lib/weft/node-id",
    arg: "FILE",
    help: "this host's identity, made once and kept here (tells a restart from a duplicate IP)",
  },
  "net-config-path": {
    type: "string",
    default: "",
    arg: "FILE",
    help: "network config JSON to seed the registry with when it has none",
  },
  "ip-masq": {
    type: "bool",
    default: false,
    help: "masquerade traffic leaving the cluster network",
  },
  "ip-masq-fully-random-disable": {
    type: "bool",
    default: false,
    help: "do not use --random-fully in masquerade rules",
  },
  "iptables-resync": {
    type: "int",
    default: 5,
    min: 1,
    arg: "SEC",
    help: "re-check iptables rules this often",
  },
  "iptables-forward-rules": {
    type: "bool",
    default: true,
    help: "add FORWARD accept rules for the cluster network",
  },
  "ip-blackhole-route": {
    type: "bool",
    default: false,
    help: "blackhole route for the own subnet (drops traffic to its unused addresses)",
  },
  "healthz-ip": { type: "string", default: "0.0.0.0", arg: "IP", help: "health server address" },
  "healthz-port": {
    type: "int",
    default: 0,
    min: 0,
    max: 65535,
    arg: "PORT",
    help: "health/metrics server port (0 = off)",
  },
  "backend": {
    type: "string",
    default: "",
    arg: "TYPE",
    help: "override the config's Backend.Type for this node (e.g. alloc for control-plane only)",
  },
  "reconcile-interval": {
    type: "int",
    default: 60,
    min: 1,
    arg: "SEC",
    help: "full datapath reconciliation against all leases this often",
  },
  "peer-probe-interval": {
    type: "int",
    default: 30,
    min: 0,
    arg: "SEC",
    help: "probe peers over the overlay about this often (±10 % jitter; 0 = off; never for alloc)",
  },
  "peer-probe-max": {
    type: "int",
    default: 256,
    min: 1,
    arg: "N",
    help: "probe at most N peers per round, in turn (1000 peers: all within 4 rounds)",
  },
  "version": { type: "bool", default: false, help: "print the version and exit" },
  "help": { type: "bool", default: false, alias: "h", help: "show this help" },
};
