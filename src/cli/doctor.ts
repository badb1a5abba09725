/**
 * `weft doctor [--json] [--peer SUBNET|IP] [the agent's flags]`: checks this node the way the
 * agent with the same flags (and the FLANNELD_<NAME> and WEFT_<NAME> variables) sees it, one line per check.
 * Exit 0 when nothing fails, 1 when something does, 2 on usage errors.
 */
import { agentFlags, ifaceSelection } from "./agent_flags.ts";
import { flagHelp, type FlagTable, type FlagValues, parseFlags, UsageError } from "./flags.ts";
import { checkRegistryFlags, registryOptions } from "./registry_flags.ts";
import { setupLogging } from "../base/log.ts";
import { isIp, parseCidr } from "../base/ipv4.ts";
import { isIp6, parseCidr6 } from "../base/ipv6.ts";
import { type DoctorOptions, runDoctor } from "../doctor/doctor.ts";
import { exitCodeOf } from "../doctor/check.ts";
import { renderJson, renderText } from "../doctor/print.ts";

const doctorFlags: FlagTable = {
  ...agentFlags,
  json: { type: "bool", default: false, help: "print the checks as JSON" },
  peer: {
    type: "string",
    default: "",
    arg: "SUBNET|IP",
    help: "check only the peer with this subnet, or whose subnet or public IP holds this address",
  },
};

/** What `runDoctor` takes, from the agent's flag values (also `weft status` without an agent). */
export function doctorOptions(v: FlagValues, peer?: string): DoctorOptions {
  return {
    registry: registryOptions(v),
    iface: ifaceSelection(v),
    subnetFile: String(v["subnet-file"]),
    healthzIp: String(v["healthz-ip"]),
    healthzPort: Number(v["healthz-port"]),
    ipMasq: Boolean(v["ip-masq"]),
    forwardRules: Boolean(v["iptables-forward-rules"]),
    renewMarginMin: Number(v["subnet-lease-renew-margin"]),
    backendOverride: String(v.backend || "") || undefined,
    peer,
  };
}

export async function doctorCommand(args: string[], env: Record<string, string>): Promise<number> {
  const { values: v, positional, given } = parseFlags(args, doctorFlags, env);
  if (v.help) {
    console.log(
      `Usage: weft doctor [--json] [--peer SUBNET|IP] [the agent's flags]\n\n` +
        `Flags (each also from FLANNELD_<NAME> or WEFT_<NAME>):\n${flagHelp(doctorFlags)}`,
    );
    return 0;
  }
  if (positional.length) throw new UsageError(`unexpected argument "${positional[0]}"`);
  const peer = String(v.peer || "");
  if (peer && !isIp(peer) && !isIp6(peer)) {
    try {
      if (peer.includes(":")) parseCidr6(peer, true);
      else parseCidr(peer, true);
    } catch {
      throw new UsageError(
        `--peer: "${peer}" is neither a subnet (a.b.c.d/len or an IPv6 one) nor an address`,
      );
    }
  }
  checkRegistryFlags(v, given);
  await setupLogging("error", String(v["log-format"]) as "text");
  const results = await runDoctor(doctorOptions(v, peer || undefined));
  const text = v.json ? renderJson(results) : renderText(results);
  await Deno.stdout.write(new TextEncoder().encode(text));
  return exitCodeOf(results);
}
