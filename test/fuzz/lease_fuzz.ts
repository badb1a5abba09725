/**
 * Fuzz target: lease keys and lease values (src/lease/codec.ts) and the registry-entry decoder
 * (src/lease/decode.ts). Keys and values written by the encoder decode to what was written; any
 * key or value text decodes or is refused with a LeaseFormatError naming the key or field, and
 * LeaseDecoder never throws at all (it skips and counts what it cannot read).
 */
import fc from "fast-check";
import { formatIp, maskOf } from "../../src/base/ipv4.ts";
import {
  decodeLeaseValue,
  encodeLeaseValue,
  type LeaseAttrs,
  LeaseFormatError,
  parseSubnetKey,
  subnetKey,
} from "../../src/lease/codec.ts";
import { LeaseDecoder } from "../../src/lease/decode.ts";
import { type FuzzTarget, hostileJson, valueOrTyped } from "./harness.ts";

const ipv4 = fc.nat(2 ** 32 - 1).map(formatIp);
const ipv6 = fc.ipV6();

/** Attributes the encoder writes (flannel's LeaseAttrs with JSON backend data). */
export const leaseAttrs: fc.Arbitrary<LeaseAttrs> = fc.record({
  publicIP: ipv4,
  publicIPv6: fc.option(ipv6, { nil: null }),
  backendType: fc.option(fc.constantFrom("vxlan", "host-gw", "udp", "ipip", "wireguard"), {
    nil: undefined,
  }),
  backendData: fc.option(
    fc.oneof(
      fc.record({
        VNI: fc.integer({ min: 1, max: 2 ** 24 - 1 }),
        VtepMAC: fc.array(fc.nat(255), { minLength: 6, maxLength: 6 })
          .map((b) => b.map((x) => x.toString(16).padStart(2, "0")).join(":")),
      }),
      fc.dictionary(fc.string(), fc.jsonValue({ maxDepth: 2 })),
    ),
    { nil: undefined },
  ),
  backendV6Data: fc.option(fc.dictionary(fc.string(), fc.jsonValue({ maxDepth: 2 })), {
    nil: undefined,
  }),
}, { requiredKeys: ["publicIP", "publicIPv6", "backendType", "backendData", "backendV6Data"] });

/** Lease-key-like text: dotted numbers (some out of range, some zero-padded), a length, a v6 part. */
const keyish = fc.oneof(
  fc.string(),
  fc.tuple(
    fc.array(fc.oneof(fc.nat(300).map(String), fc.constantFrom("00", "01", "007", "-1", "")), {
      minLength: 3,
      maxLength: 5,
    }),
    fc.oneof(fc.nat(40).map(String), fc.constantFrom("00", "08", "024", "-1", "")),
    fc.option(fc.string({ maxLength: 12 }), { nil: undefined }),
  ).map(([q, l, v6]) => `${q.join(".")}-${l}${v6 === undefined ? "" : "&" + v6}`),
);

