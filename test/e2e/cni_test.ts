// The CNI plugin mode with the real bridge/host-local plugins from /usr/lib/cni: a namespace plays
// the host (the plugin runs inside it), two more play pods.
import assert from "node:assert/strict";
import { newRunId } from "../kit/names.ts";
import { createNs, deleteNs, denoInNs } from "../kit/netns.ts";
import { runCni } from "../../src/cni/plugin.ts";
import { buildDelegate, parseNetConf } from "../../src/cni/netconf.ts";
import { parseSubnetEnv } from "../../src/config/subnet_env.ts";
import { run, runOk } from "../kit/proc.ts";

const RUN = newRunId();
const CNI_PATH = "/usr/lib/cni";
const SUBNET_ENV = [
  "FLANNEL_NETWORK=198.19.0.0/16",
  "FLANNEL_SUBNET=198.19.7.1/24",
  "FLANNEL_MTU=1450",
  "FLANNEL_IPMASQ=true",
  "",
].join("\n");

/** A command to completion, through the kit (stdout; throws with stderr on failure). */
const sh = (...argv: string[]) => runOk(argv, { timeoutMs: 20_000 });

// deno-lint-ignore no-explicit-any
const ipj = async (ns: string, ...args: string[]): Promise<any[]> =>
  JSON.parse(await sh("ip", "netns", "exec", ns, "ip", "-j", ...args) || "[]");

Deno.test("netconf: delegate built from subnet.env with flannel's semantics", () => {
  const env = parseSubnetEnv(SUBNET_ENV, "subnet.env");
  const conf = parseNetConf(JSON.stringify({
    cniVersion: "1.0.0",
    name: "cbr0",
    type: "weft",
    ipam: { dataDir: "/x", routes: [{ dst: "198.18.0.0/24" }] },
    delegate: { hairpinMode: false, bridge: "br7" },
  }));
  assert.equal(conf.subnetFile, "/run/flannel/subnet.env");
  assert.equal(conf.dataDir, "/var/lib/cni/flannel");
  assert.deepEqual(buildDelegate(conf, env), {
    cniVersion: "1.0.0",
    name: "cbr0",
    type: "bridge",
    bridge: "br7",
    isGateway: true,
    isDefaultGateway: true,
    hairpinMode: false, // delegate keys win
    ipMasq: false, // weft masquerades (FLANNEL_IPMASQ=true), so the bridge must not
    mtu: 1450,
    ipam: {
      type: "host-local",
      dataDir: "/x",
      ranges: [[{ subnet: "198.19.7.0/24" }]],
      routes: [{ dst: "198.18.0.0/24" }, { dst: "198.19.0.0/16" }],
    },
  });
  const noMasq = parseSubnetEnv(SUBNET_ENV.replace("IPMASQ=true", "IPMASQ=false"), "s");
  assert.equal(buildDelegate(conf, noMasq).ipMasq, true);
  assert.throws(
    () => buildDelegate(parseNetConf('{"name":"n","delegate":{"ipam":{}}}'), env),
    /must not have a "ipam" field/,
  );
  assert.throws(() => parseSubnetEnv("FLANNEL_NETWORK=198.19.0.0/16\n", "/p"), /\/p is missing/);
});

