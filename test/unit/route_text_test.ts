/**
 * The fast IPv4 route text reader (src/backend/route_text.ts) agrees with src/base/ipv4.ts's
 * parsers on every string it accepts, and leaves every other to them.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { ipOf, quickCidr } from "../../src/backend/route_text.ts";
import { parseCidr, parseIp } from "../../src/base/ipv4.ts";

const slow = <T>(f: () => T): T | "throws" => {
  try {
    return f();
  } catch {
    return "throws";
  }
};

const tricky = [
  "198.19.4.0/24",
  "198.19.4.1/24",
  "198.19.04.0/24",
  "0.0.0.0/0",
  "255.255.255.255/32",
  "256.1.1.1/8",
  "1.1.1/8",
  "1.1.1.1.1/8",
  " 1.1.1.0/24",
  "1.1.1.0/24 ",
  "1.1.1.0/33",
  "1.1.1.0/",
  "1.1.1.0/024",
  "1.1.1.0/08",
  "1..1.0/24",
  "a.b.c.d/8",
  "10.0.0.0/8",
  "",
  "1.1.1.0",
  "2001:db8::/32",
  "1000.1.1.0/8",
  "01.1.1.0/8",
];

Deno.test("route text: quickCidr and ipOf agree with parseCidr and parseIp", () => {
  const check = (t: string) => {
    const q = quickCidr(t);
    if (q) assert.deepEqual(q, parseCidr(t), `quickCidr(${JSON.stringify(t)})`);
    const a = t.split("/")[0];
    assert.deepEqual(slow(() => ipOf(a)), slow(() => parseIp(a)), `ipOf(${JSON.stringify(a)})`);
  };
  for (const t of tricky) check(t);
  assert.ok(quickCidr("198.19.4.0/24"), "the kernel's spelling is read fast");
  assert.equal(quickCidr("198.19.04.0/24"), null, "a leading zero is left to parseCidr");
  const part = fc.oneof(
    fc.integer({ min: 0, max: 300 }).map(String),
    fc.constantFrom("00", "01", "", "x", " 1"),
  );
  fc.assert(
    fc.property(
      fc.array(part, { minLength: 3, maxLength: 5 }),
      fc.integer({ min: 0, max: 40 }),
      (ps, len) => {
        check(`${ps.join(".")}/${len}`);
      },
    ),
    { numRuns: 2000 },
  );
});
