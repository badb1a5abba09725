/**
 * The udp backend's packet forwarder on real kernels objects: two network namespaces joined by
 * a veth pair (underlay 198.18.0.0/24), in each a TUN `flannel0` opened by a forwarder child
 * process (this same file run with WEFT_UDP_FWD_CHILD set, inside the namespace). Checks ping
 * both ways, ICMP net-unreachable for unknown subnets, peer updates, dropping of datagrams from
 * non-members, then prints an iperf3 throughput probe (not asserted). Needs root.
 */
import assert from "node:assert/strict";
import { newRunId } from "../kit/names.ts";
import { createNs, deleteNs, denoInNs } from "../kit/netns.ts";
import { ICMP, ipBytes, writeIpv4Header } from "../kit/packets.ts";
import { run as kitRun, runOk, waitFor } from "../kit/proc.ts";
import {
  closeFd,
  ErrnoError,
  MsgBatch,
  openTun,
  openUdpSocket,
  sendTo,
  setSockOptInt,
  setTunOffload,
  SOL_UDP,
  TUN_F_CSUM,
  TUN_F_TSO4,
  TUN_F_TSO_ECN,
  UDP_GRO,
} from "../../ffi/libc/mod.ts";
import { startForwarder } from "../../src/backend/udp/forwarder.ts";
import { internetChecksum } from "../../src/backend/udp/checksum.ts";
import { parseCidr, parseIp } from "../../src/base/ipv4.ts";
import type { ForwarderCounters } from "../../src/backend/udp/counters.ts";

const CHILD_ENV = "WEFT_UDP_FWD_CHILD";

// ---------------------------------------------------------------------------------------------
// Child: one forwarder in the current network namespace, driven by JSON lines on stdin.

async function* lines(r: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let buf = "";
  for await (const chunk of r.pipeThrough(new TextDecoderStream())) {
    buf += chunk;
    let i;
    while ((i = buf.indexOf("\n")) >= 0) {
      yield buf.slice(0, i);
      buf = buf.slice(i + 1);
    }
  }
}

/** An ICMP echo request `src` → `dst` (what the spoofed datagram carries). */
function echoRequest(src: string, dst: string): Uint8Array<ArrayBuffer> {
  const p = new Uint8Array(28 + 8);
  const v = new DataView(p.buffer);
  writeIpv4Header(p, 0, {
    total: p.length,
    proto: ICMP,
    src: ipBytes(parseIp(src)),
    dst: ipBytes(parseIp(dst)),
    frag: 0,
  });
  p[20] = 8;
  v.setUint16(24, 0x7777);
  v.setUint16(22, internetChecksum(p, 20, p.length - 20));
  return p;
}

async function child(): Promise<void> {
  const args = Deno.args;
  const arg = (name: string) => args[args.indexOf(name) + 1];
  // With --offload 1: virtio_net_hdr on the TUN, TSO and checksum offload as the backend sets.
  const offload = arg("--offload") === "1";
  const tun = openTun("flannel0", { vnetHdr: offload });
  setTunOffload(tun.fd, offload ? TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO_ECN : 0);
  const fwd = await startForwarder({
    tunFd: tun.fd,
    bind: { addr: arg("--bind"), port: 8285 },
    subnetLen: 24,
    vnetHdr: offload,
    // A sends with UDP GSO, B without, so both send paths carry the traffic below.
    udpGso: arg("--gso") === "1",
    onError: (e) => console.error(`forwarder error: ${e.message}`),
  });
  const out = (o: unknown) => console.log(JSON.stringify(o));
  out({ ready: true, tun: tun.name });
  try {
    for await (const line of lines(Deno.stdin.readable)) {
      const m = JSON.parse(line);
      if (m.cmd === "peers") {
        await fwd.setPeers(
          m.peers.map((p: { subnet: string; publicIP: string }) => ({
            subnet: parseCidr(p.subnet),
            publicIP: p.publicIP,
          })),
        );
        out({ ok: true });
      } else if (m.cmd === "counters") {
        out(fwd.counters());
      } else if (m.cmd === "send") {
        // One datagram from another local address, as a spoofer or a member would send it.
        const s = openUdpSocket(parseIp(m.from), 0);
        try {
          const pkt = echoRequest(m.inner[0], m.inner[1]);
          if (m.badChecksum) pkt[10] ^= 0xff; // the inner IPv4 header's checksum, broken
          if (!m.count) sendTo(s.fd, pkt, parseIp(m.to), 8285);
          else {
            // `count` copies as one UDP GSO message: separate datagrams on the wire, which the
            // receiver's UDP GRO hands over as one buffer again.
            const b = new MsgBatch(m.count, 2048, 8285);
            for (let i = 0; i < m.count; i++) {
              b.data.set(pkt, b.offset(i));
              b.setLength(i, pkt.length);
            }
            b.setMessage(0, 0, m.count);
            b.setSegmentSize(0, pkt.length);
            b.setPeerIp(0, parseIp(m.to));
            if (b.send(s.fd, 0, 1) !== 1) throw new Error("GSO send failed");
          }
        } finally {
          closeFd(s.fd);
        }
        out({ ok: true });
      } else if (m.cmd === "stop") {
        break;
      }
    }
  } finally {
    await fwd.stop();
    closeFd(tun.fd);
    out({ stopped: true });
  }
}

