/**
 * Fuzz target: the CNI plugin's config (src/cni/netconf.ts). Any stdin parses or gives a CniError
 * (decoding failure or invalid config) naming the field; a delegate config is built with
 * flannel's semantics (delegate keys win, name and IPAM ranges and the network route from weft
 * and subnet.env) or refused with a CniError naming the field, never altering the input.
 */
import fc from "fast-check";
import { formatCidr, maskOf } from "../../src/base/ipv4.ts";
import { CniCode, CniError } from "../../src/cni/errors.ts";
import { buildDelegate, parseNetConf } from "../../src/cni/netconf.ts";
import type { SubnetEnv } from "../../src/config/subnet_env.ts";
import { type FuzzTarget, hostileJson, PROTO_KEYS, setOwn, valueOrTyped } from "./harness.ts";

const FIELDS = [
  "name",
  "cniVersion",
  "type",
  "subnetFile",
  "dataDir",
  "delegate",
  "ipam",
  "runtimeConfig",
] as const;

const key = fc.oneof(fc.string({ maxLength: 8 }), fc.constantFrom(...PROTO_KEYS, "type", "mtu"));
const obj = fc.dictionary(key, fc.jsonValue({ maxDepth: 2 }), { maxKeys: 5 });

/** A plausible network config: flannel's keys with well-typed values, plus whatever else. */
const netConf = fc.record({
  cniVersion: fc.constantFrom("0.3.1", "0.4.0", "1.0.0", "1.1.0"),
  name: fc.string({ minLength: 1, maxLength: 12 }),
  type: fc.constant("weft"),
  delegate: fc.option(
    obj.map((d) => {
      const o = { ...d };
      delete o.name;
      delete o.ipam;
      if ("type" in o && typeof o.type !== "string") o.type = "bridge";
      return o;
    }),
    { nil: undefined },
  ),
  ipam: fc.option(
    fc.record({
      type: fc.constantFrom("host-local", "static"),
      routes: fc.array(fc.record({ dst: fc.constantFrom("198.18.0.0/15", "0.0.0.0/0") }), {
        maxLength: 3,
      }),
    }, { requiredKeys: ["type"] }),
    { nil: undefined },
  ),
}, { requiredKeys: ["cniVersion", "name", "type"] });

const env: fc.Arbitrary<SubnetEnv> = fc.record({
  network: fc.integer({ min: 8, max: 22 }).map((p) => ({
    ip: ((198 << 24) & maskOf(p)) >>> 0,
    prefix: p,
  })),
  subnet: fc.nat(255).map((i) => ({ ip: ((198 << 24) | (18 << 16) | (i << 8)) >>> 0, prefix: 24 })),
  mtu: fc.integer({ min: 68, max: 65535 }),
  ipMasq: fc.boolean(),
});

export const cniTarget: FuzzTarget = {
  name: "CNI netconf",
  properties: [
    {
      name: "any stdin: a NetConf or a CniError (decoding failure or invalid config)",
      property: () =>
        fc.property(
          fc.oneof(fc.string(), fc.json(), netConf.map((c) => JSON.stringify(c))),
          (s) => {
            const r = valueOrTyped(() => parseNetConf(s), [CniError]);
            if ("error" in r) {
              const c = (r.error as CniError).code;
              if (c !== CniCode.DecodingFailure && c !== CniCode.InvalidConfig) {
                throw new Error(`code ${c} for ${s}`);
              }
            }
          },
        ),
    },
    {
      name: "one field replaced by any JSON value: accepted, or a CniError naming the field",
      property: () =>
        fc.property(netConf, fc.constantFrom(...FIELDS), hostileJson(), (c, f, v) => {
          const o: Record<string, unknown> = { ...c, [f]: v };
          valueOrTyped(() => parseNetConf(JSON.stringify(o)), [CniError], [`"${f}"`]);
        }),
    },
    {
      name: "buildDelegate: flannel's merge, or a CniError naming the field; input unchanged",
      property: () =>
        fc.property(
          netConf,
          env,
          fc.option(obj, { nil: undefined }),
          fc.option(hostileJson(), { nil: undefined }),
          fc.constantFrom(...PROTO_KEYS),
          (c, e, extraDelegate, routes, pk) => {
            const o: Record<string, unknown> = { ...c };
            if (extraDelegate) o.delegate = { ...extraDelegate, ...(c.delegate ?? {}) };
            if (routes !== undefined) o.ipam = { ...(c.ipam ?? {}), routes };
            if (o.delegate) setOwn(o.delegate as Record<string, unknown>, pk, 1);
            const conf = parseNetConf(JSON.stringify(o));
            const before = JSON.stringify(conf.raw);
            const r = valueOrTyped(() => buildDelegate(conf, e), [CniError], [
              '"delegate"',
              '"delegate.type"',
              '"ipam.routes"',
            ]);
            if (JSON.stringify(conf.raw) !== before) {
              throw new Error(
                "buildDelegate changed its input",
              );
            }
            if ("error" in r) return;
            const d = r.value as Record<string, unknown>;
            const ipam = d.ipam as Record<string, unknown>;
            const rs = ipam.routes as { dst: string }[];
            if (
              d.name !== c.name ||
              JSON.stringify(ipam.ranges) !==
                JSON.stringify([[{ subnet: formatCidr(e.subnet) }]]) ||
              rs[rs.length - 1].dst !== formatCidr(e.network) ||
              JSON.stringify(JSON.parse(JSON.stringify(d))) !== JSON.stringify(d)
            ) throw new Error(`delegate ${JSON.stringify(d)}`);
            // Keys in delegate win (a null one counts as unset, as flannel's plugin leaves it).
            for (const [k, v] of Object.entries(conf.delegate ?? {})) {
              if (v !== null && JSON.stringify(d[k]) !== JSON.stringify(v)) {
                throw new Error(`delegate key ${k} not kept: ${JSON.stringify(d)}`);
              }
            }
          },
        ),
    },
  ],
};
