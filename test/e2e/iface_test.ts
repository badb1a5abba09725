/**
 * External interface selection (--iface, --iface-regex, --iface-can-reach, default route,
 * --public-ip) inside a namespace with two interfaces.
 */
import assert from "node:assert/strict";
import { newRunId } from "../kit/names.ts";
import { createNs, deleteNs, denoInNs } from "../kit/netns.ts";
import { runOk as run } from "../kit/proc.ts";

const script = `
import { selectExternalInterface } from "${
  new URL("../../src/net/iface.ts", import.meta.url).pathname
}";
import { FatalError } from "${new URL("../../src/base/errors.ts", import.meta.url).pathname}";
const sel = JSON.parse(Deno.args[0]);
try {
  const e = await selectExternalInterface(sel);
  console.log(JSON.stringify(e));
} catch (err) {
  console.log(JSON.stringify({ error: err.message, fatal: err instanceof FatalError }));
}`;

type Ip = (...a: string[]) => Promise<string>;

/**
 * A bare namespace with two interfaces: ua0 198.18.0.5/24 and ub0 198.18.7.5/24, the default
 * route via ub0. `before` runs before they come up (an MTU, another address). `ipv4` false: no
 * IPv4 address or route at all (an IPv6-only host); `before` gives the addresses.
 */
async function twoInterfaces(
  ns: string,
  before: (ip: Ip) => Promise<unknown>,
  ipv4 = true,
) {
  await createNs(ns, { bare: true });
  const ip: Ip = (...a) => run(["ip", "-n", ns, ...a]);
  await ip("link", "set", "lo", "up");
  // veth pairs (no dummy module here); the peer ends only need to be up for carrier.
  await ip("link", "add", "ua0", "type", "veth", "peer", "name", "ua1");
  await ip("link", "add", "ub0", "type", "veth", "peer", "name", "ub1");
  await ip("link", "set", "ua1", "up");
  await ip("link", "set", "ub1", "up");
  if (ipv4) {
    await ip("addr", "add", "198.18.0.5/24", "dev", "ua0");
    await ip("addr", "add", "198.18.7.5/24", "dev", "ub0");
  }
  await before(ip);
  await ip("link", "set", "ua0", "up");
  await ip("link", "set", "ub0", "up");
  if (ipv4) await ip("route", "add", "default", "via", "198.18.7.1", "dev", "ub0");
}

/** Runs interface selection with `sel` inside `ns`, returning what it chose (or its error). */
function picker(ns: string, dir: string) {
  return async (sel: Record<string, unknown>) =>
    JSON.parse(await run(denoInNs(ns, [`${dir}/pick.ts`, JSON.stringify(sel)])));
}