function sameJson(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

export const leaseTarget: FuzzTarget = {
  name: "lease key and value",
  properties: [
    {
      name: "parseSubnetKey(subnetKey(net)) = net",
      property: () =>
        fc.property(fc.nat(2 ** 32 - 1), fc.integer({ min: 0, max: 32 }), (ip, prefix) => {
          const net = { ip: (ip & maskOf(prefix)) >>> 0, prefix };
          const back = parseSubnetKey(subnetKey(net));
          if (back.ip !== net.ip || back.prefix !== net.prefix) {
            throw new Error(`${subnetKey(net)} decoded to ${JSON.stringify(back)}`);
          }
        }),
    },
    {
      name: "any key: a subnet or a LeaseFormatError naming the key",
      property: () =>
        fc.property(keyish, (key) => {
          valueOrTyped(() => parseSubnetKey(key), [LeaseFormatError], [`"${key}"`]);
        }),
    },
    {
      name: "an accepted key is the canonical key of its subnet",
      property: () =>
        fc.property(keyish, (key) => {
          const r = valueOrTyped(() => parseSubnetKey(key), [LeaseFormatError]);
          if ("value" in r && subnetKey(r.value) !== key.split("&")[0]) {
            throw new Error(`key ${key} accepted as ${subnetKey(r.value)}`);
          }
        }),
    },
    {
      name: "decodeLeaseValue(encodeLeaseValue(attrs)) = attrs",
      property: () =>
        fc.property(leaseAttrs, (a) => {
          const text = encodeLeaseValue(a);
          const b = decodeLeaseValue(text);
          if (
            b.publicIP !== a.publicIP || b.publicIPv6 !== a.publicIPv6 ||
            b.backendType !== a.backendType || !sameJson(b.backendData, a.backendData) ||
            !sameJson(b.backendV6Data, a.backendV6Data)
          ) {
            throw new Error(`${text} decoded to ${JSON.stringify(b)}`);
          }
          // flanneld's field order: PublicIP, PublicIPv6, BackendType, BackendData, BackendV6Data.
          const order = Object.keys(JSON.parse(text));
          const want = ["PublicIP", "PublicIPv6", "BackendType", "BackendData", "BackendV6Data"]
            .filter((k) => order.includes(k));
          if (!sameJson(order, want)) throw new Error(`field order ${order} in ${text}`);
        }),
    },
    {
      name: "any value text: attrs of the declared types, or a LeaseFormatError",
      property: () =>
        fc.property(
          fc.oneof(
            fc.string(),
            fc.json(),
            leaseAttrs.map(encodeLeaseValue).chain((t) =>
              fc.nat(t.length).map((i) => t.slice(0, i))
            ),
          ),
          (text) => {
            const r = valueOrTyped(() => decodeLeaseValue(text), [LeaseFormatError]);
            if ("value" in r) {
              const a = r.value;
              if (
                typeof a.publicIP !== "string" ||
                !(a.publicIPv6 === null || typeof a.publicIPv6 === "string") ||
                !(a.backendType === undefined || typeof a.backendType === "string")
              ) throw new Error(`decoded ${JSON.stringify(a)} from ${text}`);
            }
          },
        ),
    },
    {
      name: "PublicIP or BackendType replaced by any JSON: accepted, or an error naming it",
      property: () =>
        fc.property(
          leaseAttrs,
          fc.constantFrom("PublicIP", "BackendType"),
          hostileJson(),
          (a, f, v) => {
            const o = JSON.parse(encodeLeaseValue(a));
            o[f] = v;
            valueOrTyped(() => decodeLeaseValue(JSON.stringify(o)), [LeaseFormatError], [f]);
          },
        ),
    },
    {
      name: "a PublicIPv6 that is not an IPv6 address (or null) is refused, naming PublicIPv6",
      skip: "codec.ts decodeLeaseValue drops a non-string PublicIPv6 (5, {}, true) to null and " +
        'passes any string ("x") through unchecked (issue 10 defect 8: a peer\'s addresses must ' +
        "be usable; flannel identifies IPv6-only leases by PublicIPv6)",
      property: () =>
        fc.property(leaseAttrs, hostileJson(), (a, v) => {
          const o = JSON.parse(encodeLeaseValue(a));
          o.PublicIPv6 = v;
          const r = valueOrTyped(
            () => decodeLeaseValue(JSON.stringify(o)),
            [LeaseFormatError],
            ["PublicIPv6"],
          );
          const ok = v === null || (typeof v === "string" && /^[0-9a-f:.]+$/i.test(v) &&
            v.includes(":"));
          if ("value" in r && !ok) throw new Error(`PublicIPv6 ${JSON.stringify(v)} accepted`);
        }),
    },
    {
      name: "LeaseDecoder.decode never throws: a lease or null",
      property: () =>
        fc.property(
          fc.oneof(
            keyish,
            fc.nat(2 ** 32 - 1).map((ip) => subnetKey({ ip: ip & ~255 >>> 0, prefix: 24 })),
          ),
          fc.oneof(fc.string(), fc.json(), leaseAttrs.map(encodeLeaseValue)),
          fc.option(fc.nat(), { nil: null }),
          (key, value, exp) => {
            const d = new LeaseDecoder();
            const l = d.decode({ key, value, expiresAt: exp, revision: 1 });
            if (l !== null && (l.key !== key || typeof l.attrs.publicIP !== "string")) {
              throw new Error(`decoded ${JSON.stringify(l)}`);
            }
          },
        ),
    },
  ],
};
