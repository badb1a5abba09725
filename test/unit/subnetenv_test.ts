import assert from "node:assert/strict";
import {
  parseSubnetEnv,
  parseSubnetEnvText,
  readSubnetEnv,
  readSubnetHint,
  renderSubnetEnv,
  SubnetEnvError,
  writeSubnetEnv,
} from "../../src/config/subnet_env.ts";
import { formatCidr, parseCidr } from "../../src/base/ipv4.ts";
import { openRegistry } from "../../src/registry/open.ts";

Deno.test("subnet.env has flannel's exact format", () => {
  const text = renderSubnetEnv({
    network: parseCidr("198.19.0.0/16"),
    subnet: parseCidr("198.19.42.0/24"),
    mtu: 1450,
    ipMasq: true,
  });
  assert.equal(
    text,
    "FLANNEL_NETWORK=198.19.0.0/16\nFLANNEL_SUBNET=198.19.42.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
  );
});

Deno.test("written atomically with mode 0644 and read back as a hint", async () => {
  const dir = await Deno.makeTempDir({ prefix: "weft-senv-" });
  try {
    const path = `${dir}/sub/subnet.env`;
    const old = Deno.umask(0o077);
    try {
      await writeSubnetEnv(path, {
        network: parseCidr("198.19.0.0/16"),
        subnet: parseCidr("198.19.7.0/24"),
        mtu: 1500,
        ipMasq: false,
      });
    } finally {
      Deno.umask(old);
    }
    assert.equal((await Deno.stat(path)).mode! & 0o777, 0o644);
    assert.deepEqual([...Deno.readDirSync(`${dir}/sub`)].map((e) => e.name), ["subnet.env"]);
    const hint = await readSubnetHint(path);
    assert.equal(hint && formatCidr(hint), "198.19.7.0/24");
    assert.equal(await readSubnetHint(`${dir}/missing.env`), null);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("subnet.env: one parser reads back what the agent writes; problems say which", async () => {
  const env = {
    network: parseCidr("198.19.0.0/16"),
    subnet: parseCidr("198.19.42.0/24"),
    mtu: 1450,
    ipMasq: true,
  };
  assert.deepEqual(parseSubnetEnv(renderSubnetEnv(env), "s"), env);
  // flannel's CNI reading: trimmed KEY=VALUE lines, comments and unknown keys tolerated.
  assert.deepEqual(
    parseSubnetEnvText("# weft\n FLANNEL_MTU = 1400 \nFLANNEL_IPV6_SUBNET=2001:db8::/64\n"),
    { FLANNEL_MTU: "1400", FLANNEL_IPV6_SUBNET: "2001:db8::/64" },
  );
  const problem = (f: () => unknown) => {
    try {
      f();
    } catch (e) {
      assert.ok(e instanceof SubnetEnvError, String(e));
      return [e.problem, e.summary];
    }
    assert.fail("no error");
  };
  assert.deepEqual(problem(() => parseSubnetEnv("FLANNEL_NETWORK=198.19.0.0/16\n", "/p")), [
    "incomplete",
    "/p is missing FLANNEL_SUBNET, FLANNEL_MTU, FLANNEL_IPMASQ",
  ]);
  const text = renderSubnetEnv(env);
  assert.deepEqual(
    problem(() => parseSubnetEnv(text.replace("MTU=1450", "MTU=40"), "/p")),
    ["invalid", "/p: FLANNEL_MTU=40 is invalid (68..65535)"],
  );
  assert.equal(
    problem(() => parseSubnetEnv(text.replace("198.19.42.1/24", "x"), "/p"))[0],
    "invalid",
  );
  const dir = await Deno.makeTempDir({ prefix: "weft-senv-" });
  try {
    const err = await readSubnetEnv(`${dir}/none.env`).catch((e) => e);
    assert.ok(err instanceof SubnetEnvError);
    assert.equal(err.problem, "absent");
    assert.match(err.message, /weft is not running or not ready on this node/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("subnet.env: FLANNEL_MTU in decimal digits only, as flannel's CNI reads it (fuzz)", () => {
  const text = renderSubnetEnv({
    network: parseCidr("198.19.0.0/16"),
    subnet: parseCidr("198.19.42.0/24"),
    mtu: 1450,
    ipMasq: true,
  });
  for (const v of ["1e3", "0x5dc", "+1500", "1500.0", "0b10111011100"]) {
    assert.throws(
      () => parseSubnetEnv(text.replace("MTU=1450", `MTU=${v}`), "/p"),
      (e) =>
        e instanceof SubnetEnvError && e.summary === `/p: FLANNEL_MTU=${v} is invalid (68..65535)`,
    );
  }
  assert.equal(parseSubnetEnv(text.replace("MTU=1450", "MTU= 1400 "), "/p").mtu, 1400);
});

Deno.test("subnet.env: a directory that cannot be made is named, with what to do", async () => {
  const dir = await Deno.makeTempDir({ prefix: "weft-senv-" });
  try {
    await Deno.writeTextFile(`${dir}/file`, "not a directory");
    const env = {
      network: parseCidr("198.19.0.0/16"),
      subnet: parseCidr("198.19.4.0/24"),
      mtu: 1450,
      ipMasq: false,
    };
    await assert.rejects(
      writeSubnetEnv(`${dir}/file/run/subnet.env`, env),
      (e: Error) => {
        assert.match(e.message, new RegExp(`cannot create the directory ${dir}/file/run`));
        assert.match(e.message, /--subnet-file/);
        return true;
      },
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("directories weft creates are 0755 even under umask 000", async () => {
  const dir = await Deno.makeTempDir({ prefix: "weft-senv-" });
  const old = Deno.umask(0);
  try {
    await writeSubnetEnv(`${dir}/a/b/subnet.env`, {
      network: parseCidr("198.19.0.0/16"),
      subnet: parseCidr("198.19.4.0/24"),
      mtu: 1450,
      ipMasq: false,
    });
    const r = await openRegistry({ kind: "kv", prefix: "/weft-test", kvPath: `${dir}/k/v/r.kv` });
    await r.close();
    for (const d of ["a", "a/b", "k", "k/v"]) {
      const mode = (await Deno.stat(`${dir}/${d}`)).mode! & 0o777;
      assert.equal(mode.toString(8), "755", `${d} has mode ${mode.toString(8)}`);
    }
  } finally {
    Deno.umask(old);
    await Deno.remove(dir, { recursive: true });
  }
});
