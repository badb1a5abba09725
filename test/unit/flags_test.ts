import assert from "node:assert/strict";
import { parseFlags, UsageError } from "../../src/cli/flags.ts";
import { agentFlags } from "../../src/cli/agent_flags.ts";

Deno.test("flanneld's defaults", () => {
  const { values } = parseFlags([], agentFlags, {});
  assert.equal(values["etcd-endpoints"], "http://127.0.0.1:4001,http://127.0.0.1:2379");
  assert.equal(values["etcd-prefix"], "/coreos.com/network");
  assert.equal(values["subnet-file"], "/run/flannel/subnet.env");
  assert.equal(values["subnet-lease-renew-margin"], 60);
  assert.equal(values["iptables-resync"], 5);
  assert.equal(values["iptables-forward-rules"], true);
  assert.equal(values["ip-masq"], false);
  assert.equal(values["healthz-ip"], "0.0.0.0");
  assert.equal(values["healthz-port"], 0);
  assert.equal(values.registry, "kv");
  assert.equal(values["subnet-lease-ttl"], 86400);
});

Deno.test("flag forms: --a=b, --a b, -a, booleans with =false, repeatable lists", () => {
  const { values } = parseFlags(
    [
      "-iface",
      "eth0",
      "--iface=198.18.0.5",
      "--ip-masq",
      "--iptables-forward-rules=false",
      "--healthz-port",
      "8471",
    ],
    agentFlags,
    {},
  );
  assert.deepEqual(values.iface, ["eth0", "198.18.0.5"]);
  assert.equal(values["ip-masq"], true);
  assert.equal(values["iptables-forward-rules"], false);
  assert.equal(values["healthz-port"], 8471);
});

Deno.test("environment: FLANNELD_ first, then WEFT_; the command line wins", () => {
  const env = {
    FLANNELD_ETCD_PREFIX: "/a",
    WEFT_ETCD_PREFIX: "/b",
    WEFT_REGISTRY: "etcd",
    FLANNELD_IP_MASQ: "true",
  };
  const { values } = parseFlags(["--registry=kv"], agentFlags, env);
  assert.equal(values["etcd-prefix"], "/a");
  assert.equal(values.registry, "kv");
  assert.equal(values["ip-masq"], true);
});

Deno.test("bad flags name the flag and the expected form", () => {
  const bad: [string[], RegExp][] = [
    [["--nope"], /unknown flag --nope/],
    [["--healthz-port", "x"], /--healthz-port expects a whole number, got "x"/],
    [["--healthz-port=70000"], /between 0 and 65535/],
    [["--subnet-lease-renew-margin=0"], /between 1 and 1439/],
    [["--registry=mysql"], /--registry must be one of kv, etcd/],
    [["--ip-masq=maybe"], /expects true or false/],
    [["--iface"], /needs a value/],
  ];
  for (const [argv, re] of bad) assert.throws(() => parseFlags(argv, agentFlags, {}), re);
  assert.throws(
    () => parseFlags([], agentFlags, { WEFT_HEALTHZ_PORT: "abc" }),
    /WEFT_HEALTHZ_PORT/,
  );
  assert.throws(() => parseFlags(["--nope"], agentFlags, {}), UsageError);
});

Deno.test("flanneld command lines with only etcd flags select the etcd registry", async () => {
  const { checkRegistryFlags } = await import("../../src/cli/registry_flags.ts");
  const a = parseFlags(["--etcd-endpoints=http://127.0.0.1:2379"], agentFlags, {});
  checkRegistryFlags(a.values, a.given);
  assert.equal(a.values.registry, "etcd");
  const b = parseFlags([], agentFlags, { FLANNELD_ETCD_ENDPOINTS: "http://127.0.0.1:2379" });
  checkRegistryFlags(b.values, b.given);
  assert.equal(b.values.registry, "etcd");
  const c = parseFlags(["--kv-path=/tmp/x.kv"], agentFlags, {});
  checkRegistryFlags(c.values, c.given);
  assert.equal(c.values.registry, "kv");
  const d = parseFlags(["--registry=kv", "--etcd-endpoints=http://127.0.0.1:2379"], agentFlags, {});
  assert.throws(() => checkRegistryFlags(d.values, d.given), /--etcd-endpoints has no effect/);
  const e = parseFlags(["--etcd-cafile=/x", "--kv-path=/y"], agentFlags, {});
  assert.throws(() => checkRegistryFlags(e.values, e.given), /choose the registry/);
});

Deno.test("names of Object.prototype members are unknown flags, not Object's (fuzz)", () => {
  for (
    const a of ["--constructor=x", "--__proto__=x", "-hasOwnProperty", "--toString", "--valueOf"]
  ) {
    assert.throws(
      () => parseFlags([a], agentFlags, {}),
      (e) => e instanceof UsageError && e.message.startsWith(`unknown flag ${a.split("=")[0]};`),
    );
  }
});

Deno.test("an int beyond 2^53 is a usage error, not a rounded number (fuzz)", () => {
  assert.throws(
    () => parseFlags(["--v=99999999999999999999"], agentFlags, {}),
    (e) =>
      e instanceof UsageError && e.message.includes("--v") &&
      e.message.includes("99999999999999999999"),
  );
  assert.throws(
    () => parseFlags([], agentFlags, { WEFT_V: "99999999999999999999" }),
    (e) => e instanceof UsageError && e.message.includes("WEFT_V"),
  );
});

Deno.test("--subnet-lease-ttl is bounded by etcd's longest lease; addresses are checked", () => {
  const ttl = (v: string) => parseFlags([`--subnet-lease-ttl=${v}`], agentFlags, {}).values;
  assert.equal(ttl("9000000000")["subnet-lease-ttl"], 9_000_000_000);
  assert.equal(ttl(String(30 * 86_400))["subnet-lease-ttl"], 2_592_000);
  assert.throws(
    () => ttl("9000000001"),
    /--subnet-lease-ttl must be between 2 and 9000000000 \(etcd's longest lease TTL\), got/,
  );
  assert.throws(() => ttl("9000000001"), UsageError);
  assert.throws(
    () => parseFlags(["--public-ip=198.18.0"], agentFlags, {}),
    /--public-ip expects an IPv4 address/,
  );
  assert.throws(
    () => parseFlags([], agentFlags, { FLANNELD_PUBLIC_IP: "x" }),
    /FLANNELD_PUBLIC_IP expects an IPv4 address/,
  );
  assert.equal(parseFlags(["--public-ip="], agentFlags, {}).values["public-ip"], "");
});

Deno.test("--public-ipv6 takes an IPv6 address (no longer pending)", () => {
  assert.equal(
    parseFlags(["--public-ipv6=2001:db8::5"], agentFlags, {}).values["public-ipv6"],
    "2001:db8::5",
  );
  assert.throws(
    () => parseFlags(["--public-ipv6=198.18.0.5"], agentFlags, {}),
    (e: Error) =>
      e instanceof UsageError && /--public-ipv6 expects an IPv6 address/.test(e.message),
  );
  assert.equal(agentFlags["public-ipv6"].pending, undefined);
});
