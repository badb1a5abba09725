// Health/metrics server on 127.0.0.1 and sd_notify against a real unix datagram listener.
import assert from "node:assert/strict";
import { startHealthServer } from "../../src/ops/health.ts";
import { MetricsRegistry } from "../../src/base/metrics.ts";
import { notify, notifyReady } from "../../src/ops/sdnotify.ts";

const RUN = crypto.randomUUID().slice(0, 8);

Deno.test("health server: status codes, readiness reason, Prometheus text", async () => {
  const m = new MetricsRegistry();
  const c = m.counter("weft_test_events_total", "Events seen by the test.");
  c.inc(3);
  let ready = { ok: false, reason: "no subnet lease yet" };
  const srv = startHealthServer({
    hostname: "127.0.0.1",
    port: 0,
    ready: () => ready,
    metrics: m,
    version: "1.2.3-test",
  });
  const base = `http://127.0.0.1:${srv.port}`;
  const get = async (path: string, method = "GET") => {
    const r = await fetch(base + path, { method });
    return { status: r.status, body: await r.text(), type: r.headers.get("content-type") };
  };
  try {
    assert.ok(srv.port > 0);
    assert.deepEqual((await get("/healthz")).body.trim(), "ok");
    assert.equal((await get("/healthz")).status, 200);

    const nr = await get("/readyz");
    assert.equal(nr.status, 503);
    assert.match(nr.body, /no subnet lease yet/);
    ready = { ok: true, reason: "" };
    const r = await get("/readyz");
    assert.equal(r.status, 200);
    assert.equal(r.body.trim(), "ok");

    assert.equal((await get("/nope")).status, 404);
    assert.equal((await get("/healthz", "POST")).status, 405);
    assert.equal((await get("/metrics", "DELETE")).status, 405);

    const met = await get("/metrics");
    assert.equal(met.status, 200);
    assert.match(met.type ?? "", /^text\/plain; version=0\.0\.4/);
    // Every sample line must be `name{labels} value` with a numeric value.
    const samples = new Map<string, number>();
    for (const line of met.body.split("\n")) {
      if (line === "" || line.startsWith("#")) continue;
      const mm = /^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$/.exec(line);
      assert.ok(mm, `not a Prometheus sample line: ${JSON.stringify(line)}`);
      assert.ok(!Number.isNaN(Number(mm[2])), `bad value in ${line}`);
      samples.set(mm[1], Number(mm[2]));
    }
    assert.equal(samples.get("weft_test_events_total"), 3);
    assert.match(met.body, /# TYPE weft_test_events_total counter/);
    assert.ok(samples.get("weft_process_resident_memory_bytes")! > 1_000_000);
    const start = samples.get("weft_process_start_time_seconds")!;
    assert.ok(Math.abs(start - Date.now() / 1000) < 3600, `start time ${start} not recent`);
    assert.equal(samples.get(`weft_build_info{version="1.2.3-test"}`), 1);

    // The counter is read at scrape time.
    c.inc();
    assert.match((await get("/metrics")).body, /^weft_test_events_total 4$/m);

    // A readiness check that throws is a 503 with the error, not a crash.
    const srv2 = startHealthServer({
      hostname: "127.0.0.1",
      port: 0,
      ready: () => {
        throw new Error("registry unreachable");
      },
      metrics: m,
    });
    try {
      const rr = await fetch(`http://127.0.0.1:${srv2.port}/readyz`);
      assert.equal(rr.status, 503);
      assert.match(await rr.text(), /registry unreachable/);
    } finally {
      await srv2.close();
    }
  } finally {
    await srv.close();
  }
  await assert.rejects(fetch(base + "/healthz"), "server must be closed");
});

Deno.test("health server: /status is the agent's JSON, and /readyz does not read it", async () => {
  let calls = 0;
  const picture = {
    readiness: { ok: true },
    peers: [{ subnet: "198.19.9.0/24", reachable: false }],
  };
  const srv = startHealthServer({
    hostname: "127.0.0.1",
    port: 0,
    ready: () => ({ ok: true }),
    status: () => {
      calls++;
      return picture;
    },
    metrics: new MetricsRegistry(),
  });
  const base = `http://127.0.0.1:${srv.port}`;
  try {
    const ready = await fetch(base + "/readyz");
    assert.equal(ready.status, 200, "an unreachable peer never makes the node unready");
    await ready.body?.cancel();
    assert.equal(calls, 0);
    const r = await fetch(base + "/status");
    assert.equal(r.status, 200);
    assert.match(r.headers.get("content-type") ?? "", /application\/json/);
    assert.deepEqual(await r.json(), picture);
    assert.equal(calls, 1);
  } finally {
    await srv.close();
  }
  // Without a status source the path is unknown, as before.
  const bare = startHealthServer({
    hostname: "127.0.0.1",
    port: 0,
    ready: () => ({ ok: true }),
    metrics: new MetricsRegistry(),
  });
  try {
    const r = await fetch(`http://127.0.0.1:${bare.port}/status`);
    assert.equal(r.status, 404);
    await r.body?.cancel();
  } finally {
    await bare.close();
  }
});

Deno.test("health server: port in use is a clear error", async () => {
  const first = startHealthServer({
    hostname: "127.0.0.1",
    port: 0,
    ready: () => ({ ok: true }),
    metrics: new MetricsRegistry(),
  });
  try {
    assert.throws(
      () =>
        startHealthServer({
          hostname: "127.0.0.1",
          port: first.port,
          ready: () => ({ ok: true }),
          metrics: new MetricsRegistry(),
        }),
      new RegExp(`cannot serve health/metrics on 127\\.0\\.0\\.1:${first.port}`),
    );
  } finally {
    await first.close();
  }
});

// A python3 listener (independent of weft's FFI code) binds the socket, prints what it
// receives, and gives up after 5 s.
const LISTENER = `
import socket, sys
name = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("\\0" + name[1:] if name.startswith("@") else name)
s.settimeout(5)
print("bound", flush=True)
try:
    print(s.recv(4096).decode(), flush=True)
except socket.timeout:
    print("TIMEOUT", flush=True)
`;

async function listenOnce(name: string, send: () => void): Promise<string> {
  const child = new Deno.Command("python3", {
    args: ["-c", LISTENER, name],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  try {
    while (!out.includes("bound\n")) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`listener exited early: ${out}`);
      out += value;
    }
    send();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      out += value;
    }
  } finally {
    reader.releaseLock();
    await child.status;
  }
  return out.replace("bound\n", "").trim();
}

Deno.test("sd_notify: READY=1 reaches a path socket and an abstract socket", async () => {
  const dir = await Deno.makeTempDir({ prefix: `weft-sdn-${RUN}-` });
  try {
    const path = `${dir}/notify.sock`;
    assert.equal(await listenOnce(path, () => assert.equal(notifyReady(path), true)), "READY=1");
    const abs = `@weft-sdn-${RUN}`;
    assert.equal(await listenOnce(abs, () => notify("STATUS=ok", abs)), "STATUS=ok");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("sd_notify: no-op when unset, clear error when nobody listens", () => {
  assert.equal(notifyReady(undefined), false);
  assert.equal(notify("READY=1", ""), false);
  assert.throws(
    () => notify("READY=1", `/tmp/weft-sdn-${RUN}-absent.sock`),
    /NOTIFY_SOCKET \/tmp\/weft-sdn-\w+-absent\.sock failed: errno 2/,
  );
  assert.throws(() => notify("READY=1", "relative.sock"), /neither an absolute path/);
  assert.equal(notifyReady(`/tmp/weft-sdn-${RUN}-absent.sock`), false, "notifyReady never throws");
});