// ---------------------------------------------------------------------------------------------
// Test side.

const dec = new TextDecoder();

/** The kit's runner, in this file's (cmd, args) spelling. */
const run = (cmd: string, args: string[], timeoutMs = 10_000) =>
  kitRun([cmd, ...args], { timeoutMs });

const sh = (cmd: string, args: string[]) => runOk([cmd, ...args]);

const ip = (...args: string[]) => sh("ip", args);

class ForwarderChild {
  readonly proc: Deno.ChildProcess;
  readonly #lines: AsyncGenerator<string>;
  readonly #stdin: WritableStreamDefaultWriter<Uint8Array>;
  stderr = "";

  constructor(
    readonly ns: string,
    runId: string,
    bind: string,
    gso: boolean,
    offload = false,
  ) {
    const [cmd, ...args] = denoInNs(ns, [
      "--config",
      new URL("../../deno.json", import.meta.url).pathname,
      new URL(import.meta.url).pathname,
      "--run",
      runId,
      "--bind",
      bind,
      "--gso",
      gso ? "1" : "0",
      "--offload",
      offload ? "1" : "0",
    ]);
    this.proc = new Deno.Command(cmd, {
      args,
      env: { [CHILD_ENV]: runId, NO_COLOR: "1" },
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#lines = lines(this.proc.stdout);
    this.#stdin = this.proc.stdin.getWriter();
    const stderr = this.proc.stderr;
    (async () => {
      for await (const c of stderr.pipeThrough(new TextDecoderStream())) {
        this.stderr += c;
      }
    })().catch(() => {});
  }

  /** The next stdout line as JSON, within `timeoutMs`. */
  async next<T = Record<string, unknown>>(timeoutMs = 10_000): Promise<T> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const r = await Promise.race([
      this.#lines.next(),
      new Promise<never>((_, rej) =>
        timer = setTimeout(
          () =>
            rej(new Error(`forwarder child in ${this.ns} silent ${timeoutMs} ms: ${this.stderr}`)),
          timeoutMs,
        )
      ),
    ]).finally(() => clearTimeout(timer));
    if (r.done) throw new Error(`forwarder child in ${this.ns} exited: ${this.stderr}`);
    return JSON.parse(r.value) as T;
  }

  async call<T = Record<string, unknown>>(msg: unknown): Promise<T> {
    await this.#stdin.write(new TextEncoder().encode(JSON.stringify(msg) + "\n"));
    return await this.next<T>();
  }

  counters(): Promise<ForwarderCounters> {
    return this.call<ForwarderCounters>({ cmd: "counters" });
  }

  /**
   * Counters once `ok` holds (polled up to 10 s, for a loaded machine): a worker adds a batch's counts after the batch's
   * packets are out, so a ping can finish a moment before its packets are counted.
   */
  async countersWhen(ok: (c: ForwarderCounters) => boolean): Promise<ForwarderCounters> {
    let c = await this.counters();
    // On timeout the caller's assertions on the returned counters say what is missing.
    await waitFor("forwarder counters", async () => ok(c = await this.counters()), {
      timeoutMs: 10_000,
      intervalMs: 20,
    }).catch(() => {});
    return c;
  }

  /** Asks for a clean stop (bounded), then kills. */
  async close(): Promise<void> {
    try {
      await this.#stdin.write(new TextEncoder().encode(JSON.stringify({ cmd: "stop" }) + "\n"));
      await this.#stdin.close();
      await this.next(3000);
    } catch { /* killed below */ }
    try {
      this.proc.kill("SIGKILL");
    } catch { /* already gone */ }
    await this.proc.status;
  }
}

interface Topology {
  runId: string;
  nsA: string;
  nsB: string;
  a: ForwarderChild;
  b: ForwarderChild;
}

/** `offloadA`: A's TUN runs with offloads (virtio_net_hdr, TSO, coalescing); B's never does. */
async function setup(
  runId: string,
  t: Partial<Topology>,
  offloadA = false,
): Promise<Topology> {
  t.runId = runId;
  const nsA = t.nsA = `weft-udp-${runId}-a`;
  const nsB = t.nsB = `weft-udp-${runId}-b`;
  const va = `wu${runId}a`, vb = `wu${runId}b`;
  await createNs(nsA, { bare: true });
  await createNs(nsB, { bare: true });
  await ip("link", "add", va, "netns", nsA, "type", "veth", "peer", "name", vb, "netns", nsB);
  for (
    const [ns, dev, addrs] of [[nsA, va, ["198.18.0.1/24"]], [nsB, vb, [
      "198.18.0.2/24",
      "198.18.0.3/24",
    ]]] as const
  ) {
    for (const a of addrs) await ip("-n", ns, "addr", "add", a, "dev", dev);
    await ip("-n", ns, "link", "set", dev, "up");
    await ip("-n", ns, "link", "set", "lo", "up");
  }
  t.a = new ForwarderChild(nsA, runId, "198.18.0.1", true, offloadA);
  t.b = new ForwarderChild(nsB, runId, "198.18.0.2", false);
  for (const [c, own] of [[t.a, "198.19.1.0"], [t.b, "198.19.2.0"]] as const) {
    const ready = await c.next<{ ready: boolean; tun: string }>(20_000);
    assert.equal(ready.tun, "flannel0");
    // What the udp backend will do with libnl: MTU ext − 28, own subnet address /32, one route.
    await ip("-n", c.ns, "link", "set", "flannel0", "mtu", "1472", "up");
    await ip("-n", c.ns, "addr", "add", `${own}/32`, "dev", "flannel0");
    await ip("-n", c.ns, "route", "add", "198.19.0.0/16", "dev", "flannel0");
  }
  return t as Topology;
}

async function teardown(t: Partial<Topology>): Promise<void> {
  await Promise.all([t.a?.close(), t.b?.close()]);
  for (const ns of [t.nsA, t.nsB]) if (ns) await deleteNs(ns);
}

const ping = (ns: string, dst: string, count = 3) =>
  run("ip", ["netns", "exec", ns, "ping", "-n", "-c", String(count), "-i", "0.2", "-W", "2", dst]);

const PEERS_A = [{ subnet: "198.19.2.0/24", publicIP: "198.18.0.2" }];
const PEERS_B = [{ subnet: "198.19.1.0/24", publicIP: "198.18.0.1" }];

if (Deno.env.get(CHILD_ENV)) {
  await child();
} else {
  Deno.test("MsgBatch: sendmmsg/recvmmsg round trip, UDP GSO send and UDP GRO receive", () => {
    // Loopback only: two sockets on 127.0.0.1 of the test's own namespace.
    const lo = parseIp("127.0.0.1");
    const rx = openUdpSocket(lo, 0);
    const tx = openUdpSocket(lo, 0);
    try {
      const out = new MsgBatch(4, 2048, rx.port);
      for (let i = 0; i < 3; i++) {
        out.data.fill(i + 1, out.offset(i), out.offset(i) + 100 + i);
        out.setLength(i, 100 + i);
        out.setPeerIp(i, lo);
      }
      assert.equal(out.send(tx.fd, 0, 3), 3);
      const inb = new MsgBatch(8, 2048);
      let n = -1;
      for (let tries = 0; tries < 100 && n <= 0; tries++) n = inb.recv(rx.fd);
      assert.equal(n, 3);
      for (let i = 0; i < 3; i++) {
        assert.equal(inb.length(i), 100 + i);
        assert.equal(inb.peerIp(i), lo);
        assert.equal(inb.peerPort(i), tx.port);
        assert.equal(inb.data[inb.offset(i) + 99 + i], i + 1);
      }
      assert.equal(inb.recv(rx.fd), -1, "queue drained: EAGAIN");

      // UDP GSO: slots 0..2 (300, 300, 120 bytes) as one message arrive as three datagrams.
      for (let i = 0; i < 3; i++) out.data.fill(i + 1, out.offset(i), out.offset(i) + 300);
      out.setLength(0, 300);
      out.setLength(1, 300);
      out.setLength(2, 120);
      out.setMessage(0, 0, 3);
      out.setSegmentSize(0, 300);
      assert.equal(out.send(tx.fd, 0, 1), 1);
      n = -1;
      for (let tries = 0; tries < 100 && n <= 0; tries++) n = inb.recv(rx.fd);
      assert.equal(n, 3);
      assert.deepEqual([inb.length(0), inb.length(1), inb.length(2)], [300, 300, 120]);
      assert.equal(inb.data[inb.offset(1) + 299], 2, "second datagram is slot 1's bytes");
      assert.equal(inb.data[inb.offset(2) + 119], 3, "third datagram is slot 2's bytes");

      // UDP GRO on the receiver: the same train arrives as one message with its segment size.
      setSockOptInt(rx.fd, SOL_UDP, UDP_GRO, 1);
      inb.receiveControl(true);
      assert.equal(out.send(tx.fd, 0, 1), 1);
      n = -1;
      for (let tries = 0; tries < 100 && n <= 0; tries++) n = inb.recv(rx.fd);
      assert.equal(n, 1);
      assert.equal(inb.length(0), 720);
      assert.equal(inb.groSize(0), 300);
      // A plain datagram into the same slot afterwards reports no segment size (no stale cmsg).
      assert.equal(sendTo(tx.fd, new Uint8Array(171), lo, rx.port), 171);
      n = -1;
      for (let tries = 0; tries < 100 && n <= 0; tries++) n = inb.recv(rx.fd);
      assert.equal(n, 1);
      assert.equal(inb.length(0), 171);
      assert.equal(inb.groSize(0), 0);
    } finally {
      closeFd(rx.fd);
      closeFd(tx.fd);
    }
  });

  Deno.test("libc errors name the call, the value, the errno and what to do", () => {
    // 198.18.0.77 is on no interface of the test's namespace: bind fails before any traffic.
    assert.throws(
      () => openUdpSocket(parseIp("198.18.0.77"), 8285),
      (e: unknown) =>
        e instanceof ErrnoError && e.code === "EADDRNOTAVAIL" &&
        /^bind\(udp 198\.18\.0\.77:8285\) failed: EADDRNOTAVAIL \(.+\); .*--iface/.test(e.message),
    );
    assert.throws(() => openTun("a-name-longer-than-15"), /1\.\.15 bytes/);
  });

  Deno.test({
    name: "udp forwarder: ping both ways, net-unreachable, peer updates, non-members dropped",
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      const runId = newRunId();
      const t: Partial<Topology> = {};
      try {
        const { a, b, nsA, nsB } = await setup(runId, t);
        await a.call({ cmd: "peers", peers: PEERS_A });
        await b.call({ cmd: "peers", peers: PEERS_B });

        const ab = await ping(nsA, "198.19.2.0");
        assert.equal(ab.code, 0, `ping A→B: ${ab.stdout}${ab.stderr}\n${a.stderr}${b.stderr}`);
        const ba = await ping(nsB, "198.19.1.0");
        assert.equal(ba.code, 0, `ping B→A: ${ba.stdout}${ba.stderr}`);
        const pinged = (c: ForwarderCounters) =>
          c.txPackets >= 6 && c.rxPackets >= 6 && c.txBytes >= 6 * 84;
        const ca = await a.countersWhen(pinged);
        assert.ok(pinged(ca), JSON.stringify(ca));

        // No peer owns 198.19.99.0/24: the forwarder answers with ICMP net-unreachable.
        const un = await ping(nsA, "198.19.99.1", 1);
        assert.match(un.stdout, /From 198\.19\.99\.1 .*Destination Net Unreachable/, un.stdout);
        const answered = (c: ForwarderCounters) =>
          c.drops.no_route >= 1 && c.icmpUnreachableSent >= 1;
        const cu = await a.countersWhen(answered);
        assert.ok(answered(cu), JSON.stringify(cu));

        // Peer removed → unreachable; restored → reachable again.
        await a.call({ cmd: "peers", peers: [] });
        const gone = await ping(nsA, "198.19.2.0", 1);
        assert.match(gone.stdout, /Destination Net Unreachable/, gone.stdout);
        await a.call({ cmd: "peers", peers: PEERS_A });
        assert.equal((await ping(nsA, "198.19.2.0", 1)).code, 0, "reachable after re-adding");

        // A datagram from 198.18.0.3 (not a member) is dropped and counted; the same from the
        // member address 198.18.0.2 gets through.
        const before = await a.counters();
        await b.call({
          cmd: "send",
          from: "198.18.0.3",
          to: "198.18.0.1",
          inner: ["198.19.2.0", "198.19.1.0"],
        });
        let after = await a.countersWhen((c) => c.drops.not_member > before.drops.not_member);
        assert.equal(after.drops.not_member, before.drops.not_member + 1, JSON.stringify(after));
        assert.equal(after.rxPackets, before.rxPackets, "the spoofed packet was not delivered");
        await b.call({
          cmd: "send",
          from: "198.18.0.2",
          to: "198.18.0.1",
          inner: ["198.19.2.0", "198.19.1.0"],
        });
        after = await a.countersWhen((c) => c.rxPackets > before.rxPackets);
        assert.equal(after.rxPackets, before.rxPackets + 1, "the member's packet was delivered");
        assert.equal(after.drops.not_member, before.drops.not_member + 1);

        // From a member but with a broken inner IPv4 header checksum: dropped and counted,
        // never written into the TUN (the kernel would drop it there without a trace).
        await b.call({
          cmd: "send",
          from: "198.18.0.2",
          to: "198.18.0.1",
          inner: ["198.19.2.0", "198.19.1.0"],
          badChecksum: true,
        });
        const bad = await a.countersWhen((c) => c.udpReadPackets > after.udpReadPackets);
        assert.equal(bad.udpReadPackets, after.udpReadPackets + 1, JSON.stringify(bad));
        assert.equal(bad.rxPackets, after.rxPackets, "a packet with a bad checksum was delivered");
        assert.equal(bad.drops.bad_checksum, (after.drops.bad_checksum ?? 0) + 1);
        after = bad;

        // Three datagrams arriving as one UDP GRO buffer are split and all delivered.
        await b.call({
          cmd: "send",
          from: "198.18.0.2",
          to: "198.18.0.1",
          inner: ["198.19.2.0", "198.19.1.0"],
          count: 3,
        });
        const gro = await a.countersWhen((c) => c.rxPackets >= after.rxPackets + 3);
        assert.equal(gro.rxPackets, after.rxPackets + 3, JSON.stringify(gro));
        assert.equal(gro.udpReadPackets, after.udpReadPackets + 3);
        assert.equal(gro.drops.malformed, after.drops.malformed);
        assert.ok(gro.gro, "A receives with UDP GRO");

        await throughputProbe(t as Topology);
      } finally {
        await teardown(t);
      }
      // Namespaces are gone even though the children held devices in them.
      const left = await sh("ip", ["netns", "list"]);
      assert.ok(!left.includes(runId), `namespaces left behind: ${left}`);
    },
  });

