/**
 * Foreign text (registry content, most of all) quoted in log lines, error messages and tables:
 * never longer than a bound, control and bidi characters escaped, so a hostile value can neither
 * flood a log nor rewrite an operator's terminal. Non-strings are shown as JSON.
 *
 * @example
 * ```ts
 * preview("\u001b[31mred");          // "\\u001b[31mred"
 * preview("x".repeat(1000), 8);      // "xxxxxxxx… (1000 characters)"
 * preview({ VtepMAC: 1 });           // '{"VtepMAC":1}'
 * ```
 */

// C0, DEL and C1 controls, line/paragraph separators and the bidi overrides and isolates.
// deno-lint-ignore no-control-regex -- matching control characters is the point
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u2028-\u202e\u2066-\u2069]/g;

/** `v` as one bounded, printable line (at most `max` characters plus a length note). */
export function preview(v: unknown, max = 80): string {
  let s: string;
  if (typeof v === "string") s = v;
  else {
    try {
      s = JSON.stringify(v) ?? String(v);
    } catch {
      s = String(v); // a cycle or a BigInt: cannot come from JSON, but never throw here
    }
  }
  const cut = s.slice(0, max).replace(
    UNSAFE,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
  if (cut.length <= max && s.length <= max) return cut;
  return `${cut.slice(0, max)}… (${s.length} characters)`;
}
