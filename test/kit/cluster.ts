/**
 * A multi-host test cluster made of network namespaces, for weft's end-to-end tests.
 *
 * Layout of one run (run id `w3k9z1`; everything carries it, nothing lives in the root netns):
 * - `wharn-w3k9z1-sw`: the "switch", a bridge `w3k9z1br` for the underlay 198.18.0.0/24;
 * - `wharn-w3k9z1-reg`: the registry host, `eth0` 198.18.0.2/24 (etcd there when registry=etcd);
 * - `wharn-w3k9z1-h<i>`: hosts, `eth0` 198.18.0.(10+i)/24, ip_forward=1, rp_filter=0;
 * - `wharn-w3k9z1-h<i>-<pod>`: pods, `eth0` on the host's `cni0` bridge (see pods.ts);
 * - `$TMPDIR/weft-harness/w3k9z1/`: owner.json, `<host>/subnet.env`, `<host>/agent.log`,
 *   `<host>/net-config.json`, `registry.kv`, `etcd/` (data and `etcd.log`).
 *
 * Every wait is bounded; `destroy()` is idempotent, and the kit's exit hook (exit.ts: unload,
 * SIGINT, SIGTERM) removes clusters a test forgot to destroy. Leftovers of a crashed process are
 * removed by {@link cleanupStale} (runs whose owner process is gone).
 *
 * @example
 * ```ts
 * await withCluster({ hosts: 2, registry: "etcd" }, async (c) => {
 *   await c.startAgent("h1").waitReady();
 *   await c.startAgent("h2").waitReady();
 *   const a = await c.addPod("h1"), b = await c.addPod("h2");
 *   const r = await c.ping(a, b.ip, { count: 3 });
 *   assert.equal(r.received, 3, await c.logs("h1"));
 * });
 * ```
 */
import { withTimeout } from "../../src/base/async.ts";
import { formatIp } from "../../src/base/ipv4.ts";
import { formatIp6 } from "../../src/base/ipv6.ts";
import { gatewayOf6 } from "../../src/config/subnet_env.ts";
import { V8_FLAGS } from "../../src/base/v8_flags.ts";
import { AgentProc } from "./agent.ts";
import { type EtcdProc, startEtcd } from "./etcd.ts";
import { atExit } from "./exit.ts";
import {
  checkName,
  checkRunId,
  CLUSTER_NETWORK,
  CLUSTER_NETWORK6,
  HARNESS_PREFIX,
  MAX_HOSTS,
  newRunId,
  REGISTRY_IP,
  type RunNames,
  runNames,
  UNDERLAY6_PREFIX_LEN,
  UNDERLAY_PREFIX_LEN,
} from "./names.ts";
import {
  claimRunDir,
  cleanupStale,
  createNs,
  deleteNs,
  deleteNsSync,
  denoInNs,
  listNs,
  nsExec,
} from "./netns.ts";
import { pingFromNs, type PingOptions, type PingResult } from "./ping.ts";
import {
  formatSubnetEnv,
  nextFreeIp,
  type PodWiring,
  type PodWiringContext,
  readSubnetEnvFile,
  type SubnetEnv,
  unwirePod,
  wirePod,
} from "./pods.ts";
import { run, runOk, type RunOptions, type RunResult, waitFor } from "./proc.ts";

export { cleanupStale, HARNESS_PREFIX };
export type { AgentProc, EtcdProc, PingOptions, PingResult, PodWiring, RunResult, SubnetEnv };

export interface ClusterOptions {
  /** Number of hosts h1..hN (1..200). */
  hosts: number;
  registry: "etcd" | "kv";
  /** 1-8 lower-case alphanumerics; default a fresh random id. */
  runId?: string;
  /** Pods per host added by {@link Cluster.startAll} once agents are ready; default 0. */
  podsPerHost?: number;
  /** Pod wiring; default "bridge" (what flannel's CNI config does with the bridge plugin). */
  podWiring?: PodWiring;
  /**
   * Dual stack: hosts also get an IPv6 underlay address (`Host.ip6`) and IPv6 forwarding, and
   * pods an IPv6 address when their host's subnet.env has an IPv6 subnet (`Pod.ip6`).
   */
  ipv6?: boolean;
  /**
   * false (with `ipv6`): IPv6-only hosts: eth0 gets no IPv4 address (`Host.ip` is ""), so the
   * registry must be KV (etcd listens on the registry host's IPv4 address). Default true.
   */
  ipv4?: boolean;
}

