/**
 * The operator's view of a running agent, end to end in a harness cluster (3 hosts, vxlan, Deno
 * KV): /healthz is 200 from the start; /readyz is 503 with the reason while the registry has no
 * network config (h1 starts without --net-config-path), 200 once it has one; systemd's
 * NOTIFY_SOCKET gets READY=1 only then; /metrics is valid Prometheus text with the lease, peer,
 * registry and process metrics; `--log-format json` lines are JSON; SIGTERM exits 0 within 2 s.
 *
 * @example
 * ```sh
 * deno test -A test/e2e_health_test.ts
 * ```
 */
import assert from "node:assert/strict";
import { withCluster } from "../kit/cluster.ts";
import { run, sleep, waitFor } from "../kit/proc.ts";

const PORT = 9471;

// ---- Prometheus text format 0.0.4 ----

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?[ ]+(\S+)(?:[ ]+(-?\d+))?$/;
const LABEL = /^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"/;

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

function parseValue(v: string): number | null {
  if (v === "+Inf") return Infinity;
  if (v === "-Inf") return -Infinity;
  if (v === "NaN") return NaN;
  return /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(v) ? Number(v) : null;
}

function parseLabels(text: string): Record<string, string> | null {
  const out: Record<string, string> = {};
  let rest = text.slice(1, -1);
  while (rest.length > 0) {
    const m = LABEL.exec(rest);
    if (!m || m[1] in out) return null;
    out[m[1]] = m[2];
    rest = rest.slice(m[0].length);
    if (rest.startsWith(",")) rest = rest.slice(1);
    else if (rest.length > 0) return null;
  }
  return out;
}

/**
 * Checks exposition text strictly: HELP/TYPE syntax, one TYPE per family before its samples,
 * samples grouped by family, known suffixes only for histograms, no duplicate series, histogram
 * buckets cumulative with +Inf equal to _count. Returns the samples and every problem found.
 */
function checkExposition(text: string): { samples: Sample[]; errors: string[] } {
  const errors: string[] = [];
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  const helps = new Set<string>();
  const done = new Set<string>();
  const series = new Set<string>();
  let current = "";
  if (!text.endsWith("\n")) errors.push("text does not end with a newline");
  const lines = text.split("\n");
  if (lines.at(-1) === "") lines.pop();
  const familyOf = (name: string) => {
    for (const suf of ["_bucket", "_sum", "_count"]) {
      const base = name.slice(0, -suf.length);
      if (name.endsWith(suf) && types.get(base) === "histogram") return base;
    }
    return name;
  };
  lines.forEach((line, i) => {
    const at = `line ${i + 1} "${line}"`;
    if (line.startsWith("#")) {
      const m = /^# (HELP|TYPE) (\S+)(?: (.*))?$/.exec(line);
      if (!m) return; // a plain comment
      const [, kind, name, rest = ""] = m;
      if (!NAME.test(name)) errors.push(`${at}: bad metric name`);
      if (kind === "HELP") {
        if (helps.has(name)) errors.push(`${at}: second HELP for ${name}`);
        helps.add(name);
      } else {
        if (!["counter", "gauge", "histogram", "summary", "untyped"].includes(rest)) {
          errors.push(`${at}: unknown type`);
        }
        if (types.has(name)) errors.push(`${at}: second TYPE for ${name}`);
        if (done.has(name) || current === name) errors.push(`${at}: TYPE after samples`);
        types.set(name, rest);
      }
      return;
    }
    const m = SAMPLE.exec(line);
    if (!m) return void errors.push(`${at}: not a sample line`);
    const labels = m[2] ? parseLabels(m[2]) : {};
    const value = parseValue(m[3]);
    if (labels === null) return void errors.push(`${at}: bad labels`);
    if (value === null) return void errors.push(`${at}: bad value`);
    const fam = familyOf(m[1]);
    if (fam !== current) {
      if (done.has(fam)) errors.push(`${at}: samples of ${fam} are not grouped`);
      if (current) done.add(current);
      current = fam;
    }
    const key = m[1] + JSON.stringify(Object.entries(labels).sort());
    if (series.has(key)) errors.push(`${at}: duplicate series`);
    series.add(key);
    if (types.get(fam) === "histogram" && m[1] === fam) {
      errors.push(`${at}: bare sample for histogram ${fam}`);
    }
    if (m[1].endsWith("_bucket") && fam !== m[1] && labels.le === undefined) {
      errors.push(`${at}: bucket without le`);
    }
    samples.push({ name: m[1], labels, value });
  });
  for (const [name, type] of types) {
    if (type !== "histogram") continue;
    const buckets = samples.filter((s) => s.name === `${name}_bucket`);
    const count = samples.find((s) => s.name === `${name}_count`);
    const les = buckets.map((b) => parseValue(b.labels.le ?? ""));
    if (les.some((x, i) => x === null || (i > 0 && x <= les[i - 1]!))) {
      errors.push(`${name}: bucket bounds not increasing`);
    }
    if (buckets.some((b, i) => i > 0 && b.value < buckets[i - 1].value)) {
      errors.push(`${name}: bucket counts not cumulative`);
    }
    const inf = buckets.find((b) => b.labels.le === "+Inf");
    if (!inf || !count || inf.value !== count.value) {
      errors.push(`${name}: +Inf bucket missing or not equal to _count`);
    }
    if (!samples.some((s) => s.name === `${name}_sum`)) errors.push(`${name}: no _sum`);
  }
  return { samples, errors };
}