Deno.test({
  name: "external interface selection in a namespace with two interfaces",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const id = newRunId();
    const ns = `wift-${id}`;
    const dir = await Deno.makeTempDir({ prefix: "weft-iface-" });
    await Deno.writeTextFile(`${dir}/pick.ts`, script);
    try {
      await twoInterfaces(ns, (ip) => ip("link", "set", "ub0", "mtu", "1400"));
      const pick = picker(ns, dir);
      const dflt = await pick({});
      assert.equal(dflt.name, "ub0");
      assert.equal(dflt.mtu, 1400);
      assert.equal((await pick({ iface: ["ua0"] })).ifaceAddr, "198.18.0.5");
      assert.equal((await pick({ iface: ["nope", "198.18.7.5"] })).name, "ub0");
      assert.equal((await pick({ ifaceRegex: ["^ua"] })).name, "ua0");
      assert.equal((await pick({ ifaceCanReach: "198.18.0.77" })).name, "ua0");
      assert.equal((await pick({ ifaceCanReach: "198.19.1.1" })).name, "ub0");
      const pub = await pick({ iface: ["ua0"], publicIP: "198.18.9.9" });
      assert.equal(pub.publicIP, "198.18.9.9");
      assert.equal(pub.ifaceAddr, "198.18.0.5");
      const none = await pick({ iface: ["eth9"] });
      assert.match(none.error, /no external interface found by --iface eth9 .*ua0 198\.18\.0\.5/);
      assert.equal(none.fatal, true, "an InterfaceError is a FatalError: the agent must not retry");
      assert.match((await pick({ ifaceRegex: ["("] })).error, /not a valid regular expression/);
    } finally {
      await deleteNs(ns).catch(() => {});
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "external interface selection: the IPv6 address (EnableIPv6), --public-ipv6, IPv6 in --iface/--iface-regex",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const id = newRunId();
    const ns = `wif6-${id}`;
    const dir = await Deno.makeTempDir({ prefix: "weft-iface6-" });
    await Deno.writeTextFile(`${dir}/pick.ts`, script);
    try {
      // ub0 gets only a link-local IPv6 address.
      await twoInterfaces(
        ns,
        (ip) => ip("addr", "add", "2001:db8:ffff::5/64", "dev", "ua0", "nodad"),
      );
      const pick = picker(ns, dir);
      const a = await pick({ iface: ["ua0"], ipv6: true });
      assert.equal(a.ifaceAddr6, "2001:db8:ffff::5");
      assert.equal(a.publicIPv6, "2001:db8:ffff::5");
      assert.equal((await pick({ iface: ["ua0"] })).publicIPv6, undefined, "IPv6 off: none");
      // By IPv6 address (any spelling) and by a regex over IPv6 addresses.
      assert.equal((await pick({ iface: ["2001:DB8:FFFF:0::5"], ipv6: true })).name, "ua0");
      assert.equal((await pick({ ifaceRegex: ["^2001:db8:ffff::"], ipv6: true })).name, "ua0");
      const pub = await pick({ iface: ["ua0"], ipv6: true, publicIPv6: "2001:db8:ffff:0::9" });
      assert.equal(pub.publicIPv6, "2001:db8:ffff::9");
      assert.equal(pub.ifaceAddr6, "2001:db8:ffff::5");
      // ub0 has a link-local address only: a clear error, unless --public-ipv6 names one.
      const none = await pick({ iface: ["ub0"], ipv6: true });
      assert.match(
        none.error,
        /EnableIPv6 is true but ub0 has no global IPv6 address.*--public-ipv6/,
      );
      assert.equal(none.fatal, true);
      const nat6 = await pick({ iface: ["ub0"], ipv6: true, publicIPv6: "2001:db8:ffff::7" });
      assert.equal(nat6.publicIPv6, "2001:db8:ffff::7");
      assert.equal(nat6.ifaceAddr6, undefined, "no interface address is made up");
      assert.match(
        (await pick({ iface: ["ua0"], ipv6: true, publicIPv6: "fe80::1" })).error,
        /--public-ipv6: fe80::1 is in fe80::\/10/,
      );
    } finally {
      await deleteNs(ns).catch(() => {});
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "external interface selection on an IPv6-only host (EnableIPv4 false): no IPv4 address needed",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const id = newRunId();
    const ns = `wio6-${id}`;
    const dir = await Deno.makeTempDir({ prefix: "weft-iface6only-" });
    await Deno.writeTextFile(`${dir}/pick.ts`, script);
    try {
      await twoInterfaces(ns, async (ip) => {
        await ip("addr", "add", "2001:db8:ffff::5/64", "dev", "ua0", "nodad");
        await ip("addr", "add", "2001:db8:fffe::5/64", "dev", "ub0", "nodad");
      }, false);
      await run(["ip", "-n", ns, "-6", "route", "add", "default", "via", "2001:db8:fffe::1"]);
      const pick = picker(ns, dir);
      // The IPv6 default route's interface; the IPv4 fields empty, PublicIP as flanneld writes it.
      const dflt = await pick({ ipv4: false });
      assert.deepEqual(
        [dflt.name, dflt.ifaceAddr, dflt.publicIP, dflt.ifaceAddr6, dflt.publicIPv6],
        ["ub0", "", "0.0.0.0", "2001:db8:fffe::5", "2001:db8:fffe::5"],
      );
      assert.equal((await pick({ ipv4: false, iface: ["ua0"] })).publicIPv6, "2001:db8:ffff::5");
      assert.equal((await pick({ ipv4: false, iface: ["2001:db8:ffff::5"] })).name, "ua0");
      assert.equal((await pick({ ipv4: false, ifaceRegex: ["^ua"] })).name, "ua0");
      assert.equal((await pick({ ipv4: false, ifaceRegex: ["^2001:db8:fffe:"] })).name, "ub0");
      assert.equal((await pick({ ipv4: false, ifaceCanReach: "2001:db8:ffff::77" })).name, "ua0");
      assert.equal((await pick({ ipv4: false, ifaceCanReach: "2001:db8:1::1" })).name, "ub0");
      const pub = await pick({ ipv4: false, iface: ["ua0"], publicIPv6: "2001:db8:ffff::9" });
      assert.deepEqual([pub.publicIPv6, pub.ifaceAddr6], ["2001:db8:ffff::9", "2001:db8:ffff::5"]);
      // --public-ip has nothing to name in an IPv6-only network: refused, naming the way out.
      assert.match(
        (await pick({ ipv4: false, iface: ["ua0"], publicIP: "198.18.9.9" })).error,
        /--public-ip 198\.18\.9\.9 is given but the network is IPv6-only.*--public-ipv6/,
      );
      const none = await pick({ ipv4: false, iface: ["eth9"] });
      assert.match(
        none.error,
        /--iface eth9 \(interfaces and their global IPv6 addresses here: .*ua0 2001:db8:ffff::5/,
      );
      assert.equal(none.fatal, true);
      // Without IPv6-only, the same host has no interface to offer: IPv4 is what is missing.
      assert.match((await pick({})).error, /IPv4 interfaces here: (lo 127\.0\.0\.1|none)/);
    } finally {
      await deleteNs(ns).catch(() => {});
      await Deno.remove(dir, { recursive: true });
    }
  },
});
