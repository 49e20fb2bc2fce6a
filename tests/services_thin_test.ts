/**
 * The layering of the service kit: every service script stays thin (flags → validate →
 * construct → run, under 150 lines), and lib/ never exits the process or reads argv (that is
 * services/_kit.ts's job), so any lib module can be embedded in another program.
 */

import { assertEquals } from "./_assert.ts";

const root = new URL("../", import.meta.url);

/** Every `.ts` file under `dir` (relative to the checkout). */
function tsFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of Deno.readDirSync(new URL(dir, root))) {
    const path = `${dir}${e.name}`;
    if (e.isDirectory) out.push(...tsFiles(`${path}/`));
    else if (e.name.endsWith(".ts")) out.push(path);
  }
  return out.sort();
}

/** The code of `path` without comments (so a doc comment may name Deno.exit). */
function code(path: string): string {
  return Deno.readTextFileSync(new URL(path, root))
    .replace(/\/\*[\s\S]*?\*\//g, "")
    .replace(/^\s*\/\/.*$/gm, "");
}

Deno.test("services: every service script is under 150 lines", () => {
  const scripts = tsFiles("services/").filter((p) => /^services\/[a-z][a-z-]*\.ts$/.test(p));
  assertEquals(scripts.length >= 8, true, scripts.join(", "));
  const long = scripts
    .map((p) => [p, Deno.readTextFileSync(new URL(p, root)).split("\n").length - 1] as const)
    .filter(([, lines]) => lines >= 150);
  assertEquals(long, []);
});

Deno.test("lib: no module exits the process or reads argv", () => {
  const offenders = tsFiles("lib/").filter((p) => /\bDeno\.(exit|args)\b/.test(code(p)));
  assertEquals(offenders, []);
});