Deno.test("prometheus checker rejects what it should", () => {
  const good = "# HELP a_total A.\n# TYPE a_total counter\na_total 3\n" +
    '# TYPE h histogram\nh_bucket{le="1"} 1\nh_bucket{le="+Inf"} 2\nh_sum 3.5\nh_count 2\n';
  assert.deepEqual(checkExposition(good).errors, []);
  const bad: [string, RegExp][] = [
    ["a 1", /newline/],
    ["a{b=c} 1\n", /bad labels/],
    ["a one\n", /bad value/],
    ["a 1\nb 1\na 2\n", /not grouped/],
    ["a 1\n# TYPE a gauge\n", /TYPE after samples/],
    [
      '# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n',
      /cumul/,
    ],
    ['# TYPE h histogram\nh_bucket{le="+Inf"} 2\nh_sum 1\nh_count 3\n', /\+Inf/],
  ];
  for (const [text, re] of bad) {
    const { errors } = checkExposition(text);
    assert.ok(errors.some((e) => re.test(e)), `${JSON.stringify(text)}: ${errors.join("; ")}`);
  }
});

// ---- helpers ----

/** GET over bash's /dev/tcp inside `ns` (no extra tool needed); bounded. */
async function httpGet(ns: string, path: string): Promise<{ status: number; body: string }> {
  const script = `exec 3<>/dev/tcp/127.0.0.1/${PORT} || exit 7
printf 'GET ${path} HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3
cat <&3`;
  const r = await run(["ip", "netns", "exec", ns, "bash", "-c", script], { timeoutMs: 5000 });
  const split = r.stdout.indexOf("\r\n\r\n");
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(r.stdout);
  if (!m || split < 0) throw new Error(`GET ${path} in ${ns}: no HTTP answer (${r.stderr})`);
  return { status: Number(m[1]), body: r.stdout.slice(split + 4) };
}

