/** The command line as an operator uses it: real processes, a real KV file. */
import assert from "node:assert/strict";
import { weft } from "../kit/agent.ts";
import { flannelHostGwLease, flannelVxlanLease } from "../kit/fixtures/flannel_leases.ts";
import { openKvRegistry } from "../../src/registry/kv/mod.ts";

async function withDir(fn: (dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "weft-cli-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("version and help", async () => {
  const v = await weft(["version"]);
  assert.equal(v.code, 0);
  assert.match(v.stdout, /^weft \d+\.\d+\.\d+/);
  const h = await weft(["run", "--help"]);
  assert.equal(h.code, 0);
  for (
    const f of ["--etcd-endpoints", "--iface-can-reach", "--subnet-lease-renew-margin", "--kv-path"]
  ) {
    assert.ok(h.stdout.includes(f), `help lacks ${f}`);
  }
});

Deno.test("usage errors: one line naming the flag, exit 2", async () => {
  const cases: [string[], RegExp][] = [
    [["--bogus"], /unknown flag --bogus/],
    [["run", "--healthz-port", "x"], /--healthz-port expects a whole number, got "x"/],
    [["run", "--registry=zk"], /--registry must be one of kv, etcd/],
    [["frobnicate"], /unknown command "frobnicate"/],
    [["config", "set"], /config set needs a FILE/],
    [
      ["run", "--registry=etcd", "--etcd-endpoints=nota-url"],
      /--etcd-endpoints: "nota-url" is not a URL/,
    ],
  ];
  for (const [args, re] of cases) {
    const r = await weft(args);
    assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, re);
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
  }
  const env = await weft(["run"], { env: { WEFT_SUBNET_LEASE_TTL: "soon" } });
  assert.equal(env.code, 2);
  assert.match(env.stderr, /WEFT_SUBNET_LEASE_TTL expects a whole number/);
});

Deno.test("config set validates, get prints; a bad config names the field, exit 1", async () => {
  await withDir(async (dir) => {
    const kv = ["--kv-path", `${dir}/r.kv`];
    const empty = await weft(["config", "get", ...kv]);
    assert.equal(empty.code, 1);
    assert.match(empty.stderr, /no network config/);
    await Deno.writeTextFile(`${dir}/bad.json`, `{"Network":"198.19.0.0/16","SubnetLen":40}`);
    const bad = await weft(["config", "set", `${dir}/bad.json`, ...kv]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /bad\.json: SubnetLen 40 does not fit Network 198\.19\.0\.0\/16/);
    const cfg = `{"Network":"198.19.0.0/16","Backend":{"Type":"vxlan"}}`;
    const set = await weft(["config", "set", "-", ...kv], { stdin: cfg });
    assert.equal(set.code, 0, set.stderr);
    const got = await weft(["config", "get", ...kv]);
    assert.equal(got.stdout.trim(), cfg);
  });
});

Deno.test("config set refuses what flanneld or the kernel would refuse, before writing", async () => {
  await withDir(async (dir) => {
    const kv = ["--kv-path", `${dir}/r.kv`];
    const cases: [string, RegExp][] = [
      [`{"Network":"198.19.0.0/16","Backend":{"Type":"bogus"}}`, /Backend\.Type "bogus"/],
      [`{"Network":"198.19.0.0/16","Backend":{"Type":"vxlan","VNI":16777216}}`, /Backend\.VNI/],
      [`{"Network":"198.19.0.0/16","Backend":{"Type":"vxlan","MTU":10}}`, /Backend\.MTU 10/],
      [`{"Network":"198.19.0.0/16","Backend":{"Type":"vxlan","Port":70000}}`, /Backend\.Port/],
      [
        `{"Network":"198.19.0.0/16","Backend":{"Type":"vxlan","DirectRouting":"yes"}}`,
        /Backend\.DirectRouting "yes"/,
      ],
      [`{"Network":"0.0.0.0/0"}`, /Network 0\.0\.0\.0\/0/],
      [
        `{"Network":"198.19.0.0/16","Pad":"${"x".repeat(70_000)}"}`,
        /config too large \(70036 bytes; at most 65520\)/,
      ],
    ];
    for (const [cfg, re] of cases) {
      const r = await weft(["config", "set", "-", ...kv], { stdin: cfg });
      assert.equal(r.code, 1, `${cfg.slice(0, 80)}: ${r.stderr}`);
      assert.match(r.stderr, re);
      assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
    }
    const got = await weft(["config", "get", ...kv]);
    assert.match(got.stderr, /no network config/);
  });
});

