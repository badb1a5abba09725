/**
 * weft's command line: `run` (the agent, default), `config get|set`, `leases`, `version`, `cni`.
 * Usage errors exit 2, runtime errors 1, each with one line that says what to fix.
 */
import { agentFlags, registryFlags } from "./agent_flags.ts";
import { flagHelp, type FlagTable, type FlagValues, parseFlags, UsageError } from "./flags.ts";
import { setupLogging } from "../base/log.ts";
import { VERSION } from "../base/version.ts";
import { openRegistry } from "../registry/open.ts";
import { checkRegistryFlags, registryOptions } from "./registry_flags.ts";
import type { Registry } from "../registry/contract/registry.ts";
import { parseNetworkConfig } from "../config/network.ts";
import { ConfigError } from "../base/errors.ts";
import { LeaseDecoder } from "../lease/decode.ts";
import { leaseRows, renderLeaseTable } from "./leases_table.ts";
import { runAgentCommand } from "./run.ts";

const USAGE = `weft ${VERSION}: overlay network agent (flanneld-compatible)

Usage:
  weft [run] [flags]          run the agent
  weft config get [flags]     print the network config stored in the registry
  weft config set FILE|- [flags]
                              store a network config (validated first)
  weft leases [--json] [flags]
                              list the subnet leases in the registry
  weft cleanup [--release-lease] [--dry-run] [flags]
                              remove weft's devices, routes, iptables chains and
                              subnet.env from this host (stop the agent first)
  weft doctor [--json] [--peer SUBNET|IP] [flags]
                              check this node (registry, kernel, MTU, host
                              settings, peers) and say how to fix what is broken
  weft status [--json] [flags]
                              the running agent's lease, readiness and peers
                              (reachability, RTT), from its --healthz-port
  weft cni                    CNI plugin mode (also when CNI_COMMAND is set)
  weft version                print the version

Run 'weft <command> --help' for the flags of a command.`;

/** Runs a command; returns the process exit code. */
export async function main(args: string[], env = Deno.env.toObject()): Promise<number> {
  const first = args[0];
  try {
    // A container runtime execs the plugin with no arguments and CNI_COMMAND set.
    if ((first === undefined && env.CNI_COMMAND) || invokedAs() === "weft-cni") {
      return await runCni();
    }
    if (first === "version" || first === "--version") {
      noArguments(args.slice(1));
      console.log(`weft ${VERSION}`);
      return 0;
    }
    if (first === "help" || first === "--help" || first === "-h") {
      noArguments(args.slice(1));
      console.log(USAGE);
      return 0;
    }
    if (first === "cni") {
      noArguments(args.slice(1));
      return await runCni();
    }
    if (first === "config") return await configCommand(args.slice(1), env);
    if (first === "leases") return await leasesCommand(args.slice(1), env);
    if (first === "doctor") {
      return await (await import("./doctor.ts")).doctorCommand(args.slice(1), env);
    }
    if (first === "status") {
      return await (await import("./status.ts")).statusCommand(args.slice(1), env);
    }
    if (first === "cleanup") {
      return await (await import("./cleanup.ts")).cleanupCommand(args.slice(1), env);
    }
    if (first === undefined || first === "run" || first.startsWith("-")) {
      const rest = first === "run" ? args.slice(1) : args;
      const { values, positional, given } = parseFlags(rest, agentFlags, env);
      if (values.help) {
        console.log(
          `Usage: weft run [flags]\n\nFlags (each also from FLANNELD_<NAME> or WEFT_<NAME>):\n${
            flagHelp(agentFlags)
          }`,
        );
        return 0;
      }
      if (values.version) {
        console.log(`weft ${VERSION}`);
        return 0;
      }
      if (positional.length) throw new UsageError(`unexpected argument "${positional[0]}"`);
      checkRegistryFlags(values, given);
      await initLogging(values);
      return await runAgentCommand(values);
    }
    throw new UsageError(`unknown command "${first}"; run 'weft --help' for the commands`);
  } catch (e) {
    return reportError(e);
  }
}

