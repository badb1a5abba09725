/**
 * `weft status [--json] [the agent's flags]`: asks the running agent for GET /status on its
 * health server (`--healthz-ip`/`--healthz-port`, as given to `weft run`, also from
 * FLANNELD_<NAME>/WEFT_<NAME>) and prints the picture as a table: readiness, lease, then one line
 * per peer with reachability, RTT and last probe. `--json` prints the agent's data as it is.
 * Exit 0 when the agent is ready and no peer is unreachable, 1 when something is not (or no agent
 * answers: then it says so and prints what `weft doctor`'s checks find instead), 2 on usage
 * errors.
 *
 * @example
 * ```ts
 * renderStatus(status, Date.now()); // "ready     yes\nlease     198.19.5.0/24 ...\n\nSUBNET ..."
 * ```
 */
import { checkRegistryFlags } from "./registry_flags.ts";
import { doctorOptions } from "./doctor.ts";
import { runDoctor } from "../doctor/doctor.ts";
import { renderJson, renderText } from "../doctor/print.ts";
import { agentFlags } from "./agent_flags.ts";
import { flagHelp, type FlagTable, parseFlags, UsageError } from "./flags.ts";
import { withTimeout } from "../base/async.ts";
import { preview } from "../base/preview.ts";
import type { AgentStatus } from "../agent/status.ts";
import { healthBase } from "../ops/health.ts";

const statusFlags: FlagTable = {
  ...agentFlags,
  json: { type: "bool", default: false, help: "print the agent's /status JSON as it is" },
};

/** 0 when ready and no peer is unreachable, else 1. */
export function statusExitCode(s: AgentStatus): number {
  return s.readiness.ok && !s.peers.some((p) => p.reachable === false) ? 0 : 1;
}

/** "3s", "4m05s", "2h10m" for a duration in ms (negative counts as 0). */
export function ago(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s >= 3600) {
    return `${Math.floor(s / 3600)}h${String(Math.floor(s % 3600 / 60)).padStart(2, "0")}m`;
  }
  if (s >= 60) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${s}s`;
}

/** Agent content as one bounded printable line (a log message may hold anything). */
const cell = (s: string, max = 200) => preview(s, max);

/** The table `weft status` prints for an agent's /status (times relative to `now`). */
export function renderStatus(s: AgentStatus, now: number): string {
  const out: string[] = [];
  const since = (iso: string | null) => iso === null ? null : now - Date.parse(iso);
  out.push(`ready     ${s.readiness.ok ? "yes" : `NO: ${cell(s.readiness.reason ?? "unknown")}`}`);
  if (s.lease) {
    const exp = s.lease.expiresAt === null
      ? "never (reservation)"
      : `${s.lease.expiresAt} (in ${ago(Date.parse(s.lease.expiresAt) - now)})`;
    out.push(
      `lease     ${s.lease.subnet} (key ${s.lease.key}), public IP ${s.lease.publicIP}, ` +
        `expires ${exp}`,
    );
  } else out.push("lease     none yet");
  out.push(
    `agent     backend ${s.backend ?? "not chosen yet"}, registry ${s.registry ?? "?"}, ` +
      `datapath repairs ${s.datapathRepairs}`,
  );
  out.push(
    `probes    ${
      s.peerProbes
        ? `every ${s.peerProbes.intervalSeconds} s, at most ${s.peerProbes.maxPerRound} peers a round`
        : "off (--peer-probe-interval 0, or the alloc backend)"
    }`,
  );
  out.push("");
  const head = ["SUBNET", "PUBLIC IP", "REACHABLE", "RTT MS", "LAST PROBE", "SINCE"];
  const rows = s.peers.map((p) => {
    const last = since(p.lastProbe);
    const changed = since(p.since);
    return [
      cell(p.subnet, 43),
      cell(p.publicIP, 40),
      p.noPodAddress ? "no pods" : p.reachable === null ? "not yet" : p.reachable ? "yes" : "NO",
      p.rttMs === null ? "-" : p.rttMs.toFixed(2),
      last === null ? "-" : `${ago(last)} ago`,
      changed === null ? "-" : ago(changed),
    ];
  });
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (c: string[]) => c.map((x, i) => x.padEnd(widths[i])).join("  ").trimEnd();
  out.push(line(head), ...rows.map(line));
  const bad = s.peers.filter((p) => p.reachable === false).length;
  const noPods = s.peers.filter((p) => p.noPodAddress).length;
  const unknown = s.peers.filter((p) => p.reachable === null).length - noPods;
  out.push(
    "",
    `${s.peers.length} peer(s): ${
      s.peers.length - bad - unknown - noPods
    } reachable, ${bad} unreachable, ` +
      `${unknown} not probed yet${noPods ? `, ${noPods} with no pod address to probe` : ""}`,
  );
  for (const p of s.peers) {
    if (p.error) out.push(`  ${cell(p.subnet, 43)}: ${cell(p.error)}`);
  }
  if (bad) out.push("run 'weft doctor --peer SUBNET' (with the agent's flags) to see why");
  if (s.lastErrors.length) {
    out.push("", "last warnings and errors:");
    for (const e of s.lastErrors.slice(-10)) {
      out.push(`  ${e.at} ${e.level.padEnd(7)} ${cell(e.logger, 40)}: ${cell(e.msg, 300)}`);
    }
  }
  return out.join("\n") + "\n";
}

export async function statusCommand(args: string[], env: Record<string, string>): Promise<number> {
  const { values: v, positional, given } = parseFlags(args, statusFlags, env);
  if (v.help) {
    console.log(
      `Usage: weft status [--json] [the agent's flags]\n\n` +
        `Asks the running agent (its --healthz-ip/--healthz-port) for /status.\n` +
        `Flags (each also from FLANNELD_<NAME> or WEFT_<NAME>):\n${flagHelp(statusFlags)}`,
    );
    return 0;
  }
  if (positional.length) throw new UsageError(`unexpected argument "${positional[0]}"`);
  const port = Number(v["healthz-port"]);
  if (!(port > 0)) {
    throw new UsageError(
      "weft status needs the agent's --healthz-port (its status is served there); " +
        "without one, run 'weft doctor' with the agent's flags",
    );
  }
  const url = `${healthBase(String(v["healthz-ip"]), port)}/status`;
  let body: string;
  try {
    const r = await withTimeout(fetch(url), 5000, `GET ${url}`);
    body = await r.text();
    if (r.status !== 200) {
      console.error(
        `weft: ${url} answered ${r.status}: ${cell(body.trim())}` +
          (r.status === 404 ? " (an agent older than weft status?)" : ""),
      );
      return 1;
    }
  } catch (e) {
    console.error(
      `weft: no agent answers on ${url}: ${(e as Error).message}. Is 'weft run' running with ` +
        `--healthz-port ${port}? What 'weft doctor' finds with these flags instead:`,
    );
    // No agent to ask: the same checks as `weft doctor`, with the same flags, so the node's
    // state is still told (exit 1 either way: the agent is not serving).
    checkRegistryFlags(v, given);
    const results = await runDoctor(doctorOptions(v));
    const text = v.json ? renderJson(results) : renderText(results);
    await Deno.stdout.write(new TextEncoder().encode(text));
    return 1;
  }
  let s: AgentStatus;
  try {
    s = JSON.parse(body);
  } catch (e) {
    console.error(`weft: ${url} answered something that is not JSON: ${(e as Error).message}`);
    return 1;
  }
  const text = v.json ? JSON.stringify(s, null, 2) + "\n" : renderStatus(s, Date.now());
  await Deno.stdout.write(new TextEncoder().encode(text));
  return statusExitCode(s);
}