export interface AgentOptions {
  /** Backend.Type in the seeded network config; default "vxlan". */
  backend?: string;
  /** Appended to the agent's command line. */
  extraArgs?: string[];
  /** Merged over {"Network":"198.19.0.0/16","Backend":{"Type":backend}}; Backend is merged too. */
  netConfig?: Record<string, unknown>;
  /** --subnet-lease-ttl in seconds; omitted (agent default) when not given. */
  ttl?: number;
  /** --healthz-port; when given, waitReady also waits for /readyz 200. */
  healthzPort?: number;
  /** Module to run instead of the repo's main.ts (the self-test uses a fake agent). */
  entry?: string;
  env?: Record<string, string>;
}

export interface Host {
  /** Logical name "h1".. */
  name: string;
  index: number;
  netns: string;
  /** Underlay address of eth0; "" on an IPv6-only host (`ipv4: false`). */
  ip: string;
  /** IPv6 underlay address of eth0 (clusters with `ipv6`). */
  ip6?: string;
  /** The host's directory in the run dir. */
  dir: string;
  subnetFile: string;
  logFile: string;
  agent: AgentProc | null;
  pods: Pod[];
}

export interface Pod {
  /** Unique within the cluster. */
  name: string;
  host: string;
  netns: string;
  ip: string;
  prefix: number;
  gateway: string;
  mtu: number;
  /** Host-side veth (pod side is eth0). */
  hostVeth: string;
  /** IPv6 address, prefix and gateway, when the host's subnet.env has an IPv6 subnet. */
  ip6?: string;
  prefix6?: number;
  gateway6?: string;
}

/** A host by logical name ("h1"), the registry host ("reg"), the switch ("sw"), or an object. */
export type NsRef = string | Host | Pod;

export interface PingPair extends PingResult {
  from: string;
  to: string;
  toIp: string;
}

export interface PingMatrix {
  results: PingPair[];
  /** Pairs where not every echo came back. */
  failed: PingPair[];
  ok: boolean;
}

const REPO_ROOT = decodeURIComponent(new URL("../../", import.meta.url).pathname);
const DEFAULT_ENTRY = `${REPO_ROOT}main.ts`;
const WEFT_V8_ARG = `--v8-flags=${V8_FLAGS.join(",")}`;

export class Cluster {
  readonly names: RunNames;
  readonly hosts: Host[] = [];
  readonly registryHost: { netns: string; ip: string };
  /** etcd on the registry host (registry "etcd" only), from the kit's one launcher. */
  etcd: EtcdProc | null = null;
  /** Shared Deno KV file (registry "kv" only). */
  readonly kvPath: string | null;
  /** Registry key prefix passed to agents in etcd mode. */
  readonly etcdPrefix: string;
  readonly network = CLUSTER_NETWORK;
  readonly network6 = CLUSTER_NETWORK6;
  #podSeq = 0;
  /** Per-host chain that serialises pod wiring (two pods must not both create cni0). */
  #wiring = new Map<string, Promise<unknown>>();
  #destroyed: Promise<void> | null = null;
  /** Deregisters {@link destroySync} from the kit's exit hook. */
  #undoExit: () => void = () => {};

  constructor(readonly opts: ClusterOptions, readonly runId: string, readonly dir: string) {
    this.names = runNames(runId);
    this.registryHost = { netns: this.names.registryNs, ip: REGISTRY_IP };
    this.kvPath = opts.registry === "kv" ? `${dir}/registry.kv` : null;
    this.etcdPrefix = `/weft-${runId}`;
    for (let i = 1; i <= opts.hosts; i++) {
      const name = `h${i}`;
      this.hosts.push({
        name,
        index: i,
        netns: this.names.hostNs(name),
        ip: opts.ipv4 === false ? "" : this.names.hostIp(i),
        ...(opts.ipv6 ? { ip6: this.names.hostIp6(i) } : {}),
        dir: `${dir}/${name}`,
        subnetFile: `${dir}/${name}/subnet.env`,
        logFile: `${dir}/${name}/agent.log`,
        agent: null,
        pods: [],
      });
    }
  }