Deno.test("runCni: VERSION, missing subnet.env, bad input (in process)", async () => {
  const dir = await Deno.makeTempDir({ prefix: `weft-cni-${RUN}-` });
  try {
    const v = await runCni({ env: { CNI_COMMAND: "VERSION" }, stdin: '{"cniVersion":"0.4.0"}' });
    assert.equal(v.code, 0);
    const vj = JSON.parse(v.stdout);
    assert.equal(vj.cniVersion, "0.4.0");
    assert.ok(vj.supportedVersions.includes("1.0.0") && vj.supportedVersions.includes("0.3.1"));

    const env = {
      CNI_COMMAND: "ADD",
      CNI_CONTAINERID: "c0",
      CNI_NETNS: "/var/run/netns/none",
      CNI_IFNAME: "eth0",
      CNI_PATH,
    };
    const conf = { cniVersion: "1.0.0", name: "n", type: "weft", subnetFile: `${dir}/subnet.env` };
    const add = await runCni({ env, stdin: JSON.stringify({ ...conf, dataDir: `${dir}/d` }) });
    assert.equal(add.code, 1);
    assert.deepEqual(
      { ...JSON.parse(add.stdout), details: undefined },
      {
        cniVersion: "1.0.0",
        code: 11,
        msg: `weft is not running or not ready on this node (no ${dir}/subnet.env)`,
        details: undefined,
      },
    );

    const bad = await runCni({ env, stdin: "{not json" });
    assert.equal(bad.code, 1);
    assert.equal(JSON.parse(bad.stdout).code, 6);
    const old = await runCni({ env, stdin: JSON.stringify({ ...conf, cniVersion: "9.9.9" }) });
    assert.equal(JSON.parse(old.stdout).code, 1);
    const noEnv = await runCni({ env: { CNI_COMMAND: "ADD" }, stdin: JSON.stringify(conf) });
    assert.equal(JSON.parse(noEnv.stdout).code, 4);
    assert.match(JSON.parse(noEnv.stdout).msg, /CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_PATH/);
    const evil = await runCni({
      env: { ...env, CNI_CONTAINERID: "../../etc/passwd" },
      stdin: JSON.stringify(conf),
    });
    assert.equal(JSON.parse(evil.stdout).code, 4);
    // DEL of a container never added here succeeds quietly, as the spec asks.
    const del = await runCni({
      env: { ...env, CNI_COMMAND: "DEL" },
      stdin: JSON.stringify({ ...conf, dataDir: `${dir}/d` }),
    });
    assert.deepEqual(del, { code: 0, stdout: "" });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("CNI ADD/CHECK/DEL with real bridge + host-local in network namespaces", async () => {
  const host = `wch-${RUN}`;
  const pods = [`wcp1-${RUN}`, `wcp2-${RUN}`];
  const dir = await Deno.makeTempDir({ prefix: `weft-cni-${RUN}-` });
  const driver = `${dir}/driver.ts`;
  await Deno.writeTextFile(
    driver,
    `import { cniMain } from ${
      JSON.stringify(new URL("../../src/cni/main.ts", import.meta.url).href)
    };
Deno.exit(await cniMain());\n`,
  );
  await Deno.writeTextFile(`${dir}/subnet.env`, SUBNET_ENV);
  const bridge = `wcb-${RUN}`;
  const conf = {
    cniVersion: "1.0.0",
    name: "weft-test",
    type: "weft",
    subnetFile: `${dir}/subnet.env`,
    dataDir: `${dir}/data`,
    ipam: { dataDir: `${dir}/ipam` },
    delegate: { bridge },
  };

  /** Runs the plugin as a separate process inside the host namespace, like a runtime would. */
  async function cni(command: string, pod: string, id: string, stdin: unknown) {
    return await run(denoInNs(host, ["--no-config", driver]), {
      env: {
        CNI_COMMAND: command,
        CNI_CONTAINERID: id,
        CNI_NETNS: `/var/run/netns/${pod}`,
        CNI_IFNAME: "eth0",
        CNI_PATH,
      },
      stdin: JSON.stringify(stdin),
      timeoutMs: 60_000,
    });
  }

  try {
    for (const ns of [host, ...pods]) await createNs(ns, { bare: true });
    await sh("ip", "netns", "exec", host, "ip", "link", "set", "lo", "up");

    const ips: string[] = [];
    const results: unknown[] = [];
    for (const [i, pod] of pods.entries()) {
      const r = await cni("ADD", pod, `c${i}-${RUN}`, conf);
      assert.equal(r.code, 0, `ADD ${pod}: ${r.stdout} ${r.stderr}`);
      const res = JSON.parse(r.stdout);
      results.push(res);
      assert.equal(res.cniVersion, "1.0.0");
      const addr: string = res.ips[0].address;
      assert.match(addr, /^198\.19\.7\.\d+\/24$/);
      assert.equal(res.ips[0].gateway, "198.19.7.1");
      ips.push(addr.split("/")[0]);

      // What the pod really got, read from the kernel.
      const [eth0] = await ipj(pod, "addr", "show", "dev", "eth0");
      assert.equal(eth0.mtu, 1450);
      assert.ok(
        eth0.addr_info.some((a: { local: string; family: string }) =>
          a.family === "inet" && a.local === ips[i]
        ),
      );
      const routes = await ipj(pod, "route", "show");
      const net = routes.find((x: { dst: string }) => x.dst === "198.19.0.0/16");
      assert.equal(net?.gateway, "198.19.7.1", JSON.stringify(routes));
      assert.ok(routes.some((x: { dst: string }) => x.dst === "default"), "default route");
      // The delegate config was saved for DEL.
      const saved = JSON.parse(await Deno.readTextFile(`${dir}/data/c${i}-${RUN}`));
      assert.equal(saved.type, "bridge");
      assert.equal(saved.ipam.ranges[0][0].subnet, "198.19.7.0/24");
    }
    assert.notEqual(ips[0], ips[1]);
    const [br] = await ipj(host, "addr", "show", "dev", bridge);
    assert.ok(br.addr_info.some((a: { local: string }) => a.local === "198.19.7.1"));

    // The two pods reach each other over the bridge.
    await sh("ip", "netns", "exec", pods[0], "ping", "-c", "2", "-i", "0.2", "-W", "2", ips[1]);

    const chk = await cni("CHECK", pods[0], `c0-${RUN}`, { ...conf, prevResult: results[0] });
    assert.equal(chk.code, 0, `CHECK: ${chk.stdout} ${chk.stderr}`);
    // CHECK notices a pod whose address no longer fits the node's subnet.
    await Deno.writeTextFile(
      `${dir}/subnet.env`,
      SUBNET_ENV.replace("198.19.7.1/24", "198.19.9.1/24"),
    );
    const stale = await cni("CHECK", pods[0], `c0-${RUN}`, { ...conf, prevResult: results[0] });
    assert.equal(stale.code, 1);
    assert.match(JSON.parse(stale.stdout).msg, /this node's subnet is now/);
    await Deno.writeTextFile(`${dir}/subnet.env`, SUBNET_ENV);

    const veths = async () => (await ipj(host, "link", "show", "type", "veth")).length;
    assert.equal(await veths(), 2);
    const del = await cni("DEL", pods[0], `c0-${RUN}`, conf);
    assert.equal(del.code, 0, `DEL: ${del.stdout} ${del.stderr}`);
    assert.equal(await veths(), 1);
    assert.equal((await ipj(pods[0], "link", "show")).length, 1, "only lo left in the pod");
    await assert.rejects(Deno.stat(`${dir}/data/c0-${RUN}`), Deno.errors.NotFound);

    // DEL still works after weft is gone (subnet.env removed): it uses the saved config.
    await Deno.remove(`${dir}/subnet.env`);
    const del2 = await cni("DEL", pods[1], `c1-${RUN}`, conf);
    assert.equal(del2.code, 0, `DEL without subnet.env: ${del2.stdout} ${del2.stderr}`);
    assert.equal(await veths(), 0);
    // And the address went back to host-local's pool.
    const leased = [...Deno.readDirSync(`${dir}/ipam/weft-test`)].map((e) => e.name);
    assert.ok(!leased.includes(ips[1]), `address still leased: ${leased}`);

    // ADD now fails with the clear, retryable error.
    const add = await cni("ADD", pods[0], `c2-${RUN}`, conf);
    assert.equal(add.code, 1);
    const err = JSON.parse(add.stdout);
    assert.equal(err.code, 11);
    assert.equal(err.msg, `weft is not running or not ready on this node (no ${dir}/subnet.env)`);
  } finally {
    for (const ns of [...pods, host]) {
      await deleteNs(ns).catch(() => {});
    }
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("CNI DEL succeeds after an ADD whose delegate plugin was missing", async () => {
  const dir = await Deno.makeTempDir({ prefix: `weft-cni-${RUN}-` });
  try {
    await Deno.writeTextFile(`${dir}/subnet.env`, SUBNET_ENV);
    await Deno.mkdir(`${dir}/no-plugins`);
    const conf = JSON.stringify({
      cniVersion: "1.0.0",
      name: "weft-test",
      type: "weft",
      subnetFile: `${dir}/subnet.env`,
      dataDir: `${dir}/data`,
    });
    const env = {
      CNI_CONTAINERID: `gone-${RUN}`,
      CNI_NETNS: `/var/run/netns/none-${RUN}`,
      CNI_IFNAME: "eth0",
      CNI_PATH: `${dir}/no-plugins`,
    };
    const add = await runCni({ env: { ...env, CNI_COMMAND: "ADD" }, stdin: conf });
    assert.equal(add.code, 1);
    assert.match(JSON.parse(add.stdout).msg, /failed to find plugin "bridge"/);
    // Nothing was created, so nothing is left to delete: DEL succeeds with the same CNI_PATH
    // (the runtime retries DEL with it until it succeeds) and with the real plugins.
    const del = await runCni({ env: { ...env, CNI_COMMAND: "DEL" }, stdin: conf });
    assert.deepEqual(del, { code: 0, stdout: "" }, `DEL: ${del.stdout}`);
    const del2 = await runCni({ env: { ...env, CNI_COMMAND: "DEL", CNI_PATH }, stdin: conf });
    assert.deepEqual(del2, { code: 0, stdout: "" }, `DEL: ${del2.stdout}`);
    await assert.rejects(Deno.stat(`${dir}/data/gone-${RUN}`), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("CNI ADD without cniVersion is an invalid config", async () => {
  const dir = await Deno.makeTempDir({ prefix: `weft-cni-${RUN}-` });
  try {
    await Deno.writeTextFile(`${dir}/subnet.env`, SUBNET_ENV);
    const env = {
      CNI_COMMAND: "ADD",
      CNI_CONTAINERID: `nover-${RUN}`,
      CNI_NETNS: `/var/run/netns/none-${RUN}`,
      CNI_IFNAME: "eth0",
      CNI_PATH,
    };
    const conf = { name: "n", type: "weft", subnetFile: `${dir}/subnet.env`, dataDir: `${dir}/d` };
    for (const cniVersion of [undefined, ""]) {
      const r = await runCni({ env, stdin: JSON.stringify({ ...conf, cniVersion }) });
      assert.equal(r.code, 1, r.stdout);
      const err = JSON.parse(r.stdout);
      assert.equal(err.code, 7, r.stdout);
      assert.match(err.msg, /no "cniVersion"/);
    }
    await assert.rejects(Deno.stat(`${dir}/d/nover-${RUN}`), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
