/**
 * lib/config `parseStrictArgv` replaced node:util's `parseArgs` (strict, no positionals) in
 * every service's flag parsing, so a start loads no node layer: the same values (an object
 * without a prototype, arrays for `multiple`) or the same error message as node's, on fixed odd
 * command lines and on 10,000 random ones built from option-like tokens. node:util stays here
 * as the oracle.
 */

import { parseArgs } from "node:util";
import { assertEquals } from "./_assert.ts";
import fc from "./_fc.ts";
import { type ArgvOption, parseStrictArgv } from "../lib/config/argv.ts";

const options: Record<string, ArgvOption> = {
  listen: { type: "string", short: "l", multiple: true },
  server: { type: "string" },
  config: { type: "string", short: "c" },
  help: { type: "boolean", short: "h" },
  verbose: { type: "boolean", short: "v" },
  flag: { type: "boolean", multiple: true },
  x: { type: "boolean" }, // a one-letter long name: `-x` finds it too
};

type Outcome = { values: unknown } | { error: string };

function node(args: string[]): Outcome {
  try {
    return { values: parseArgs({ args, options, strict: true, allowPositionals: false }).values };
  } catch (err) {
    return { error: (err as Error).message };
  }
}

function ours(args: string[]): Outcome {
  try {
    return { values: parseStrictArgv(args, options) };
  } catch (err) {
    return { error: (err as Error).message };
  }
}

const words = [
  "--listen",
  "--listen=a:1",
  "--listen=",
  "--listen=-x",
  "-l",
  "-lfoo",
  "-l-x",
  "-hv",
  "-hl",
  "-hlx",
  "-vhl",
  "-lh",
  "-ch",
  "-hc",
  "--help",
  "--help=1",
  "--help=",
  "-h",
  "-v",
  "-x",
  "-xh",
  "-y",
  "-hy",
  "--",
  "-",
  "value",
  "a=b",
  "--nope",
  "--nope=1",
  "--=",
  "--=x",
  "---x",
  "-=",
  "-=x",
  "--__proto__",
  "--__proto__=1",
  "--constructor",
  "--toString",
  "-c",
  "--config",
  "--server",
  "--server=s",
  "--flag",
  "--flag=z",
  "",
  "-1",
  "--no-help",
  "--LISTEN",
  "--listen\u00e9",
];

const fixed: string[][] = [
  [],
  ["--listen", "a", "--listen", "b", "-l", "c", "-ld"],
  ["--server", "s1", "--server=s2"],
  ["--server", "--help"],
  ["--server"],
  ["-c"],
  ["-hvl", "x"],
  ["-hvlx"],
  ["--flag", "--flag", "-h", "-h"],
  ["--", "x"],
  ["--"],
  ["positional"],
  ["--help", "--", "--help"],
  ["--server", "-"],
  ["--server", "--"],
  ["--__proto__"],
];

Deno.test("parseStrictArgv: node:util parseArgs's values and errors, fixed cases", () => {
  for (const args of fixed) assertEquals(ours(args), node(args), JSON.stringify(args));
  for (const w of words) assertEquals(ours([w]), node([w]), JSON.stringify(w));
});

Deno.test("parseStrictArgv: node:util parseArgs's values and errors, random command lines", () => {
  const line = fc.array(fc.oneof(fc.constantFrom(...words), fc.string({ maxLength: 4 })), {
    maxLength: 7,
  });
  let accepted = 0;
  fc.assert(
    fc.property(line, (args) => {
      const want = node(args);
      if ("values" in want) accepted++;
      assertEquals(ours(args), want, JSON.stringify(args));
    }),
    { numRuns: 10_000 },
  );
  // Both outcomes are exercised, not only errors.
  if (accepted < 250) throw new Error(`only ${accepted} command lines accepted`);
});
