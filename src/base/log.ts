/**
 * Logging setup: logtape with text for terminals or JSON lines (`--log-format json`).
 * Modules get a logger with `getLogger(["weft", "<area>"])` and log constant messages with
 * `{placeholder}`s filled from properties, never interpolated text, so JSON logs carry each value
 * as a field. The CLI's own output (tables, help, `weft: <error>` lines) is printed, not logged.
 *
 * @example
 * ```ts
 * const log = getLogger(["weft", "lease"]);
 * log.info("acquired lease {subnet}", { subnet: "198.19.5.0/24" });
 * ```
 */
import {
  configure,
  getConsoleSink,
  type LogLevel,
  type LogRecord,
  reset,
  withFilter,
} from "@logtape/logtape";
import { recentProblems } from "./recent_log.ts";

export type LogFormat = "text" | "json";

function renderText(r: LogRecord): string {
  const msg = messageOf(r);
  const ts = new Date(r.timestamp).toISOString();
  return `${ts} ${r.level.toUpperCase().padEnd(7)} ${
    r.category.slice(1).join(".") || "weft"
  }: ${msg}`;
}

function messageOf(r: LogRecord): string {
  return r.message.map((m) => typeof m === "string" ? m : JSON.stringify(m)).join("");
}

function renderJson(r: LogRecord): string {
  const msg = messageOf(r);
  return JSON.stringify({
    time: new Date(r.timestamp).toISOString(),
    level: r.level,
    logger: r.category.join("."),
    msg,
    ...r.properties,
  });
}

/** Configures logging once per process; logs go to stderr. */
export async function setupLogging(level: LogLevel = "info", format: LogFormat = "text") {
  await reset();
  const render = format === "json" ? renderJson : renderText;
  await configure({
    reset: true,
    sinks: {
      stderr: (r: LogRecord) => {
        console.error(render(r));
      },
      // Kept for /status's "last errors".
      recent: withFilter(
        (r: LogRecord) =>
          recentProblems.add({
            at: r.timestamp,
            level: r.level,
            logger: r.category.join("."),
            msg: messageOf(r),
          }),
        "warning",
      ),
    },
    loggers: [
      { category: ["weft"], lowestLevel: level, sinks: ["stderr", "recent"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["stderr"] },
    ],
  });
}

export { getConsoleSink };
