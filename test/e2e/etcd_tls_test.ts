/**
 * The agent against a secured etcd, as an operator runs it: client-certificate TLS
 * (`--etcd-cafile/--etcd-certfile/--etcd-keyfile`) and username/password auth
 * (`--etcd-username/--etcd-password`) each get a lease; a wrong CA, a missing certificate file
 * and a wrong password each end the agent with exit 1 and one `weft:` line that says what failed,
 * which flag to look at and what to do, within seconds (credential errors are not retried).
 *
 * Everything runs on loopback: etcd on 127.0.0.1, agents with the alloc backend on `lo` and a
 * public IP from 198.18.1.0/24 (the alloc backend programs nothing, and no iptables rules).
 *
 * @example
 * ```sh
 * deno test -A test/etcd_tls_test.ts
 * ```
 */
import assert from "node:assert/strict";
import { type EtcdProc, startEtcd } from "../kit/etcd.ts";
import { startAgent } from "../kit/agent.ts";
import { runOk, StopWaiting, waitFor } from "../kit/proc.ts";
import { readSubnetHint } from "../../src/config/subnet_env.ts";
import { formatCidr } from "../../src/base/ipv4.ts";
import { subnetKey } from "../../src/lease/codec.ts";

/**
 * Bounds on an agent's start (lease + subnet.env) and on a failing agent's exit. Both take about
 * a second; the slack is for a loaded CI machine, where deno alone took 15 s to start. A retry
 * loop never exits, so it still fails.
 */
const START_MS = 60_000;
const FAIL_EXIT_MS = 45_000;
/** etcd's own start (and auth setup) on a loaded machine. */
const ETCD_READY_MS = 30_000;

const runId = Math.random().toString(36).slice(2, 8);
const prefix = `/weft-tls-${runId}/network`;

async function withTmp<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: `weft-tls-${runId}-` });
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** Agent flags for `dir` with public IP 198.18.1.<n>, plus the registry flags in `extra`. */
function agentArgs(dir: string, endpoint: string, n: number, extra: string[]): string[] {
  Deno.writeTextFileSync(
    `${dir}/net-config.json`,
    JSON.stringify({ Network: "198.19.0.0/16", Backend: { Type: "alloc" } }),
  );
  return [
    "--registry",
    "etcd",
    "--etcd-endpoints",
    endpoint,
    "--etcd-prefix",
    prefix,
    "--iface",
    "lo",
    "--public-ip",
    `198.18.1.${n}`,
    "--iptables-forward-rules=false",
    "--subnet-file",
    `${dir}/subnet.env`,
    "--net-config-path",
    `${dir}/net-config.json`,
    ...extra,
  ];
}

/**
 * Starts an agent that must get a lease: subnet.env names a subnet whose lease in etcd carries
 * the agent's public IP. Stops it with SIGTERM (exit 0) afterwards.
 */
async function assertGetsLease(etcd: EtcdProc, n: number, extra: string[]): Promise<void> {
  await withTmp(async (dir) => {
    const a = startAgent(agentArgs(dir, etcd.endpoint, n, extra));
    try {
      const file = `${dir}/subnet.env`;
      // Only the subnet matters here (the alloc backend on lo writes lo's MTU, 65536).
      const subnet = await waitFor(`the agent to write ${file}`, async () => {
        const hint = await readSubnetHint(file);
        if (hint) return hint;
        if (a.status) throw new StopWaiting(`agent exited before writing ${file}:\n${a.log()}`);
      }, { timeoutMs: START_MS }).catch((e) => {
        if (e instanceof StopWaiting) throw e;
        throw new Error(`${(e as Error).message}:\n${a.log()}`);
      });
      const key = `${prefix}/subnets/${subnetKey(subnet)}`;
      const value = (await etcd.etcdctl("get", key, "--print-value-only")).trim();
      assert.ok(value, `no lease ${key} in etcd for ${formatCidr(subnet)}:\n${a.log()}`);
      assert.equal(JSON.parse(value).PublicIP, `198.18.1.${n}`, value);
    } finally {
      const st = await a.stop("SIGTERM");
      assert.equal(st.code, 0, `agent did not stop cleanly:\n${a.log()}`);
    }
  });
}

