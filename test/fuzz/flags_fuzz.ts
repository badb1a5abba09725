/**
 * Fuzz target: the CLI flag parser (src/cli/flags.ts) over the agent's real flag table and a
 * synthetic one with every flag type, bounds, choices and an alias. Values written in any of the
 * accepted forms (`--a=b`, `--a b`, `-a b`, `-a=b`, booleans bare or `=false`, repeated lists,
 * positionals and `--`) parse back to themselves; any argv and environment parse to values of the
 * declared types or give a UsageError naming the flag or variable.
 */
import fc from "fast-check";
import { agentFlags } from "../../src/cli/agent_flags.ts";
import { type FlagSpec, type FlagTable, parseFlags, UsageError } from "../../src/cli/flags.ts";
import { type FuzzTarget, PROTO_KEYS, valueOrTyped } from "./harness.ts";
import { isIp } from "../../src/base/ipv4.ts";
import { isIp6 } from "../../src/base/ipv6.ts";

const synthetic: FlagTable = {
  "count": { type: "int", default: 3, help: "unbounded int" },
  "port": { type: "int", default: 0, min: 0, max: 65535, help: "bounded int" },
  "neg": { type: "int", default: -5, min: -10, max: -1, help: "negative range" },
  "mode": { type: "string", default: "a", choices: ["a", "b", "c-d"], help: "choice" },
  "name": { type: "string", default: "", help: "free string" },
  "on": { type: "bool", default: false, alias: "o", help: "bool with alias" },
  "tags": { type: "list", default: [], help: "list" },
};

const TABLES: Record<string, FlagTable> = { agent: agentFlags, synthetic };

/** A valid value for a flag, as parseFlags returns it. */
function valueFor(s: FlagSpec): fc.Arbitrary<string | number | boolean | string[]> {
  switch (s.type) {
    case "int":
      return fc.integer({
        min: s.min ?? Number.MIN_SAFE_INTEGER,
        max: s.max ?? Number.MAX_SAFE_INTEGER,
      }).map((n) => (Object.is(n, -0) ? 0 : n));
    case "bool":
      return fc.boolean();
    case "list":
      return fc.array(
        fc.string({ minLength: 1, maxLength: 10 }).filter((x) =>
          !x.includes(",") && x.trim() === x
        ),
        { minLength: 1, maxLength: 4 },
      );
    default:
      if (s.form === "ipv4") {
        return fc.oneof(fc.constant(""), fc.ipV4().filter((ip) => !/(^|\.)0\d/.test(ip)));
      }
      if (s.form === "ipv6") {
        // fast-check's IPv6 may end in a dotted quad with leading zeros: keep Go-parsable ones.
        return fc.oneof(fc.constant(""), fc.ipV6().filter((ip) => isIp6(ip)));
      }
      return s.choices ? fc.constantFrom(...s.choices) : fc.string({ maxLength: 12 });
  }
}

/** argv words for one flag with value `v`; `form` picks the spelling. */
function render(name: string, s: FlagSpec, v: unknown, form: number): string[] {
  const dash = form & 1 ? "-" : "--";
  const n = s.alias && form & 4 ? s.alias : name;
  if (s.type === "bool") {
    if (v === true && form & 2) return [`${dash}${n}`];
    const spell = v ? ["true", "1", "T", "yes", "ON"] : ["false", "0", "F", "no", "off", ""];
    return [`${dash}${n}=${spell[form % spell.length]}`];
  }
  if (s.type === "list") {
    const xs = v as string[];
    // Split over one or two occurrences of the flag.
    const cut = form % (xs.length + 1);
    const parts = [xs.slice(0, cut), xs.slice(cut)].filter((p) => p.length > 0);
    return parts.flatMap((
      p,
    ) => (form & 2 ? [`${dash}${n}=${p.join(",")}`] : [`${dash}${n}`, p.join(", ")]));
  }
  return form & 2 ? [`${dash}${n}=${v}`] : [`${dash}${n}`, String(v)];
}

/** A table's name (counterexamples print the name, not the table). */
const table = fc.constantFrom(...Object.keys(TABLES));

/** Words a hostile or careless user types. */
const word = (t: FlagTable) =>
  fc.oneof(
    fc.string({ maxLength: 10 }),
    fc.tuple(
      fc.constantFrom("-", "--"),
      fc.oneof(
        fc.constantFrom(...Object.keys(t), ...PROTO_KEYS, "o", "h", "", "-"),
        fc.string({ maxLength: 6 }),
      ),
      fc.option(
        fc.oneof(
          fc.string({ maxLength: 8 }),
          fc.constantFrom("99999999999999999999", "-0", "1e3", "0x10", " 7", "TRUE", ",,", "a"),
        ),
        { nil: undefined },
      ),
    ).map(([d, n, v]) => (v === undefined ? `${d}${n}` : `${d}${n}=${v}`)),
  );