/** A unix datagram socket like systemd's notify socket; collects what is sent to it. */
function notifyListener(path: string) {
  const py = `import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print("LISTENING", flush=True)
end = time.time() + 90
while time.time() < end:
    s.settimeout(max(0.1, end - time.time()))
    try:
        print(s.recv(4096).decode().replace("\\n", " "), flush=True)
    except socket.timeout:
        break
`;
  const child = new Deno.Command("python3", {
    args: ["-c", py, path],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const got: string[] = [];
  const reader = (async () => {
    const dec = new TextDecoderStream();
    let buf = "";
    for await (const chunk of child.stdout.pipeThrough(dec)) {
      buf += chunk;
      const lines = buf.split("\n");
      buf = lines.pop()!;
      got.push(...lines);
    }
  })();
  return {
    got,
    async close() {
      try {
        child.kill("SIGKILL");
      } catch { /* exited */ }
      await child.status;
      await reader;
    },
  };
}

function value(samples: Sample[], name: string): number | undefined {
  return samples.find((s) => s.name === name)?.value;
}

Deno.test({
  name:
    "health: /healthz, /readyz before and after config, /metrics, JSON logs, sd_notify, SIGTERM",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await withCluster({ hosts: 3, registry: "kv" }, async (c) => {
      const [h1, h2, h3] = c.hosts;
      const sock = `${c.dir}/notify.sock`;
      const notify = notifyListener(sock);
      try {
        await waitFor("the notify listener", () => notify.got.includes("LISTENING"), {
          timeoutMs: 10_000,
        });

        // 1. h1 alone, without --net-config-path, on a registry with no config: alive, not ready.
        const a1 = c.startAgent(h1, {
          healthzPort: PORT,
          extraArgs: ["--net-config-path=", "--log-format", "json"],
          env: { NOTIFY_SOCKET: sock },
        });
        const healthz = await waitFor("/healthz on h1", async () => {
          const r = await httpGet(h1.netns, "/healthz").catch(() => null);
          return r?.status === 200 ? r : undefined;
        }, { timeoutMs: 20_000 });
        assert.equal(healthz.body.trim(), "ok");
        await sleep(1000); // time, not a state: it keeps waiting for a config meanwhile
        const notReady = await httpGet(h1.netns, "/readyz");
        assert.equal(notReady.status, 503);
        assert.match(notReady.body, /not ready: no subnet lease yet/);
        assert.ok(!notify.got.includes("READY=1"), "READY=1 sent before the node was ready");
        assert.equal(a1.status, null, "agent exited without a config");

        // 2. The operator stores the config: h1 becomes ready and tells systemd so.
        const cfg = `${c.dir}/config.json`;
        await Deno.writeTextFile(
          cfg,
          JSON.stringify({ Network: c.network, Backend: { Type: "vxlan" } }),
        );
        await c.weftOk(h1, ["config", "set", cfg, "--registry", "kv", "--kv-path", c.kvPath!], {
          timeoutMs: 30_000,
        });
        await a1.waitReady();
        assert.equal((await httpGet(h1.netns, "/readyz")).status, 200);
        await waitFor("READY=1 on NOTIFY_SOCKET", () => notify.got.includes("READY=1"), {
          timeoutMs: 10_000,
        });

        // 3. Two peers join: their leases reach h1 as watch events.
        await Promise.all([c.startAgent(h2).waitReady(), c.startAgent(h3).waitReady()]);
        const samples = await waitFor("weft_peers 2 on h1", async () => {
          const r = await httpGet(h1.netns, "/metrics");
          assert.equal(r.status, 200);
          const { samples, errors } = checkExposition(r.body);
          assert.deepEqual(errors, [], `invalid Prometheus text:\n${r.body}`);
          // The peer gauge is set before the backend applies: wait for the applied counts too.
          return value(samples, "weft_peers") === 2 &&
              value(samples, "weft_peer_events_applied_total")! >= 2 &&
              value(samples, "weft_peer_apply_latency_seconds_count")! >= 2
            ? samples
            : undefined;
        }, { timeoutMs: 30_000 });
        assert.equal(value(samples, "weft_lease_held"), 1);
        assert.ok(value(samples, "weft_peer_events_applied_total")! >= 2);
        const count = value(samples, "weft_peer_apply_latency_seconds_count")!;
        assert.ok(count >= 2, `latency histogram has ${count} observations`);
        assert.ok(samples.some((s) => s.name === "weft_peer_apply_latency_seconds_bucket"));
        assert.ok(value(samples, "weft_registry_resyncs_total")! >= 1, "no registry metrics");
        assert.ok(samples.some((s) => s.name.startsWith("weft_registry_kv_")));
        assert.ok(value(samples, "weft_process_resident_memory_bytes")! > 1e6);
        const start = value(samples, "weft_process_start_time_seconds")!;
        assert.ok(Math.abs(start - Date.now() / 1000) < 600, `start time ${start}`);
        const build = samples.find((s) => s.name === "weft_build_info");
        assert.ok(build?.labels.version && build.value === 1, JSON.stringify(build));

        // 4. SIGTERM: exit 0 within 2 s (README), which the agent keeps with a hard 1.8 s exit
        //    timer. Asserted as what it did: it exited by itself, code 0, before the generous
        //    SIGKILL deadline (10x the promise). How fast it stops is measured in bench/.
        const st = await a1.stop("SIGTERM", 20_000);
        assert.equal(
          st.signal,
          null,
          `killed by ${st.signal}: no exit of its own ${Math.round(st.ms)} ms after SIGTERM`,
        );
        assert.equal(st.code, 0);

        // 5. Every line the agent logged is a JSON object with the core fields.
        const log = await c.logs(h1);
        // Not weft's: the harness's banners, and deno's own notice when another deno process
        // holds the node_modules lock (tests running in parallel).
        const lines = log.split("\n").filter((l) =>
          l !== "" && !l.startsWith("=== start #") && !l.startsWith("--- pid ") &&
          !l.startsWith("Blocking waiting for file lock")
        );
        assert.ok(lines.length >= 5, log);
        for (const l of lines) {
          let o: Record<string, unknown>;
          try {
            o = JSON.parse(l);
          } catch {
            throw new Error(`log line is not JSON: ${l}`);
          }
          for (const k of ["time", "level", "logger", "msg"]) {
            assert.ok(k in o, `${k} missing: ${l}`);
          }
        }
        assert.ok(lines.some((l) => JSON.parse(l).msg === "ready"), log);
        console.log(`SIGTERM → exit 0 in ${Math.round(st.ms)} ms; ${lines.length} JSON log lines`);
      } finally {
        await notify.close();
      }
    });
  },
});