/**
 * Starts an agent that must fail: exit 1 within FAIL_EXIT_MS, exactly one `weft:` error line
 * matching every pattern in `says`, and no retry loop before it.
 */
async function assertFailsClearly(
  etcd: EtcdProc,
  n: number,
  extra: string[],
  says: RegExp[],
): Promise<number> {
  return await withTmp(async (dir) => {
    const a = startAgent(agentArgs(dir, etcd.endpoint, n, extra));
    const t0 = performance.now();
    const st = await a.waitExit(FAIL_EXIT_MS).catch(() => null);
    const ms = performance.now() - t0;
    if (!st) await a.stop("SIGKILL");
    const log = a.log();
    assert.ok(st, `agent still running after ${FAIL_EXIT_MS} ms (retrying forever?):\n${log}`);
    assert.equal(st.code, 1, `exit code:\n${log}`);
    const errors = log.split("\n").filter((l) => l.startsWith("weft:"));
    assert.equal(errors.length, 1, `want exactly one "weft:" error line:\n${log}`);
    for (const re of says) assert.match(errors[0], re, `error line:\n${log}`);
    assert.doesNotMatch(log, /retrying/, `credential errors must not be retried:\n${log}`);
    await assert.rejects(Deno.stat(`${dir}/subnet.env`), Deno.errors.NotFound);
    return ms;
  });
}

/** A CA that signed nothing etcd knows: the wrong --etcd-cafile. */
async function otherCa(dir: string): Promise<string> {
  await runOk([
    "openssl",
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
    "-keyout",
    `${dir}/other-ca.key`,
    "-out",
    `${dir}/other-ca.crt`,
    "-days",
    "1",
    "-subj",
    "/CN=weft-test-other-ca",
  ]);
  return `${dir}/other-ca.crt`;
}

Deno.test({
  name: "etcd TLS client certificates: lease with the right files; wrong CA, missing cert fail",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const etcd = await startEtcd({ tls: { clientCertAuth: true }, readyTimeoutMs: ETCD_READY_MS });
    try {
      const t = etcd.tls!;
      const files = ["--etcd-cafile", t.caFile, "--etcd-certfile", t.certFile];
      await assertGetsLease(etcd, 11, [...files, "--etcd-keyfile", t.keyFile]);

      await withTmp(async (dir) => {
        const ms = await assertFailsClearly(etcd, 12, [
          "--etcd-cafile",
          await otherCa(dir),
          "--etcd-certfile",
          t.certFile,
          "--etcd-keyfile",
          t.keyFile,
        ], [
          /TLS with etcd at https:\/\/127\.0\.0\.1:\d+ failed/,
          /verify|certificate/,
          /--etcd-cafile/,
        ]);
        console.log(`wrong CA: exit 1 after ${Math.round(ms)} ms`);
      });

      const missing = `/nonexistent-${runId}/client.crt`;
      const ms = await assertFailsClearly(etcd, 13, [
        "--etcd-cafile",
        t.caFile,
        "--etcd-certfile",
        missing,
        "--etcd-keyfile",
        t.keyFile,
      ], [new RegExp(`--etcd-certfile "${missing}"`), /No such file/, /check the path/]);
      console.log(`missing cert file: exit 1 after ${Math.round(ms)} ms`);
    } finally {
      await etcd.cleanup();
    }
  },
});

Deno.test({
  name: "etcd username/password: lease with the right password; a wrong one fails clearly",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const etcd = await startEtcd({
      auth: { username: "weft", password: `pw-${runId}` },
      readyTimeoutMs: ETCD_READY_MS,
    });
    try {
      await assertGetsLease(etcd, 21, [
        "--etcd-username",
        "weft",
        "--etcd-password",
        `pw-${runId}`,
      ]);
      const ms = await assertFailsClearly(
        etcd,
        22,
        ["--etcd-username", "weft", "--etcd-password", "wrong"],
        [/rejected user "weft" or its password/, /--etcd-username\/--etcd-password/],
      );
      console.log(`wrong password: exit 1 after ${Math.round(ms)} ms`);
    } finally {
      await etcd.cleanup();
    }
  },
});
