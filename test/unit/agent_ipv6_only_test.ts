/**
 * The agent in-process on an IPv6-only network (`"EnableIPv4": false`) with the alloc backend:
 * its lease as flanneld writes one (`0.0.0.0-0&…`, `"PublicIP":"0.0.0.0"`), subnet.env without
 * the IPv4 lines, peers told apart by PublicIPv6 and fitted to IPv6Network, /status showing the
 * IPv6 half, and a restart taking the same lease back.
 */
import assert from "node:assert/strict";
import { Agent } from "../../src/agent/agent.ts";
import type { AllocBackend } from "../../src/backend/alloc/backend.ts";
import { encodeLeaseValue } from "../../src/lease/codec.ts";
import { metrics } from "../../src/base/metrics.ts";
import { waitFor } from "../kit/proc.ts";
import { waitAgentReady, withInProcessAgent } from "../kit/inproc_agent.ts";

const NET = `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"2001:db8:1::/56",` +
  `"Backend":{"Type":"alloc"}}`;
const ME = "2001:db8:ffff::3";
const v6 = (ip6: string) =>
  encodeLeaseValue({ publicIP: "0.0.0.0", publicIPv6: ip6, backendType: "alloc" });
const WAIT = { timeoutMs: 15_000, intervalMs: 50, stopOnError: true };

Deno.test({
  name: "agent on an IPv6-only network: flanneld's lease and subnet.env, peers by PublicIPv6",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: () =>
    withInProcessAgent({
      netConfig: NET,
      // No IPv4 address is needed: lo with the IPv6 address to publish.
      agent: { iface: { iface: ["lo"], publicIPv6: ME } },
    }, async ({ agent, registry, ctl, dir }) => {
      const running = agent.run(ctl.signal);
      await waitAgentReady(agent);
      const own = agent.lease!;
      assert.match(own.key, /^0\.0\.0\.0-0&2001:db8:1:[0-9a-f]+::-64$/);
      const s6 = own.key.slice("0.0.0.0-0&".length).replace("-", "/");
      const stored = (await registry.listLeases()).leases.find((l) => l.key === own.key)!;
      assert.equal(
        stored.value,
        `{"PublicIP":"0.0.0.0","PublicIPv6":"${ME}","BackendType":"alloc"}`,
      );
      assert.equal(
        await Deno.readTextFile(`${dir}/subnet.env`),
        `FLANNEL_IPV6_NETWORK=2001:db8:1::/56\nFLANNEL_IPV6_SUBNET=${
          s6.replace("/", "1/")
        }\nFLANNEL_MTU=65536\nFLANNEL_IPMASQ=false\n`,
      );
      const st = agent.status();
      assert.deepEqual([st.lease?.subnet, st.lease?.publicIP], [s6, ME]);

      // Every IPv6-only lease says PublicIP 0.0.0.0: only PublicIPv6 names this node. Our own
      // address under another key, an IPv4 lease and an IPv6 subnet outside the network are
      // not peers; another node's IPv6-only lease is.
      await registry.createLease("0.0.0.0-0&2001:db8:1:f0::-64", v6(ME), 60);
      await registry.createLease("198.19.7.0-24", v6("2001:db8:ffff::7"), 60);
      await registry.createLease("0.0.0.0-0&2001:db8:2::-64", v6("2001:db8:ffff::8"), 60);
      await registry.createLease("0.0.0.0-0&2001:db8:1:f1::-64", v6("2001:db8:ffff::5"), 60);
      const backend = agent.backend as AllocBackend;
      await waitFor("the IPv6-only peer delivered", () => backend.peers.size > 0, WAIT);
      assert.deepEqual([...backend.peers.keys()], ["0.0.0.0-0&2001:db8:1:f1::-64"]);
      // Peers per family: an IPv6-only peer has no IPv4 half.
      const fam = metrics.gauge("weft_peers_family", "");
      assert.deepEqual([fam.get({ family: "ipv4" }), fam.get({ family: "ipv6" })], [0, 1]);
      const peers = agent.status().peers.map((p) => [p.subnet, p.publicIP]);
      assert.deepEqual(peers, [["2001:db8:1:f1::/64", "2001:db8:ffff::5"]]);
      ctl.abort();
      await running;

      // Restarted: the same lease again (by PublicIPv6 and the subnet.env IPv6 subnet).
      const again = new Agent(registry, { ...agent.opts });
      const ctl2 = new AbortController();
      const running2 = again.run(ctl2.signal);
      try {
        await waitAgentReady(again);
        assert.equal(again.lease!.key, own.key);
      } finally {
        ctl2.abort();
        await running2;
      }
    }),
});
