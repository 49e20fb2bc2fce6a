/**
 * lib/ and services/ are Latin-1 source: V8 keeps a module's source text for the life of the
 * process, one byte per character while every character is Latin-1, two bytes for the whole
 * file once one is not (an em dash or an arrow in a comment). Measured with
 * bench/_start_weight.ts: 0.4-0.55 MB of heap per service (bench/RESULTS.md). A character
 * outside Latin-1 belongs in a string as an escape (`\u2192`), in a comment as ASCII (`->`).
 * @module
 */
import { assertEquals } from "./_assert.ts";

const roots = ["../lib", "../services"];

async function* sources(dir: URL): AsyncGenerator<URL> {
  for await (const e of Deno.readDir(dir)) {
    const u = new URL(e.name + (e.isDirectory ? "/" : ""), dir);
    if (e.isDirectory) yield* sources(u);
    else if (e.name.endsWith(".ts")) yield u;
  }
}

Deno.test("lib/ and services/ sources hold no character outside Latin-1", async () => {
  const found: string[] = [];
  for (const root of roots) {
    const dir = new URL(root + "/", import.meta.url);
    for await (const file of sources(dir)) {
      const lines = (await Deno.readTextFile(file)).split("\n");
      lines.forEach((line, i) => {
        const c = [...line].find((ch) => ch.codePointAt(0)! > 0xff);
        if (c !== undefined) {
          const path = file.pathname.slice(new URL("../", import.meta.url).pathname.length);
          found.push(`${path}:${i + 1}: U+${c.codePointAt(0)!.toString(16).padStart(4, "0")}`);
        }
      });
    }
  }
  assertEquals(found, []);
});