/** Prints one clear line for an error and returns its exit code. */
export function reportError(e: unknown): number {
  const err = e as Error;
  if (err instanceof UsageError) {
    console.error(`weft: ${err.message}`);
    return 2;
  }
  console.error(`weft: ${err instanceof ConfigError ? "config: " : ""}${err.message ?? err}`);
  return 1;
}

/** Commands without flags or arguments (version, help, cni) refuse any, like the others. */
function noArguments(rest: string[]): void {
  const { positional } = parseFlags(rest, {}, {});
  if (positional.length) throw new UsageError(`unexpected argument "${positional[0]}"`);
}

async function initLogging(v: FlagValues) {
  const level = Number(v.v) >= 1 ? "debug" : String(v["log-level"]);
  await setupLogging(level as "debug", String(v["log-format"]) as "text");
}

function commandFlags(extra: FlagTable = {}): FlagTable {
  return {
    ...registryFlags,
    ...extra,
    help: { type: "bool", default: false, alias: "h", help: "show this help" },
  };
}

async function withRegistry<T>(
  v: FlagValues,
  given: Set<string>,
  fn: (r: Registry) => Promise<T>,
): Promise<T> {
  checkRegistryFlags(v, given);
  await initLogging({ ...v, "log-level": v["log-level"] === "info" ? "warning" : v["log-level"] });
  const r = await openRegistry(registryOptions(v));
  try {
    return await fn(r);
  } finally {
    await r.close();
  }
}

async function configCommand(args: string[], env: Record<string, string>): Promise<number> {
  const table = commandFlags();
  const { values, positional, given } = parseFlags(args, table, env);
  const sub = positional[0];
  if (values.help || !sub) {
    console.log(`Usage: weft config get | weft config set FILE|-\n\n${flagHelp(table)}`);
    return values.help ? 0 : 2;
  }
  if (sub === "get") {
    if (positional.length > 1) throw new UsageError(`unexpected argument "${positional[1]}"`);
    return await withRegistry(values, given, async (r) => {
      const c = await r.getConfig();
      if (c === null) {
        console.error(
          "weft: the registry has no network config; set one with 'weft config set FILE'",
        );
        return 1;
      }
      console.log(c.trim());
      return 0;
    });
  }
  if (sub === "set") {
    const src = positional[1];
    if (!src) throw new UsageError("config set needs a FILE (or - for standard input)");
    let text: string;
    try {
      text = src === "-"
        ? await new Response(Deno.stdin.readable).text()
        : await Deno.readTextFile(src);
    } catch (e) {
      throw new UsageError(`cannot read ${src}: ${(e as Error).message}`);
    }
    try {
      parseNetworkConfig(text);
    } catch (e) {
      throw new ConfigError(`${src === "-" ? "stdin" : src}: ${(e as Error).message}`);
    }
    return await withRegistry(values, given, async (r) => {
      await r.putConfig(text);
      console.log("network config stored");
      return 0;
    });
  }
  throw new UsageError(`unknown config command "${sub}"; use get or set`);
}

async function leasesCommand(args: string[], env: Record<string, string>): Promise<number> {
  const table = commandFlags({
    json: { type: "bool", default: false, help: "print JSON instead of a table" },
  });
  const { values, positional, given } = parseFlags(args, table, env);
  if (values.help) {
    console.log(`Usage: weft leases [--json]\n\n${flagHelp(table)}`);
    return 0;
  }
  if (positional.length) throw new UsageError(`unexpected argument "${positional[0]}"`);
  return await withRegistry(values, given, async (r) => {
    const { leases } = await r.listLeases();
    // IPv6-only leases too: the table shows every lease, of any config.
    const decoded = new LeaseDecoder({ ipv6: true }).decodeAll(leases);
    if (values.json) console.log(JSON.stringify(leaseRows(decoded), null, 2));
    else Deno.stdout.writeSync(new TextEncoder().encode(renderLeaseTable(decoded)));
    return 0;
  });
}

/** The executable name this process was started under (argv[0]), e.g. via a weft-cni link. */
function invokedAs(): string {
  try {
    const argv0 = Deno.readTextFileSync("/proc/self/cmdline").split("\0")[0];
    return argv0.split("/").pop() ?? "";
  } catch {
    return "";
  }
}

async function runCni(): Promise<number> {
  const { cniMain } = await import("../cni/main.ts");
  return await cniMain();
}
