/**
 * weft's CNI mode end to end: 3 hosts (vxlan, Deno KV), every pod wired by `weft` invoked the
 * way a container runtime invokes a plugin (CNI_COMMAND=ADD, flannel-style config on stdin,
 * delegating to the reference bridge and host-local plugins). Before the agent is ready ADD fails
 * with weft's "not running or not ready" CNI error; afterwards pods on all hosts reach each other,
 * and DEL removes the pod's veth and releases its address.
 *
 * @example
 * ```sh
 * deno test -A test/e2e_cni_test.ts
 * ```
 */
import assert from "node:assert/strict";
import { withCluster } from "../kit/cluster.ts";
import { createNs } from "../kit/netns.ts";
import { CNI_NETWORK_NAME, cniExec, type CniTarget, inSubnet } from "../kit/pods.ts";
import { run } from "../kit/proc.ts";

Deno.test({
  name: "cni: pods wired by weft's CNI mode reach each other across 3 hosts; DEL undoes ADD",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await withCluster({ hosts: 3, registry: "kv", podWiring: "cni" }, async (c) => {
      const [h1, h2] = c.hosts;

      // 1. ADD before any agent ran: weft's error, as the runtime would log it.
      const early: CniTarget = {
        hostNs: h1.netns,
        podNs: c.names.podNs("h1", "early"),
        containerId: "early",
        subnetFile: h1.subnetFile,
        cniDir: `${h1.dir}/cni`,
      };
      await createNs(early.podNs);
      const t0 = performance.now();
      const refused = await cniExec("ADD", early);
      const addMs = Math.round(performance.now() - t0);
      assert.notEqual(refused.code, 0, refused.stdout);
      const err = refused.json as { code: number; msg: string };
      assert.equal(err?.code, 11, `want CNI "try again later": ${refused.stdout}`);
      assert.match(err.msg, /weft is not running or not ready on this node/);

      // 2. Agents up, two pods per host wired through CNI.
      await c.startAll({ backend: "vxlan", extraArgs: ["--iptables-forward-rules=false"] });
      const t1 = performance.now();
      for (const h of c.hosts) for (let i = 0; i < 2; i++) await c.addPod(h);
      const wireMs = Math.round((performance.now() - t1) / c.pods().length);
      for (const h of c.hosts) {
        const env = (await c.readSubnetEnv(h))!;
        for (const p of h.pods) {
          assert.ok(inSubnet(env.subnet, p.ip), `${p.name} got ${p.ip}, outside ${env.subnetText}`);
          assert.equal(p.gateway, env.gateway);
          // The pod really has that address on eth0, with FLANNEL_MTU.
          const link = JSON.parse(await c.exec(p, ["ip", "-j", "-4", "addr", "show", "eth0"]))[0];
          assert.equal(link.addr_info[0].local, p.ip);
          assert.equal(link.mtu, env.mtu);
        }
      }
      // Ready means each agent's own lease is applied; peers started later arrive by the watch.
      await c.waitPeersProgrammed();
      const m = await c.pingMatrix({ count: 1, timeoutS: 2 });
      assert.ok(m.ok, `ping matrix failed: ${JSON.stringify(m.failed)}`);

      // 3. DEL (through removePod, as a runtime deletes a sandbox): veth and address are gone.
      const [p1] = h1.pods;
      const ipamFile = `${h1.dir}/cni/ipam/${CNI_NETWORK_NAME}/${p1.ip}`;
      assert.ok(await exists(ipamFile), `host-local has no lease file ${ipamFile}`);
      assert.ok(await hasLink(h1.netns, p1.hostVeth), `${p1.hostVeth} missing before DEL`);
      await c.removePod(p1);
      assert.equal(await hasLink(h1.netns, p1.hostVeth), false, "host veth left after DEL");
      assert.equal(await exists(ipamFile), false, `address ${p1.ip} not released`);
      assert.equal(await exists(`${h1.dir}/cni/weft/${p1.netns}`), false, "saved delegate left");
      // DEL again is fine (the runtime may retry), and the remaining pods still talk.
      const again = await cniExec("DEL", {
        hostNs: h1.netns,
        podNs: p1.netns,
        containerId: p1.netns,
        subnetFile: h1.subnetFile,
        cniDir: `${h1.dir}/cni`,
      });
      assert.equal(again.code, 0, again.stdout + again.stderr);
      const r = await c.ping(h1.pods[0], h2.pods[0], { count: 2, timeoutS: 2 });
      assert.equal(r.received, 2);
      console.log(`CNI ADD refused in ${addMs} ms; ADD per pod ${wireMs} ms (6 pods)`);
    });
  },
});

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

async function hasLink(ns: string, name: string): Promise<boolean> {
  return (await run(["ip", "-n", ns, "link", "show", "dev", name])).code === 0;
}