Deno.test("agent start with a config different from the registry's names both, exit 1", async () => {
  await withDir(async (dir) => {
    const kv = ["--kv-path", `${dir}/r.kv`];
    await weft(["config", "set", "-", ...kv], { stdin: `{"Network":"198.19.0.0/16"}` });
    await Deno.writeTextFile(`${dir}/net.json`, `{"Network":"198.18.128.0/17"}`);
    const r = await weft([
      "run",
      ...kv,
      "--net-config-path",
      `${dir}/net.json`,
      "--iface",
      "lo",
      "--subnet-file",
      `${dir}/s.env`,
      "--iptables-forward-rules=false",
    ]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /different network config/);
    assert.match(r.stderr, /198\.19\.0\.0\/16/);
    assert.match(r.stderr, /198\.18\.128\.0\/17/);
  });
});

Deno.test("agent start with an IPv6Network over the host's IPv6 underlay address: refused, nothing written", async () => {
  await withDir(async (dir) => {
    const kv = ["--kv-path", `${dir}/r.kv`];
    for (const v4 of [false, true]) {
      const config = {
        ...(v4 ? { Network: "198.19.0.0/16" } : { EnableIPv4: false }),
        EnableIPv6: true,
        IPv6Network: "2001:db8:ffff::/48",
        Backend: { Type: "host-gw" },
      };
      await Deno.writeTextFile(`${dir}/net.json`, JSON.stringify(config));
      const r = await weft([
        "run",
        ...kv,
        "--net-config-path",
        `${dir}/net.json`,
        "--iface",
        "lo",
        ...(v4 ? ["--public-ip", "198.18.0.11"] : []),
        "--public-ipv6",
        "2001:db8:ffff::b",
        "--subnet-file",
        `${dir}/s.env`,
        "--iptables-forward-rules=false",
      ]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(
        r.stderr,
        /the cluster IPv6Network 2001:db8:ffff::\/48 contains this host's underlay address 2001:db8:ffff::b \(the public IPv6 address \(--public-ipv6\)\)/,
      );
      assert.ok(!(await Deno.stat(`${dir}/s.env`).catch(() => null)), "subnet.env written");
      const leases = await weft(["leases", ...kv, "--json"]);
      assert.deepEqual(JSON.parse(leases.stdout), [], `a lease was written: ${leases.stdout}`);
      await Deno.remove(`${dir}/r.kv`).catch(() => {});
    }
  });
});

Deno.test("leases lists flanneld-written leases, skips garbage, and --json", async () => {
  await withDir(async (dir) => {
    const r = await openKvRegistry({ path: `${dir}/r.kv` });
    try {
      await r.createLease("198.19.3.0-24", flannelVxlanLease, 3600);
      await r.createLease("198.19.4.0-24", flannelHostGwLease, null);
      await r.createLease("198.19.5.0-24", "{broken", 3600);
    } finally {
      await r.close();
    }
    const t = await weft(["leases", "--kv-path", `${dir}/r.kv`]);
    assert.equal(t.code, 0, t.stderr);
    const lines = t.stdout.trim().split("\n");
    assert.match(lines[0], /SUBNET\s+PUBLIC IP\s+BACKEND\s+VTEP MAC\s+EXPIRES IN/);
    assert.equal(lines.length, 3);
    assert.match(
      lines[1],
      /198\.19\.3\.0\/24\s+198\.18\.0\.3\s+vxlan\s+c6:d2:32:6f:8f:44\s+(59m|1h)/,
    );
    assert.match(lines[2], /198\.19\.4\.0\/24\s+198\.18\.0\.4\s+host-gw\s+-\s+never \(reserved\)/);
    assert.match(t.stderr, /malformed lease 198\.19\.5\.0-24/);
    const j = await weft(["leases", "--json", "--kv-path", `${dir}/r.kv`]);
    const rows = JSON.parse(j.stdout);
    assert.deepEqual(rows.map((x: { subnet: string }) => x.subnet), [
      "198.19.3.0/24",
      "198.19.4.0/24",
    ]);
    assert.equal(rows[1].expiresAt, null);
  });
});

Deno.test("leases: fields of the wrong type never crash the table or --json", async () => {
  await withDir(async (dir) => {
    const huge = "x".repeat(20_000); // a KV value holds at most 64 KiB
    const values: Record<string, string> = {
      "198.19.1.0-24": `{"PublicIP":"198.18.0.1","BackendType":"vxlan","BackendData":` +
        `{"VNI":1,"VtepMAC":12345}}`,
      "198.19.2.0-24": `{"PublicIP":"198.18.0.2","PublicIPv6":42,"BackendType":"vxlan",` +
        `"BackendData":{"VtepMAC":{"evil":[1,2]}}}`,
      "198.19.3.0-24": `{"PublicIP":"198.18.0.3","BackendType":"host-gw","BackendData":[1,2]}`,
      "198.19.4.0-24": `{"PublicIP":"198.18.0.4","BackendType":"host-gw","BackendData":"str"}`,
      "198.19.5.0-24": `{"PublicIP":"198.18.0.5","BackendType":null,"BackendData":null,` +
        `"PublicIPv6":{"a":1}}`,
      "198.19.6.0-24": `{"PublicIP":"198.18.0.6","BackendType":"${huge}",` +
        `"BackendData":{"VtepMAC":"\\u001b[31m${huge}"}}`,
      "198.19.7.0-24": `{"PublicIP":"198.18.0.7","BackendType":"vxlan","BackendData":` +
        `{"VtepMAC":null}}`,
      // Not decodable at all: skipped with a bounded warning.
      "198.19.8.0-24": `{"PublicIP":12,"BackendType":"vxlan"}`,
      "198.19.9.0-24": `{"PublicIP":"198.18.0.9","BackendType":{"x":1}}`,
      "198.19.10.0-24": `{"PublicIP":"${huge}"}`,
      "198.19.11.0-24": `[1,2,3]`,
      "198.19.12.0-24": `null`,
      "198.19.13.0-24": `"198.18.0.13"`,
    };
    const r = await openKvRegistry({ path: `${dir}/r.kv` });
    try {
      for (const [k, v] of Object.entries(values)) await r.createLease(k, v, 3600);
    } finally {
      await r.close();
    }
    const t = await weft(["leases", "--kv-path", `${dir}/r.kv`]);
    assert.equal(t.code, 0, t.stderr.slice(0, 2000));
    const lines = t.stdout.trim().split("\n");
    assert.equal(lines.length, 1 + 7, t.stdout.slice(0, 2000));
    assert.match(lines[1], /^198\.19\.1\.0\/24\s+198\.18\.0\.1\s+vxlan\s+12345\s/);
    assert.match(lines[5], /^198\.19\.5\.0\/24\s+198\.18\.0\.5\s+udp\s+-\s/);
    for (const l of lines) assert.ok(l.length < 400, `a line of ${l.length} characters`);
    assert.ok(!t.stdout.includes("\x1b"), "a control character from the registry was printed");
    for (const k of ["8", "9", "10", "11", "12", "13"]) {
      assert.match(t.stderr, new RegExp(`malformed lease 198\\.19\\.${k}\\.0-24`));
    }
    assert.ok(t.stderr.length < 8000, `stderr of ${t.stderr.length} characters`);

    const j = await weft(["leases", "--json", "--kv-path", `${dir}/r.kv`]);
    assert.equal(j.code, 0, j.stderr.slice(0, 2000));
    const rows = JSON.parse(j.stdout);
    assert.equal(rows.length, 7);
    for (const row of rows) {
      for (const f of ["subnet", "publicIP", "backend", "vtepMAC", "expiresIn"]) {
        assert.equal(typeof row[f], "string", `${f} of ${row.subnet}: ${typeof row[f]}`);
      }
    }
    assert.equal(rows[0].vtepMAC, "12345");
    assert.equal(rows[6].vtepMAC, "");
  });
});

Deno.test("usage errors found before anything starts: forms, bounds, unknown flags, exit 2", async () => {
  await withDir(async (dir) => {
    // Should a check regress, the agent started here must change nothing on this host.
    const kv = [
      "--kv-path",
      `${dir}/r.kv`,
      "--subnet-file",
      `${dir}/s.env`,
      "--iptables-forward-rules=false",
    ];
    await weft(["config", "set", "-", "--kv-path", `${dir}/r.kv`], {
      stdin: `{"Network":"198.19.0.0/16","Backend":{"Type":"alloc"}}`,
    });
    const cases: [string[], RegExp][] = [
      [["run", ...kv, "--public-ip", "bogus"], /--public-ip expects an IPv4 address .*got "bogus"/],
      [["run", ...kv, "--public-ip=198.18.0.300"], /--public-ip expects an IPv4 address/],
      [["run", ...kv, "--iface-can-reach=nowhere"], /--iface-can-reach expects an IPv4 address/],
      [
        ["run", "--registry=etcd", "--etcd-endpoints=http://198.18.0.1:notaport"],
        /--etcd-endpoints: "http:\/\/198\.18\.0\.1:notaport" is not a URL/,
      ],
      [
        ["leases", "--etcd-endpoints=http://198.18.0.1:99999"],
        /--etcd-endpoints: "http:\/\/198\.18\.0\.1:99999" is not a URL/,
      ],
      [
        ["run", ...kv, "--subnet-lease-ttl=9000000001"],
        /--subnet-lease-ttl must be between 2 and 9000000000 .*etcd.*, got 9000000001/,
      ],
      [["version", "--frob"], /unknown flag --frob/],
      [["--version", "--frob"], /unknown flag --frob/],
      [["help", "--frob"], /unknown flag --frob/],
      [["version", "extra"], /unexpected argument "extra"/],
    ];
    const wrong: string[] = [];
    for (const [args, re] of cases) {
      const r = await weft(args, { timeoutMs: 15_000 });
      if (r.code !== 2 || !re.test(r.stderr) || r.stderr.trim().split("\n").length !== 1) {
        wrong.push(`weft ${args.join(" ")}: exit ${r.code}: ${r.stderr.trim()}`);
      }
    }
    assert.deepEqual(wrong, []);
  });
});