  Deno.test({
    name:
      "udp forwarder with TUN offloads: TSO and coalescing carry TCP to and from a node without",
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      const runId = newRunId();
      const t: Partial<Topology> = {};
      try {
        const { a, b, nsA, nsB } = await setup(runId, t, true);
        await a.call({ cmd: "peers", peers: PEERS_A });
        await b.call({ cmd: "peers", peers: PEERS_B });
        assert.equal((await ping(nsA, "198.19.2.0")).code, 0, "ping A→B");
        assert.equal((await ping(nsB, "198.19.1.0")).code, 0, "ping B→A");
        // The ICMP written back into A's TUN goes behind a virtio_net_hdr now.
        const un = await ping(nsA, "198.19.99.1", 1);
        assert.match(un.stdout, /Destination Net Unreachable/, un.stdout);

        const csum0 = await tcpCsumErrors([nsA, nsB]);
        const c0 = await a.counters();
        // A → B: A's kernel hands over 64 KiB super-packets, A cuts them into segments that B
        // (no offloads, B's kernel checks every checksum) must accept as they are.
        const ab = await tcpTransfer(nsB, "198.19.2.0", nsA, 5211, 16 << 20);
        assert.equal(ab.received, ab.sent, "A→B TCP stream arrived changed");
        assert.match(ab.sent, /"bytes":16777216/);
        // B → A: plain segments from B are merged into super-packets on A's TUN write.
        const ba = await tcpTransfer(nsA, "198.19.1.0", nsB, 5212, 16 << 20);
        assert.equal(ba.received, ba.sent, "B→A TCP stream arrived changed");
        assert.match(ba.sent, /"bytes":16777216/);
        const c1 = await a.countersWhen((c) => c.tunOffload.coalescedPackets > 0);
        const o = c1.tunOffload;
        assert.ok(o.active, JSON.stringify(c1));
        assert.ok(
          o.tsoPackets - c0.tunOffload.tsoPackets > 0,
          `A read no TSO packet: ${JSON.stringify(o)}`,
        );
        assert.ok(
          o.tsoSegments > o.tsoPackets,
          `segments ${o.tsoSegments} ≤ packets ${o.tsoPackets}`,
        );
        assert.ok(o.coalescedPackets > 0, `A coalesced nothing: ${JSON.stringify(o)}`);
        assert.ok(o.coalescedSegments >= 2 * o.coalescedPackets, JSON.stringify(o));
        assert.equal(c1.drops.malformed, 0, JSON.stringify(c1.drops));
        assert.equal(c1.drops.tun_write_error, 0, JSON.stringify(c1));
        // Every datagram on the wire was one ordinary packet with correct checksums.
        const csum1 = await tcpCsumErrors([nsA, nsB]);
        assert.deepEqual(csum1, csum0, "TCP checksum errors in the namespaces");
        const cb = await b.counters();
        assert.equal(cb.drops.malformed, 0, `B saw malformed datagrams: ${JSON.stringify(cb)}`);

        // A ping larger than the MTU (IP fragments, never offloaded) still crosses.
        const big = await run("ip", [
          "netns",
          "exec",
          nsA,
          "ping",
          "-n",
          "-c",
          "2",
          "-i",
          "0.2",
          "-W",
          "2",
          "-s",
          "3000",
          "198.19.2.0",
        ]);
        assert.equal(big.code, 0, `3000-byte ping A→B: ${big.stdout}`);
      } finally {
        await teardown(t);
      }
      const left = await sh("ip", ["netns", "list"]);
      assert.ok(!left.includes(runId), `namespaces left behind: ${left}`);
    },
  });
}

