/**
 * Fuzz target: the network config parser (src/config/network.ts). Valid configs are generated
 * from a model (Network inside 198.18.0.0/15, SubnetLen, aligned SubnetMin/Max, a backend, keys
 * in any letter case as Go's encoding/json accepts), written as JSON and must parse back to the
 * model; hostile text must give a config or a ConfigError; one field of a valid config replaced
 * by any JSON value must be accepted or refused with a ConfigError naming that field.
 */
import fc from "fast-check";
import { ConfigError } from "../../src/base/errors.ts";
import { formatIp, sizeOf } from "../../src/base/ipv4.ts";
import { parseNetworkConfig, sameConfig } from "../../src/config/network.ts";
import { type FuzzTarget, hostileJson, PROTO_KEYS, setOwn, valueOrTyped } from "./harness.ts";

/** 198.18.0.0/15 as a number: every generated Network lies inside it. */
const BASE = ((198 << 24) | (18 << 16)) >>> 0;

export interface ConfigModel {
  network: number;
  prefix: number;
  subnetLen?: number;
  subnetMin?: number;
  subnetMax?: number;
  backendType?: string;
}

/** A valid config as the parser should read it. */
export const configModel: fc.Arbitrary<ConfigModel> = fc
  .integer({ min: 15, max: 28 })
  .chain((prefix) =>
    fc.record({
      prefix: fc.constant(prefix),
      network: fc.integer({
        min: 0,
        max: sizeOf(prefix) === sizeOf(15) ? 0 : 2 ** (prefix - 15) - 1,
      })
        .map((i) => BASE + i * sizeOf(prefix)),
      subnetLen: fc.option(fc.integer({ min: prefix + 2, max: 30 }), { nil: undefined }),
      bounds: fc.tuple(
        fc.double({ min: 0, max: 1, noNaN: true }),
        fc.double({ min: 0, max: 1, noNaN: true }),
      ),
      useMin: fc.boolean(),
      useMax: fc.boolean(),
      backendType: fc.option(fc.constantFrom("udp", "vxlan", "host-gw", "VXLAN", "Host-Gw"), {
        nil: undefined,
      }),
    })
  )
  .map((r) => {
    const len = r.subnetLen ?? (r.prefix <= 22 ? 24 : r.prefix + 2);
    const step = sizeOf(len);
    const n = sizeOf(r.prefix) / step; // subnets in the network
    const [a, b] = r.bounds.map((x) => Math.min(n - 1, Math.floor(x * n))).sort((x, y) => x - y);
    return {
      network: r.network,
      prefix: r.prefix,
      subnetLen: r.subnetLen,
      subnetMin: r.useMin ? r.network + a * step : undefined,
      subnetMax: r.useMax ? r.network + b * step : undefined,
      backendType: r.backendType,
    };
  })
  .filter((m) =>
    (m.subnetMin ?? 0) <= (m.subnetMax ?? Infinity) &&
    (m.subnetMin === undefined || m.subnetMax !== undefined || m.subnetMin <= lastSubnet(m)) &&
    (m.subnetMax === undefined || m.subnetMin !== undefined || m.subnetMax >= firstSubnet(m))
  );

function subnetLenOf(m: ConfigModel): number {
  return m.subnetLen ?? (m.prefix <= 22 ? 24 : m.prefix + 2);
}
function firstSubnet(m: ConfigModel): number {
  return m.network + sizeOf(subnetLenOf(m));
}
function lastSubnet(m: ConfigModel): number {
  return m.network + sizeOf(m.prefix) - sizeOf(subnetLenOf(m));
}

/** Any letter case of `k` (Go's encoding/json matches field names case-insensitively). */
function cased(k: string, mask: number): string {
  return [...k].map((c, i) => ((mask >> (i % 30)) & 1 ? c.toUpperCase() : c.toLowerCase())).join(
    "",
  );
}

/** The model as a JSON object; `mask` 0 keeps flannel's spelling, else picks a letter case. */
export function configObject(m: ConfigModel, mask = 0): Record<string, unknown> {
  const k = (s: string) => (mask === 0 ? s : cased(s, mask));
  const o: Record<string, unknown> = { [k("Network")]: `${formatIp(m.network)}/${m.prefix}` };
  if (m.subnetLen !== undefined) o[k("SubnetLen")] = m.subnetLen;
  if (m.subnetMin !== undefined) o[k("SubnetMin")] = formatIp(m.subnetMin);
  if (m.subnetMax !== undefined) o[k("SubnetMax")] = formatIp(m.subnetMax);
  if (m.backendType !== undefined) o[k("Backend")] = { [k("Type")]: m.backendType };
  return o;
}

