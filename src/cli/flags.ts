/**
 * Declarative command-line flags in flanneld's style: `--name value`, `--name=value`, `-name`,
 * booleans as `--flag` or `--flag=false`, repeatable flags, and a fallback to the environment
 * (`FLANNELD_<NAME>` then `WEFT_<NAME>`, NAME upper-cased with `-` → `_`).
 *
 * @example
 * ```ts
 * const spec = { port: { type: "int", default: 0, help: "listen port" } } as const;
 * const { values } = parseFlags(["--port=8080"], spec, {});
 * values.port; // 8080
 * ```
 */

import { isIp } from "../base/ipv4.ts";
import { isIp6 } from "../base/ipv6.ts";

/** A usage problem: the CLI prints the message and exits 2. */
export class UsageError extends Error {
  override name = "UsageError";
}

export type FlagType = "string" | "int" | "bool" | "list";

export interface FlagSpec {
  type: FlagType;
  default?: string | number | boolean | string[];
  help: string;
  /** Placeholder shown in help, e.g. "IP". */
  arg?: string;
  /** Shown in help for accepted-but-not-yet-effective flags. */
  pending?: string;
  /** Short alias without dashes, e.g. "v". */
  alias?: string;
  /** Allowed values for a string flag. */
  choices?: string[];
  /** Inclusive bounds for an int flag. */
  min?: number;
  max?: number;
  /** Why the bounds are what they are, shown with a bounds error (e.g. a registry's limit). */
  boundsWhy?: string;
  /** The form a non-empty string flag must have ("ipv4": a dotted-quad address; "ipv6"). */
  form?: "ipv4" | "ipv6";
}

export type FlagTable = Record<string, FlagSpec>;
export type FlagValues = Record<string, string | number | boolean | string[] | undefined>;

function envName(flag: string): string {
  return flag.toUpperCase().replace(/-/g, "_");
}

function convert(
  name: string,
  spec: FlagSpec,
  raw: string,
  from: string,
): string | number | boolean {
  switch (spec.type) {
    case "int": {
      if (!/^-?\d+$/.test(raw.trim())) {
        throw new UsageError(`${from} expects a whole number, got "${raw}"`);
      }
      const n = Number(raw);
      if (!Number.isSafeInteger(n)) {
        throw new UsageError(`${from} is too large, got "${raw}"`);
      }
      if ((spec.min !== undefined && n < spec.min) || (spec.max !== undefined && n > spec.max)) {
        const why = spec.boundsWhy ? ` (${spec.boundsWhy})` : "";
        throw new UsageError(
          `${from} must be between ${spec.min ?? "-∞"} and ${spec.max ?? "∞"}${why}, got ${n}`,
        );
      }
      return n;
    }
    case "bool": {
      const v = raw.trim().toLowerCase();
      if (["1", "t", "true", "yes", "on"].includes(v)) return true;
      if (["0", "f", "false", "no", "off", ""].includes(v)) return false;
      throw new UsageError(`${from} expects true or false, got "${raw}"`);
    }
    default:
      if (spec.choices && !spec.choices.includes(raw)) {
        throw new UsageError(`${from} must be one of ${spec.choices.join(", ")}, got "${raw}"`);
      }
      if (spec.form === "ipv4" && raw !== "" && !isIp(raw)) {
        throw new UsageError(`${from} expects an IPv4 address like 198.18.0.1, got "${raw}"`);
      }
      if (spec.form === "ipv6" && raw !== "" && !isIp6(raw)) {
        throw new UsageError(`${from} expects an IPv6 address like 2001:db8::1, got "${raw}"`);
      }
      void name;
      return raw;
  }
}

/**
 * Parses `argv` against `table`. Returns flag values (defaults and environment applied) and the
 * positional arguments. Throws UsageError naming the flag and the expected form.
 */
export function parseFlags(
  argv: string[],
  table: FlagTable,
  env: Record<string, string | undefined>,
): { values: FlagValues; positional: string[]; given: Set<string> } {
  const values: FlagValues = {};
  const given = new Set<string>();
  const positional: string[] = [];
  const byAlias = new Map<string, string>();
  for (const [n, s] of Object.entries(table)) if (s.alias) byAlias.set(s.alias, n);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--") {
      positional.push(...argv.slice(i + 1));
      break;
    }
    if (!a.startsWith("-") || a === "-") {
      positional.push(a);
      continue;
    }
    const body = a.replace(/^--?/, "");
    const eq = body.indexOf("=");
    let name = eq >= 0 ? body.slice(0, eq) : body;
    name = byAlias.get(name) ?? name;
    // Own keys only: "--constructor" or "--__proto__" must be unknown flags, not Object's.
    const spec = Object.hasOwn(table, name) ? table[name] : undefined;
    if (!spec) {
      throw new UsageError(`unknown flag ${a.split("=")[0]}; run with --help for the list`);
    }
    let raw: string;
    if (eq >= 0) raw = body.slice(eq + 1);
    else if (spec.type === "bool") raw = "true";
    else {
      if (i + 1 >= argv.length) {
        throw new UsageError(`flag --${name} needs a value (${spec.arg ?? spec.type})`);
      }
      raw = argv[++i];
    }
    const v = convert(name, spec, raw, `--${name}`);
    if (spec.type === "list") {
      const prev = given.has(name) ? (values[name] as string[]) : [];
      values[name] = [...prev, ...String(v).split(",").map((x) => x.trim()).filter(Boolean)];
    } else values[name] = v;
    given.add(name);
  }
  for (const [name, spec] of Object.entries(table)) {
    if (given.has(name)) continue;
    for (const prefix of ["FLANNELD_", "WEFT_"]) {
      const raw = env[prefix + envName(name)];
      if (raw === undefined) continue;
      const v = convert(name, spec, raw, `${prefix}${envName(name)}`);
      values[name] = spec.type === "list"
        ? String(v).split(",").map((x) => x.trim()).filter(Boolean)
        : v;
      given.add(name);
      break;
    }
    if (!given.has(name)) values[name] = spec.default;
  }
  return { values, positional, given };
}

/** Help text for a flag table, one flag per line with its default and environment names. */
export function flagHelp(table: FlagTable): string {
  const lines: string[] = [];
  for (const [name, s] of Object.entries(table)) {
    const arg = s.type === "bool" ? "" : ` ${s.arg ?? (s.type === "int" ? "N" : "VALUE")}`;
    const head = `  ${s.alias ? `-${s.alias}, ` : ""}--${name}${arg}`;
    const dflt = s.default === undefined || s.default === "" ||
        (Array.isArray(s.default) && s.default.length === 0)
      ? ""
      : ` (default ${Array.isArray(s.default) ? s.default.join(",") : s.default})`;
    const pend = s.pending ? ` [pending: ${s.pending}]` : "";
    lines.push(`${head.padEnd(38)} ${s.help}${dflt}${pend}`);
  }
  return lines.join("\n");
}