/** InCsumErrors of the Tcp line of /proc/net/snmp in each namespace. */
async function tcpCsumErrors(namespaces: string[]): Promise<number[]> {
  return await Promise.all(namespaces.map(async (ns) => {
    const text = await sh("ip", ["netns", "exec", ns, "cat", "/proc/net/snmp"]);
    const [names, values] = text.split("\n").filter((l) => l.startsWith("Tcp:"));
    const i = names.split(/\s+/).indexOf("InCsumErrors");
    return i < 0 ? 0 : Number(values.split(/\s+/)[i]);
  }));
}

/**
 * Sends `bytes` over TCP from `clientNs` to `serverIp` in `serverNs` with test/kit/children/tcp_hash.ts
 * (bounded: 20 s each side); returns both sides' byte count and SHA-256.
 */
async function tcpTransfer(
  serverNs: string,
  serverIp: string,
  clientNs: string,
  port: number,
  bytes: number,
): Promise<{ sent: string; received: string }> {
  const script = new URL("../kit/children/tcp_hash.ts", import.meta.url).pathname;
  const deno = (ns: string, args: string[]) =>
    new Deno.Command("ip", {
      args: denoInNs(ns, [script, ...args]).slice(1),
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(25_000),
    }).spawn();
  const server = deno(serverNs, ["serve", serverIp, String(port)]);
  const out = lines(server.stdout);
  try {
    const first = await out.next();
    if (first.done) throw new Error(`tcp_hash server in ${serverNs} exited`);
    const client = await deno(clientNs, ["send", serverIp, String(port), String(bytes)]).output();
    const sent = dec.decode(client.stdout).trim();
    if (client.code !== 0) throw new Error(`tcp_hash send: ${dec.decode(client.stderr)}`);
    const r = await out.next();
    return { sent, received: r.done ? "" : r.value.trim() };
  } finally {
    try {
      server.kill("SIGKILL");
    } catch { /* exited */ }
    await server.status;
    await server.stderr.cancel().catch(() => {});
  }
}