  /** Looks a host up by name ("h1") or returns the given Host. */
  host(ref: string | Host): Host {
    if (typeof ref !== "string") return ref;
    const h = this.hosts.find((x) => x.name === ref);
    if (!h) {
      throw new Error(
        `no host "${ref}" in cluster ${this.runId} (hosts: ${
          this.hosts.map((x) => x.name).join(", ")
        })`,
      );
    }
    return h;
  }

  /** The namespace behind a reference: "reg", "sw", "h<i>", a Host or a Pod. */
  nsOf(ref: NsRef): string {
    if (typeof ref !== "string") return ref.netns;
    if (ref === "reg") return this.names.registryNs;
    if (ref === "sw") return this.names.switchNs;
    return this.host(ref).netns;
  }

  // ---- setup ----

  /** Builds switch, registry host and hosts, then the registry. Called by {@link createCluster}. */
  async build(): Promise<void> {
    const n = this.names;
    await createNs(n.switchNs);
    await runOk(["ip", "-n", n.switchNs, "link", "add", n.switchBridge, "type", "bridge"]);
    await runOk(["ip", "-n", n.switchNs, "link", "set", n.switchBridge, "up"]);
    await this.#attach(n.registryNs, "reg", REGISTRY_IP, false);
    await Promise.all(this.hosts.map(async (h) => {
      await Deno.mkdir(h.dir, { recursive: true });
      await this.#attach(h.netns, h.name, h.ip, true);
      if (h.ip6) {
        const addr = `${h.ip6}/${UNDERLAY6_PREFIX_LEN}`;
        await runOk(["ip", "-n", h.netns, "-6", "addr", "add", addr, "dev", "eth0", "nodad"]);
        await nsExec(h.netns, ["sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1"]);
      }
    }));
    if (this.opts.registry === "etcd") {
      this.etcd = await startEtcd({
        netns: n.registryNs,
        host: REGISTRY_IP,
        dir: `${this.dir}/etcd`,
        name: `weft-etcd-${this.runId}`,
        readyTimeoutMs: 15_000,
      });
    }
  }

