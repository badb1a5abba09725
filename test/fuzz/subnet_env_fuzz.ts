/**
 * Fuzz target: subnet.env (src/config/subnet_env.ts). A rendered file parses back to what was
 * rendered; any text parses or gives a SubnetEnvError naming the key; one value replaced by any
 * text is accepted only in the form flannel's CNI plugin reads (FLANNEL_MTU decimal digits, as
 * Go's strconv.ParseUint), else refused naming that key.
 */
import fc from "fast-check";
import { formatCidr, maskOf } from "../../src/base/ipv4.ts";
import {
  parseSubnetEnv,
  renderSubnetEnv,
  type SubnetEnv,
  SubnetEnvError,
} from "../../src/config/subnet_env.ts";
import { type FuzzTarget, valueOrTyped } from "./harness.ts";

const KEYS = ["FLANNEL_NETWORK", "FLANNEL_SUBNET", "FLANNEL_MTU", "FLANNEL_IPMASQ"] as const;

const net = (maxPrefix: number) =>
  fc.tuple(fc.nat(2 ** 32 - 1), fc.integer({ min: 0, max: maxPrefix })).map(([ip, prefix]) => ({
    ip: (ip & maskOf(prefix)) >>> 0,
    prefix,
  }));

/** A file weft writes: any network, a subnet of /0../30 (its gateway is its first address). */
export const subnetEnv: fc.Arbitrary<SubnetEnv> = fc.record({
  network: net(32),
  subnet: net(30),
  mtu: fc.integer({ min: 68, max: 65535 }),
  ipMasq: fc.boolean(),
});

/** Values parsers trip on: numbers in other notations, CIDR-ish text, blanks. */
const oddValue = fc.oneof(
  fc.string({ maxLength: 24 }).map((s) => s.replace(/\n/g, "")),
  fc.constantFrom(
    "",
    "0x5dc",
    "1e3",
    "+1500",
    "1500.0",
    " 1500",
    "1500 ",
    "-1",
    "65536",
    "Infinity",
    "198.18.0.0/15",
    "198.18.0.1/33",
    "198.18.0.1",
    "true",
    "True",
    "1",
  ),
  fc.integer().map(String),
);

export const subnetEnvTarget: FuzzTarget = {
  name: "subnet.env",
  properties: [
    {
      name: "parseSubnetEnv(renderSubnetEnv(e)) = e",
      property: () =>
        fc.property(subnetEnv, (e) => {
          const back = parseSubnetEnv(renderSubnetEnv(e), "subnet.env");
          if (
            formatCidr(back.network) !== formatCidr(e.network) ||
            formatCidr(back.subnet) !== formatCidr(e.subnet) || back.mtu !== e.mtu ||
            back.ipMasq !== e.ipMasq
          ) throw new Error(`${renderSubnetEnv(e)} parsed as ${JSON.stringify(back)}`);
        }),
    },
    {
      name: "any text: a subnet.env or a SubnetEnvError naming a key",
      property: () =>
        fc.property(
          fc.oneof(
            fc.string(),
            fc.array(
              fc.tuple(fc.oneof(fc.constantFrom(...KEYS), fc.string({ maxLength: 8 })), oddValue)
                .map(([k, v]) => `${k}=${v}`),
              { maxLength: 6 },
            ).map((ls) => ls.join("\n")),
          ),
          (text) => {
            const r = valueOrTyped(() => parseSubnetEnv(text, "f"), [SubnetEnvError], KEYS);
            if ("value" in r) {
              const e = r.value;
              if (!Number.isInteger(e.mtu) || e.mtu < 68 || e.mtu > 65535) {
                throw new Error(`MTU ${e.mtu} accepted from ${text}`);
              }
            }
          },
        ),
    },
    {
      name: "one value replaced: accepted only in flannel's form, else an error naming its key",
      property: () =>
        fc.property(subnetEnv, fc.constantFrom(...KEYS), oddValue, (e, k, v) => {
          const text = renderSubnetEnv(e).replace(new RegExp(`^${k}=.*$`, "m"), `${k}=${v}`);
          const r = valueOrTyped(() => parseSubnetEnv(text, "f"), [SubnetEnvError], [k]);
          if ("value" in r && k === "FLANNEL_MTU" && !/^\d+$/.test(v.trim())) {
            throw new Error(`FLANNEL_MTU=${v} accepted as ${r.value.mtu}`);
          }
        }),
    },
  ],
};
