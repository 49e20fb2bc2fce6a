/**
 * The hand-written IPv4 checks on the per-connection path read exactly what they replaced:
 * lib/net `isIPv4Address` agrees with node:net's `isIP(s) === 4` (dial's literal test), and
 * lib/socks5 `parseIPv4` with its former regex (leading zeros allowed there), on fixed edge
 * cases and on random strings made of digits, dots and a few other characters.
 */

import { isIP } from "node:net";
import { assertEquals } from "./_assert.ts";
import fc from "./_fc.ts";
import { isIPv4Address } from "../lib/net/addr.ts";
import { parseIPv4 } from "../lib/socks5/addr.ts";

/** What parseIPv4 was: a regex and a range check. */
function regexIPv4(s: string): Uint8Array | null {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (!m) return null;
  const parts = m.slice(1).map(Number);
  return parts.every((v) => v <= 255) ? new Uint8Array(parts) : null;
}

const edges = [
  "127.0.0.1",
  "0.0.0.0",
  "255.255.255.255",
  "256.1.1.1",
  "1.2.3",
  "1.2.3.4.5",
  "01.2.3.4",
  "1.2.3.04",
  "00.1.1.1",
  "1000.1.1.1",
  "1..2.3",
  ".1.2.3",
  "1.2.3.4.",
  "1.2.3.4 ",
  " 1.2.3.4",
  "a.b.c.d",
  "1.2.3.٤",
  "::1",
  "::ffff:1.2.3.4",
  "",
  "example.org",
];

/** Strings of digits, dots and a few others: mostly near-addresses. */
const nearAddress = fc.string({
  unit: fc.constantFrom(..."0123456789....:a "),
  maxLength: 18,
});
/** Four parts of 0–300, some zero-padded. */
const quads = fc.tuple(...Array.from({ length: 4 }, () => fc.nat(300)), fc.boolean()).map((
  [a, b, c, d, pad],
) => [a, b, c, d].map((v) => pad ? String(v).padStart(3, "0") : String(v)).join("."));

Deno.test("isIPv4Address: the same answer as node:net isIP(s) === 4", () => {
  for (const s of edges) assertEquals(isIPv4Address(s), isIP(s) === 4, JSON.stringify(s));
  fc.assert(
    fc.property(fc.oneof(nearAddress, quads), (s) => isIPv4Address(s) === (isIP(s) === 4)),
    { numRuns: 20_000 },
  );
});

Deno.test("socks5 parseIPv4: the same bytes (or null) as its former regex", () => {
  for (const s of edges) assertEquals(parseIPv4(s), regexIPv4(s), JSON.stringify(s));
  fc.assert(
    fc.property(fc.oneof(nearAddress, quads), (s) => {
      assertEquals(parseIPv4(s), regexIPv4(s), JSON.stringify(s));
    }),
    { numRuns: 20_000 },
  );
});
