/**
 * lib/net `ipFamily` replaced node:net's `isIP` in every module of lib/ (so a service does not
 * load Deno's node layer for it): the same answer as `isIP` on odd literals (zones, IPv4 tails,
 * too many groups, two `::`, brackets, spaces, non-ASCII digits) and on random strings made of
 * hex digits, colons, dots, `%` and a few others. node:net stays here as the oracle.
 */

import { isIP } from "node:net";
import { assertEquals } from "./_assert.ts";
import fc from "./_fc.ts";
import { ipFamily } from "../lib/net/addr.ts";

const edges = [
  "",
  "1.2.3.4",
  "01.2.3.4",
  "1.2.3.256",
  "::",
  ":::",
  "::1",
  "1::",
  "1:2:3:4:5:6:7:8",
  "1:2:3:4:5:6:7:8:9",
  "1:2:3:4:5:6:7::",
  "1:2:3:4:5:6:7:8::",
  "::1:2:3:4:5:6:7",
  "::1:2:3:4:5:6:7:8",
  "1::2::3",
  "12345::1",
  "fffff::",
  "FE80::1",
  "fe80::1%eth0",
  "fe80::1%",
  "fe80::1%eth0%1",
  "fe80::1%e-t.h:0",
  "fe80::1%\u00e9",
  "::ffff:1.2.3.4",
  "::ffff:1.2.3.256",
  "::ffff:01.2.3.4",
  "1:2:3:4:5:6:1.2.3.4",
  "1:2:3:4:5:6:7:1.2.3.4",
  "1.2.3.4::",
  "::1.2.3.4",
  "[::1]",
  " ::1",
  "::1 ",
  "::g",
  "1.2.3.\u0664",
  "localhost",
  "example.org",
];

/** Strings of IPv6-ish characters: mostly near-addresses. */
const nearAddress = fc.string({
  unit: fc.constantFrom(..."0123456789abcdefABCDEFg::::::....%%z- []"),
  maxLength: 24,
});
/** Groups of hex joined by ':' with one '::' somewhere and an optional IPv4 tail or zone. */
const groups = fc.tuple(
  fc.array(
    fc.string({ unit: fc.constantFrom(..."0123456789abcdefABCDEF"), minLength: 1, maxLength: 5 }),
    {
      minLength: 0,
      maxLength: 9,
    },
  ),
  fc.integer({ min: -1, max: 9 }),
  fc.option(fc.constantFrom("1.2.3.4", "255.255.255.255", "256.1.1.1", "1.2.3")),
  fc.option(fc.constantFrom("%eth0", "%1", "%", "%a b")),
).map(([gs, gap, v4, zone]) => {
  const parts = gs.slice();
  if (gap >= 0 && gap <= parts.length) parts.splice(gap, 0, "");
  let s = parts.join(":");
  if (gap === 0) s = ":" + s;
  if (gap === gs.length) s += ":";
  if (v4 !== null) s += (s === "" || s.endsWith(":") ? "" : ":") + v4;
  return s + (zone ?? "");
});

Deno.test("ipFamily: the same answer as node:net isIP", () => {
  for (const s of edges) assertEquals(ipFamily(s), isIP(s), JSON.stringify(s));
  fc.assert(
    fc.property(fc.oneof(nearAddress, groups, fc.string({ maxLength: 12 })), (s) => {
      assertEquals(ipFamily(s), isIP(s), JSON.stringify(s));
    }),
    { numRuns: 30_000 },
  );
});

Deno.test("ipFamily: the random cases reach every answer", () => {
  // Guards the generator above: a property that only ever saw names would prove nothing.
  const seen = new Set<number>();
  fc.assert(
    fc.property(groups, (s) => {
      seen.add(isIP(s));
    }),
    { numRuns: 2_000 },
  );
  assertEquals([...seen].sort(), [0, 4, 6]);
});