function checkTypes(t: FlagTable, values: Record<string, unknown>, given: Set<string>): void {
  for (const k of [...Object.keys(values), ...given]) {
    if (!Object.hasOwn(t, k)) throw new Error(`value for unknown flag ${k}`);
  }
  for (const [k, s] of Object.entries(t)) {
    const v = values[k];
    if (!given.has(k)) {
      if (JSON.stringify(v) !== JSON.stringify(s.default)) throw new Error(`${k} default ${v}`);
      continue;
    }
    const ok = s.type === "int"
      ? Number.isSafeInteger(v) && (s.min === undefined || (v as number) >= s.min) &&
        (s.max === undefined || (v as number) <= s.max)
      : s.type === "bool"
      ? typeof v === "boolean"
      : s.type === "list"
      ? Array.isArray(v) && v.every((x) => typeof x === "string" && x !== "")
      : typeof v === "string" && (!s.choices || s.choices.includes(v)) &&
        (s.form !== "ipv4" || v === "" || isIp(v));
    if (!ok) throw new Error(`--${k} (${s.type}) parsed as ${JSON.stringify(v)}`);
  }
}

/** Flags with valid values and spellings, positionals between them and words after `--`. */
const writtenArgs = table.chain((tn) => {
  const t = TABLES[tn];
  return fc.tuple(
    fc.constant(tn),
    fc.uniqueArray(fc.constantFrom(...Object.keys(t)), { maxLength: 8 }).chain((names) =>
      fc.tuple(...names.map((n) => fc.tuple(fc.constant(n), valueFor(t[n]), fc.nat(63))))
    ),
    fc.array(fc.string({ maxLength: 8 }).filter((p) => !p.startsWith("-")), { maxLength: 3 }),
    fc.array(fc.string({ maxLength: 8 }), { maxLength: 3 }),
  );
});

/** Any words and FLANNELD_/WEFT_ variables (some named like Object.prototype members). */
const hostileArgs = table.chain((tn) => {
  const t = TABLES[tn];
  return fc.tuple(
    fc.constant(tn),
    fc.array(word(t), { maxLength: 8 }),
    fc.dictionary(
      fc.tuple(
        fc.constantFrom("FLANNELD_", "WEFT_"),
        fc.constantFrom(...Object.keys(t), ...PROTO_KEYS),
      ).map(([p, n]) => p + n.toUpperCase().replace(/-/g, "_")),
      fc.oneof(fc.string({ maxLength: 8 }), fc.constantFrom("99999999999999999999", "1e3")),
      { maxKeys: 3 },
    ),
  );
});

export const flagsTarget: FuzzTarget = {
  name: "CLI flags",
  properties: [
    {
      name: "values written in any accepted form parse back, positionals kept in order",
      property: () =>
        fc.property(writtenArgs, ([tn, flags, pos, rest]) => {
          const t = TABLES[tn];
          const argv: string[] = [];
          flags.forEach(([n, v, form], i) => {
            argv.push(...render(n, t[n], v, form));
            if (pos[i] !== undefined) argv.push(pos[i]);
          });
          const extra = pos.slice(flags.length);
          argv.push(...extra);
          if (rest.length) argv.push("--", ...rest);
          const { values, positional, given } = parseFlags(argv, t, {});
          for (const [n, v] of flags) {
            if (JSON.stringify(values[n]) !== JSON.stringify(v)) {
              throw new Error(
                `--${n}: wrote ${JSON.stringify(v)}, read ${JSON.stringify(values[n])}`,
              );
            }
          }
          const wantPos = [...pos.slice(0, flags.length), ...extra, ...rest];
          if (JSON.stringify(positional) !== JSON.stringify(wantPos)) {
            throw new Error(
              `positionals ${JSON.stringify(positional)} from ${JSON.stringify(argv)}`,
            );
          }
          if (given.size !== flags.length) throw new Error(`given ${[...given]}`);
          checkTypes(t, values, given);
        }),
    },
    {
      name: "any argv and environment: typed values, or a UsageError naming the flag",
      property: () =>
        fc.property(hostileArgs, ([tn, argv, env]) => {
          const t = TABLES[tn];
          const r = valueOrTyped(() => parseFlags(argv, t, env), [UsageError], [
            "-",
            "FLANNELD_",
            "WEFT_",
          ]);
          if ("value" in r) checkTypes(t, r.value.values, r.value.given);
        }),
    },
  ],
};