  /** Creates `ns` and plugs its `eth0` into the switch bridge with `ip`/24. */
  async #attach(ns: string, name: string, ip: string, forward: boolean): Promise<void> {
    const n = this.names;
    const port = n.switchPort(name);
    await createNs(ns, { forward });
    // Created inside the host netns with the peer sent straight to the switch: nothing touches
    // the root namespace, not even transiently.
    await runOk([
      "ip",
      "-n",
      ns,
      "link",
      "add",
      "eth0",
      "type",
      "veth",
      "peer",
      "name",
      port,
      "netns",
      n.switchNs,
    ]);
    await runOk(["ip", "-n", n.switchNs, "link", "set", port, "master", n.switchBridge, "up"]);
    if (ip) {
      await runOk(["ip", "-n", ns, "addr", "add", `${ip}/${UNDERLAY_PREFIX_LEN}`, "dev", "eth0"]);
    }
    await runOk(["ip", "-n", ns, "link", "set", "eth0", "up"]);
  }

  // ---- agents ----

  /**
   * `weft cleanup` for `h` with the flags its agent ran with: the registry (`registry` replaces
   * the cluster's, e.g. an unreachable one), the external interface, the subnet file and the
   * host's identity file.
   */
  cleanupArgs(h: Host, registry: string[] = this.registryArgs()): string[] {
    return [
      "cleanup",
      ...registry,
      "--iface",
      "eth0",
      "--subnet-file",
      h.subnetFile,
      "--node-id-file",
      `${h.dir}/node-id`,
    ];
  }

  /** weft's flags that name this cluster's registry (for agents and for `weft` commands). */
  registryArgs(): string[] {
    return this.opts.registry === "etcd"
      ? [
        "--registry",
        "etcd",
        "--etcd-endpoints",
        this.etcd!.endpoint,
        "--etcd-prefix",
        this.etcdPrefix,
      ]
      : ["--registry", "kv", "--kv-path", this.kvPath!];
  }

  /** The agent command line for `host` (without starting it); writes the host's net config file. */
  agentCommand(ref: string | Host, o: AgentOptions = {}): string[] {
    const h = this.host(ref);
    const backend = o.backend ?? (o.netConfig?.Backend as { Type?: string } | undefined)?.Type ??
      "vxlan";
    const config = {
      Network: CLUSTER_NETWORK,
      ...o.netConfig,
      Backend: { ...(o.netConfig?.Backend as Record<string, unknown> | undefined), Type: backend },
    };
    const configFile = `${h.dir}/net-config.json`;
    Deno.writeTextFileSync(configFile, JSON.stringify(config));
    const args = [
      "run",
      ...this.registryArgs(),
      "--iface",
      "eth0",
      "--subnet-file",
      h.subnetFile,
      "--node-id-file",
      `${h.dir}/node-id`,
      "--net-config-path",
      configFile,
    ];
    if (o.ttl !== undefined) args.push("--subnet-lease-ttl", String(o.ttl));
    if (o.healthzPort !== undefined) args.push("--healthz-port", String(o.healthzPort));
    args.push(...(o.extraArgs ?? []));
    // The V8 flags weft runs with in production (deno task weft, the compiled binary).
    return denoInNs(h.netns, [o.entry ?? DEFAULT_ENTRY, ...args], { flags: [WEFT_V8_ARG] });
  }

  /** Starts the agent on `host` (returns at once; call `waitReady()`). One running agent per host. */
  startAgent(ref: string | Host, o: AgentOptions = {}): AgentProc {
    this.#checkAlive();
    const h = this.host(ref);
    if (h.agent && !h.agent.status) {
      throw new Error(
        `an agent already runs on ${h.name} (pid ${h.agent.pid}); stop it or use restart()`,
      );
    }
    h.agent = new AgentProc({
      host: h.name,
      netns: h.netns,
      cmd: this.agentCommand(h, o),
      logFile: h.logFile,
      subnetFile: h.subnetFile,
      healthzPort: o.healthzPort,
      env: o.env,
      cwd: REPO_ROOT,
    });
    return h.agent;
  }

  /** Starts agents on every host, waits until all are ready, then adds `podsPerHost` pods each. */
  async startAll(o: AgentOptions = {}): Promise<AgentProc[]> {
    const agents = this.hosts.map((h) => this.startAgent(h, o));
    await Promise.all(agents.map((a) => a.waitReady()));
    for (const h of this.hosts) {
      for (let i = 0; i < (this.opts.podsPerHost ?? 0); i++) await this.addPod(h);
    }
    return agents;
  }

  // ---- subnet.env and pods ----

  /** The host's subnet.env, parsed; null when it does not exist. */
  readSubnetEnv(ref: string | Host): Promise<SubnetEnv | null> {
    return readSubnetEnvFile(this.host(ref).subnetFile);
  }

  /** Writes a subnet.env for `host` (tests that run without an agent). */
  async writeSubnetEnv(
    ref: string | Host,
    vars: Record<string, string | number | boolean>,
  ): Promise<void> {
    await Deno.writeTextFile(this.host(ref).subnetFile, formatSubnetEnv(vars));
  }

  /**
   * Adds a pod on `host` in the subnet of its subnet.env (which must exist): next free address,
   * default route via the bridge address, FLANNEL_MTU on its links.
   */
  async addPod(ref: string | Host, name?: string): Promise<Pod> {
    this.#checkAlive();
    const h = this.host(ref);
    const env = await this.readSubnetEnv(h);
    if (!env) {
      throw new Error(
        `cannot add a pod on ${h.name}: ${h.subnetFile} does not exist (agent not ready?)`,
      );
    }
    const seq = ++this.#podSeq;
    const podName = checkName("pod", name ?? `p${seq}`);
    if (this.hosts.some((x) => x.pods.some((p) => p.name === podName))) {
      throw new Error(`a pod named "${podName}" already exists in cluster ${this.runId}`);
    }
    const used = new Set(h.pods.map((p) => p.ip));
    const pod: Pod = {
      name: podName,
      host: h.name,
      netns: this.names.podNs(h.name, podName),
      // An IPv6-only host's pods have no IPv4 address ("").
      ip: env.gateway ? nextFreeIp(env.subnet, env.gateway, used) : "",
      prefix: env.subnet.prefix,
      gateway: env.gateway,
      mtu: env.mtu,
      hostVeth: this.names.podVeth(seq),
    };
    if (env.ipv6) {
      // Like the IPv4 side: the bridge holds the subnet's first address, pods take the next.
      const used6 = new Set(h.pods.map((p) => p.ip6));
      const s6 = env.ipv6.subnet;
      let n = s6.ip + 2n;
      while (used6.has(formatIp6(n))) n++;
      Object.assign(pod, { ip6: formatIp6(n), prefix6: s6.prefix, gateway6: gatewayOf6(s6) });
    }
    // Registered before creation so destroy() removes a half-built pod too.
    h.pods.push(pod);
    const wire = async () => {
      await createNs(pod.netns);
      // With CNI, IPAM picks the address and the bridge plugin names the veth: keep its answer.
      Object.assign(pod, await wirePod(this.opts.podWiring ?? "bridge", this.#wiringCtx(h, pod)));
    };
    const done = (this.#wiring.get(h.name) ?? Promise.resolve()).catch(() => {}).then(wire);
    this.#wiring.set(h.name, done);
    await done;
    return pod;
  }

  /** Deletes a pod's namespace (its veth goes with it); with CNI wiring, CNI DEL runs first. */
  async removePod(pod: Pod): Promise<void> {
    const h = this.host(pod.host);
    h.pods = h.pods.filter((p) => p !== pod);
    try {
      await unwirePod(this.opts.podWiring ?? "bridge", this.#wiringCtx(h, pod));
    } finally {
      await deleteNs(pod.netns);
    }
  }

  #wiringCtx(h: Host, pod: Pod): PodWiringContext {
    const { ip, prefix, gateway, mtu, hostVeth, ip6, prefix6, gateway6 } = pod;
    return {
      hostNs: h.netns,
      podNs: pod.netns,
      hostVeth,
      ip,
      prefix,
      gateway,
      mtu,
      ...(ip6 ? { ip6, prefix6, gateway6 } : {}),
      subnetFile: h.subnetFile,
      cniDir: `${h.dir}/cni`,
    };
  }

  /** All pods of all hosts. */
  pods(): Pod[] {
    return this.hosts.flatMap((h) => h.pods);
  }

  // ---- probes ----

  /** Pings `to` (an address or a pod) from a pod or host namespace; bounded by the options. */
  ping(from: NsRef, to: string | Pod, o: PingOptions = {}): Promise<PingResult> {
    return pingFromNs(this.nsOf(from), typeof to === "string" ? to : to.ip, o);
  }

  /**
   * Every pod pings every other pod (default 1 echo, 2 s timeout), at most 8 pings at a time.
   * `failed` lists pairs that lost anything.
   */
  async pingMatrix(o: PingOptions & { family?: 4 | 6 } = {}): Promise<PingMatrix> {
    const pods = this.pods();
    const pairs = pods.flatMap((a) => pods.filter((b) => b !== a).map((b) => [a, b] as const));
    const results: PingPair[] = [];
    let next = 0;
    const { family, ...po } = o;
    const worker = async () => {
      while (next < pairs.length) {
        const [a, b] = pairs[next++];
        const to = family === 6 ? b.ip6 : b.ip;
        if (!to) throw new Error(`pod ${b.host}/${b.name} has no IPv${family} address`);
        const r = await this.ping(a, to, { count: 1, timeoutS: 2, ...po });
        results.push({ from: `${a.host}/${a.name}`, to: `${b.host}/${b.name}`, toIp: to, ...r });
      }
    };
    await Promise.all(Array.from({ length: Math.min(8, pairs.length) }, worker));
    results.sort((x, y) => (x.from + x.to).localeCompare(y.from + y.to));
    const failed = results.filter((r) => r.received < r.sent || r.sent === 0);
    return { results, failed, ok: failed.length === 0 };
  }

  /**
   * Waits (bounded) until every host with a running agent has every other such host's subnet in
   * its kernel: the route and, where it goes through flannel.1 (vxlan), the peer's neighbour and
   * fdb entries. Ready means an agent applied its own lease; a peer that started later arrives by
   * the watch, so a ping right after {@link startAll} can race it: wait with this first.
   */
  async waitPeersProgrammed(timeoutMs = 20_000): Promise<void> {
    const hosts = this.hosts.filter((h) => h.agent && !h.agent.status);
    const missing = async (): Promise<string[]> => {
      const peers = await Promise.all(hosts.map(async (h) => {
        const env = await this.readSubnetEnv(h);
        if (!env) return null;
        const link = await this.run(h, ["ip", "-j", "link", "show", "flannel.1"]);
        const mac = link.code === 0 ? JSON.parse(link.stdout)[0]?.address as string : null;
        const subnet = `${formatIp(env.subnet.ip)}/${env.subnet.prefix}`;
        return { h, subnet, gw: formatIp(env.subnet.ip), mac };
      }));
      const lacks: string[] = [];
      for (const h of hosts) {
        const routes = await this.routes(h);
        const neigh = await this.run(h, ["ip", "neigh", "show", "dev", "flannel.1"]);
        const fdb = await this.run(h, ["bridge", "fdb", "show", "dev", "flannel.1"]);
        for (const p of peers) {
          if (!p) lacks.push("a host without subnet.env");
          if (!p || p.h === h) continue;
          const r = routes.find((x) => x.dst === p.subnet);
          if (!r) lacks.push(`${h.name}: no route to ${p.h.name}'s ${p.subnet}`);
          else if (r.dev === "flannel.1") {
            if (!neigh.stdout.includes(`${p.gw} lladdr ${p.mac} PERMANENT`)) {
              lacks.push(`${h.name}: no neighbour ${p.gw} lladdr ${p.mac}`);
            }
            if (!fdb.stdout.includes(`${p.mac} dst ${p.h.ip} `)) {
              lacks.push(`${h.name}: no fdb ${p.mac} dst ${p.h.ip}`);
            }
          }
        }
      }
      return lacks;
    };
    await waitFor("every host to program every peer", async () => {
      const lacks = await missing();
      if (lacks.length > 0) throw new Error(lacks.join("; "));
      return true;
    }, { timeoutMs, intervalMs: 200 });
  }

  /** Runs `cmd` in the namespace of `ref`; returns stdout, throws with stderr on failure. */
  exec(ref: NsRef, cmd: string[], o: RunOptions = {}): Promise<string> {
    return nsExec(this.nsOf(ref), cmd, o);
  }

  /** Like {@link exec} but returns code/stdout/stderr instead of throwing. */
  run(ref: NsRef, cmd: string[], o: RunOptions = {}): Promise<RunResult> {
    return run(["ip", "netns", "exec", this.nsOf(ref), ...cmd], o);
  }

  /**
   * The flags that point a command at what `host`'s agent uses: the registry, `--iface eth0`, its
   * subnet file and, given one, its health port (`weft doctor`/`status` take the agent's flags).
   */
  hostFlags(host: string | Host, healthzPort?: number): string[] {
    const h = this.host(host);
    return [
      ...this.registryArgs(),
      "--iface",
      "eth0",
      "--subnet-file",
      h.subnetFile,
      ...(healthzPort === undefined ? [] : ["--healthz-port", String(healthzPort)]),
    ];
  }

  /** `weft <args>` (the repo's main.ts) run to completion in the namespace of `ref`. */
  weft(ref: NsRef, args: string[], o: RunOptions = {}): Promise<RunResult> {
    return run(denoInNs(this.nsOf(ref), [DEFAULT_ENTRY, ...args]), o);
  }

  /** Like {@link weft} but returns stdout and throws with stderr on failure. */
  weftOk(ref: NsRef, args: string[], o: RunOptions = {}): Promise<string> {
    return runOk(denoInNs(this.nsOf(ref), [DEFAULT_ENTRY, ...args]), o);
  }

  /** Parsed `ip -j route` of a namespace (main table). */
  async routes(
    ref: NsRef,
  ): Promise<{ dst: string; gateway?: string; dev?: string; flags?: string[] }[]> {
    return JSON.parse(await this.exec(ref, ["ip", "-j", "route"]));
  }

  // ---- logs ----

  /** The agent log of `host` ("reg": the built-in etcd's log); "" when nothing was logged. */
  async logs(ref: string | Host): Promise<string> {
    const file = ref === "reg" ? `${this.dir}/etcd/etcd.log` : this.host(ref).logFile;
    return await Deno.readTextFile(file).catch(() => "");
  }

  /** Prints every host's agent log (tail) to stderr; used when a test fails. */
  async dumpLogs(tailChars = 8000): Promise<void> {
    for (const h of this.hosts) {
      const text = await this.logs(h);
      if (!text) continue;
      const tail = text.length > tailChars ? "…" + text.slice(-tailChars) : text;
      console.error(`\n===== ${this.runId} ${h.name} agent log (${h.logFile}) =====\n${tail}`);
    }
  }

  // ---- teardown ----

  /**
   * Kills agents and etcd, deletes every namespace of the run (pods too) and the run dir.
   * Idempotent: later calls return the first call's promise. Tries every step, then throws an
   * AggregateError if any failed.
   */
  destroy(): Promise<void> {
    this.#destroyed ??= this.#teardown();
    return this.#destroyed;
  }

  async #teardown(): Promise<void> {
    const errors: unknown[] = [];
    const attempt = async (f: () => Promise<unknown>) => {
      try {
        await f();
      } catch (e) {
        errors.push(e);
      }
    };
    await Promise.all(this.hosts.map((h) => attempt(async () => void await h.agent?.kill())));
    if (this.etcd) await attempt(() => withTimeout(this.etcd!.cleanup(), 15_000, "etcd cleanup"));
    const prefix = `${HARNESS_PREFIX}${this.runId}-`;
    // Everything with the run's prefix: pods, hosts, registry, switch, and any half-built leftover.
    await attempt(async () => {
      const mine = (await listNs()).filter((ns) => ns.startsWith(prefix));
      await Promise.all(mine.map((ns) => deleteNs(ns)));
    });
    await attempt(() =>
      Deno.remove(this.dir, { recursive: true }).catch((e) => {
        if (!(e instanceof Deno.errors.NotFound)) throw e;
      })
    );
    this.#undoExit();
    if (errors.length > 0) {
      throw new AggregateError(
        errors,
        `cluster ${this.runId}: teardown had ${errors.length} error(s): ${
          errors.map(String).join("; ")
        }`,
      );
    }
  }

  /** Last-resort synchronous cleanup (process exit): kill processes, delete namespaces and dir. */
  destroySync(): void {
    for (const h of this.hosts) {
      if (h.agent && !h.agent.status) {
        try {
          Deno.kill(h.agent.pid, "SIGKILL");
        } catch { /* gone */ }
      }
    }
    const prefix = `${HARNESS_PREFIX}${this.runId}-`;
    const out = new Deno.Command("ip", { args: ["netns", "list"], stderr: "null" }).outputSync();
    for (const line of new TextDecoder().decode(out.stdout).split("\n")) {
      const ns = line.trim().split(/\s+/)[0];
      if (ns?.startsWith(prefix)) deleteNsSync(ns);
    }
    try {
      Deno.removeSync(this.dir, { recursive: true });
    } catch { /* already gone */ }
  }

  /** Registers {@link destroySync} with the kit's exit hook until {@link destroy} ran. */
  hookExit(): void {
    this.#undoExit = atExit(() => this.destroySync(), { signals: true });
  }

  #checkAlive() {
    if (this.#destroyed) throw new Error(`cluster ${this.runId} was destroyed`);
  }
}

/**
 * Builds a cluster: switch, registry host, `hosts` hosts, and etcd when `registry` is "etcd".
 * On any failure the partial cluster is destroyed before the error is rethrown.
 */
export async function createCluster(opts: ClusterOptions): Promise<Cluster> {
  if (!Number.isInteger(opts.hosts) || opts.hosts < 1 || opts.hosts > MAX_HOSTS) {
    throw new RangeError(`hosts=${opts.hosts}: must be an integer in 1..${MAX_HOSTS}`);
  }
  if (opts.registry !== "etcd" && opts.registry !== "kv") {
    throw new RangeError(`registry="${opts.registry}": must be "etcd" or "kv"`);
  }
  const runId = checkRunId(opts.runId ?? newRunId());
  const dir = await claimRunDir(runId);
  const c = new Cluster(opts, runId, dir);
  c.hookExit();
  try {
    await c.build();
  } catch (e) {
    await c.destroy().catch(() => {});
    throw e;
  }
  return c;
}

/**
 * Runs `fn` with a fresh cluster and always destroys it; when `fn` throws, every agent log is
 * printed first so the failure can be read.
 */
export async function withCluster<T>(
  opts: ClusterOptions,
  fn: (c: Cluster) => Promise<T>,
): Promise<T> {
  const c = await createCluster(opts);
  try {
    return await fn(c);
  } catch (e) {
    await c.dumpLogs().catch(() => {});
    throw e;
  } finally {
    await c.destroy();
  }
}
