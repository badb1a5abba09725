/**
 * The vxlan backend turns TX checksum offload off on its VTEP when the public IP is behind NAT
 * (or when Backend.TxChecksumOffload is false), and leaves it on otherwise.
 */
import assert from "node:assert/strict";
import { newRunId } from "../kit/names.ts";
import { createNs, deleteNs, denoInNs } from "../kit/netns.ts";
import { runOk as run } from "../kit/proc.ts";

const root = new URL("../../", import.meta.url).pathname;
const script = `
import { VxlanBackend } from "${root}src/backend/vxlan/backend.ts";
import { parseNetworkConfig } from "${root}src/config/network.ts";
import { txChecksum } from "${root}ffi/libc/ethtool.ts";
import { netlink } from "${root}ffi/libnl/mod.ts";
const nl = netlink();
const [backend, publicIP] = Deno.args;
const cfg = parseNetworkConfig(JSON.stringify({ Network: "198.19.0.0/16", Backend: JSON.parse(backend) }));
const eth = nl.linkByName("ua0");
const b = new VxlanBackend();
await b.prepare({ config: cfg, previous: null,
  ext: { name: "ua0", index: eth.index, ifaceAddr: "198.18.0.5", publicIP, mtu: 1500 } });
const dev = "flannel." + (cfg.backend.VNI ?? 1);
console.log(JSON.stringify({ tx: txChecksum(dev) }));
nl.linkDel(nl.linkByName(dev).index);
`;

Deno.test("vxlan TX checksum offload: off behind NAT or when configured, on otherwise", async () => {
  const ns = `wtx-${newRunId()}`;
  const dir = await Deno.makeTempDir({ prefix: "weft-tx-" });
  try {
    await Deno.writeTextFile(`${dir}/probe.ts`, script);
    await createNs(ns, { bare: true });
    await run(["ip", "-n", ns, "link", "add", "ua0", "type", "veth", "peer", "name", "ua1"]);
    await run(["ip", "-n", ns, "addr", "add", "198.18.0.5/24", "dev", "ua0"]);
    await run(["ip", "-n", ns, "link", "set", "ua0", "up"]);
    const probe = async (backend: object, publicIP: string) =>
      JSON.parse(
        await run(denoInNs(ns, [
          "--config",
          `${root}deno.json`,
          `${dir}/probe.ts`,
          JSON.stringify(backend),
          publicIP,
        ])),
      ).tx;
    assert.equal(await probe({ Type: "vxlan" }, "198.18.0.5"), true, "direct: keep offload");
    assert.equal(await probe({ Type: "vxlan" }, "198.18.200.1"), false, "NAT: offload off");
    assert.equal(await probe({ Type: "vxlan", TxChecksumOffload: false }, "198.18.0.5"), false);
    assert.equal(await probe({ Type: "vxlan", TxChecksumOffload: true }, "198.18.200.1"), true);
  } finally {
    await deleteNs(ns).catch(() => {});
    await Deno.remove(dir, { recursive: true });
  }
});
