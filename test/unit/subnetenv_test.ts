import assert from "node:assert/strict";
import { readSubnetHint, renderSubnetEnv, writeSubnetEnv } from "../../src/config/subnet_env.ts";
import { formatCidr, parseCidr } from "../../src/base/ipv4.ts";

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