/** Fields a mutation may replace, and the name an error about each must contain. */
const FIELDS = [
  "Network",
  "SubnetLen",
  "SubnetMin",
  "SubnetMax",
  "EnableIPv4",
  "EnableIPv6",
  "IPv6Network",
  "Backend",
  "Backend.Type",
] as const;

export const configTarget: FuzzTarget = {
  name: "network config",
  properties: [
    {
      name: "parse(JSON of a valid config) gives the model back, in any key case",
      property: () =>
        fc.property(configModel, fc.nat(2 ** 30 - 1), (m, mask) => {
          const text = JSON.stringify(configObject(m, mask));
          const c = parseNetworkConfig(text);
          const len = subnetLenOf(m);
          if (
            c.network.ip !== m.network || c.network.prefix !== m.prefix || c.subnetLen !== len ||
            c.subnetMin !== (m.subnetMin ?? firstSubnet(m)) ||
            c.subnetMax !== (m.subnetMax ?? lastSubnet(m)) ||
            c.backendType !== (m.backendType ?? "udp").toLowerCase() || c.raw !== text
          ) {
            throw new Error(`parsed ${JSON.stringify(c)} from ${text}`);
          }
          // The same config in flannel's spelling and re-indented compares equal.
          if (!sameConfig(text, JSON.stringify(configObject(m), null, 2))) {
            throw new Error(`sameConfig is false for ${text}`);
          }
        }),
    },
    {
      name: "any text gives a config or a ConfigError",
      property: () =>
        fc.property(
          fc.oneof(
            fc.string(),
            fc.json(),
            configModel.map((m) => JSON.stringify(configObject(m))).chain((t) =>
              fc.nat(t.length).chain((i) => fc.string().map((s) => t.slice(0, i) + s))
            ),
          ),
          (text) => {
            valueOrTyped(() => parseNetworkConfig(text), [ConfigError]);
          },
        ),
    },
    {
      name: "one field replaced by any JSON value: accepted, or a ConfigError naming the field",
      property: () =>
        fc.property(
          configModel,
          fc.constantFrom(...FIELDS),
          hostileJson(),
          fc.nat(2 ** 30 - 1),
          (m, f, v, mask) => {
            const o = configObject(m, mask);
            const [top, sub] = f.split(".");
            const key = Object.keys(o).find((k) => k.toLowerCase() === top.toLowerCase()) ?? top;
            if (sub) {
              const b = typeof o[key] === "object" && o[key] !== null
                ? o[key] as Record<string, unknown>
                : {};
              const bk = Object.keys(b).find((k) => k.toLowerCase() === sub.toLowerCase()) ?? sub;
              b[bk] = v;
              o[key] = b;
            } else o[key] = v;
            // A valid Network or SubnetLen can still make the subnet range fields inconsistent
            // (SubnetMin no longer aligned): then the error names the field that no longer fits.
            const names = f === "Network" || f === "SubnetLen"
              ? [f, "SubnetLen", "SubnetMin", "SubnetMax"]
              : [f];
            valueOrTyped(() => parseNetworkConfig(JSON.stringify(o)), [ConfigError], names);
          },
        ),
    },
    {
      name: "bad Backend options are refused by the parser, naming the option",
      property: () =>
        fc.property(
          configModel,
          fc.constantFrom(
            ["Type", "bogus"],
            ["VNI", 2 ** 24],
            ["VNI", -1],
            ["Port", 70000],
            ["DirectRouting", "yes"],
          ),
          (m, [k, v]) => {
            const o = configObject(m);
            o.Backend = { Type: k === "Type" ? v : "vxlan", [k]: v };
            const r = valueOrTyped(() => parseNetworkConfig(JSON.stringify(o)), [ConfigError], [k]);
            if ("value" in r) throw new Error(`Backend.${k} ${JSON.stringify(v)} accepted`);
          },
        ),
    },
    {
      name: "keys named like Object.prototype members are plain unknown keys",
      property: () =>
        fc.property(configModel, fc.constantFrom(...PROTO_KEYS), hostileJson(), (m, k, v) => {
          const o = configObject(m);
          setOwn(o, k, v);
          const b = { Type: "vxlan" };
          setOwn(b, k, v);
          o.Backend = b;
          const c = parseNetworkConfig(JSON.stringify(o));
          if (c.backendType !== "vxlan") throw new Error(`backend type ${c.backendType}`);
        }),
    },
  ],
};