/**
 * iperf3 across the overlay (TCP 3 s, then UDP 64-byte datagrams 2 s); printed, not asserted:
 * throughput on a shared machine says little, and a failed probe is reported, not thrown.
 */
async function throughputProbe(t: Topology): Promise<void> {
  const server = new Deno.Command("ip", {
    args: ["netns", "exec", t.nsB, "iperf3", "-s", "-B", "198.19.2.0", "-p", "5201"],
    stdout: "null",
    stderr: "null",
    signal: AbortSignal.timeout(25_000),
  }).spawn();
  // deno-lint-ignore no-explicit-any
  const client = async (extra: string[], secs: number): Promise<any> => {
    let last = "";
    // Retried while the server is not listening yet; a failed probe is reported, not thrown.
    const j = await waitFor(`iperf3 ${extra.join(" ")}`, async () => {
      const r = await run("ip", [
        "netns",
        "exec",
        t.nsA,
        "iperf3",
        "-c",
        "198.19.2.0",
        "-p",
        "5201",
        "-t",
        String(secs),
        "-J",
        ...extra,
      ], (secs + 5) * 1000);
      try {
        const j = JSON.parse(r.stdout);
        if (!j.error) return j;
        last = j.error;
      } catch {
        last = r.stderr || `exit ${r.code}`;
      }
    }, { timeoutMs: 8000 + secs * 1000, intervalMs: 200 }).catch(() => null);
    if (j) return j;
    console.log(`udp forwarder probe: iperf3 ${extra.join(" ")} failed: ${last}`);
    return null;
  };
  try {
    const c0 = await t.a.counters();
    const t0 = performance.now();
    const tcp = await client([], 3);
    const secs = (performance.now() - t0) / 1000;
    const c1 = await t.a.counters();
    if (tcp) {
      const gbit = tcp.end.sum_received.bits_per_second / 1e9;
      const pps = (c1.txPackets - c0.txPackets) / secs;
      const batch = (c1.txPackets - c0.txPackets) / Math.max(1, c1.batches.tx - c0.batches.tx);
      console.log(
        `udp forwarder TCP: ${gbit.toFixed(2)} Gbit/s, A tx ${Math.round(pps)} pps ` +
          `(mean sendmmsg batch ${batch.toFixed(1)}, ${c1.gso.messages - c0.gso.messages} ` +
          `GSO messages), retransmits ${tcp.end.sum_sent.retransmits}`,
      );
    }
    // Whatever the load, the kernel must not have refused UDP GSO over veth.
    assert.ok(c1.gso.active, `A's UDP GSO was turned off: ${JSON.stringify(c1)}`);
    const u0 = await t.b.counters();
    const udp = await client(["-u", "-b", "0", "-l", "64"], 2);
    const u1 = await t.b.counters();
    if (udp) {
      const s = udp.end.sum;
      console.log(
        `udp forwarder UDP 64 B: sent ${Math.round(s.packets / s.seconds)} pps, ` +
          `B delivered ${Math.round((u1.rxPackets - u0.rxPackets) / s.seconds)} pps, ` +
          `lost ${s.lost_percent.toFixed(1)}%`,
      );
    }
  } finally {
    try {
      server.kill("SIGKILL");
    } catch { /* gone */ }
    await server.status;
  }
}
