/**
 * No function literal is assigned to a property in lib/ and services/ (`x.f = () => ...`,
 * `this.f = function () {}`), except at the few sites listed below that run once per process.
 *
 * Why: V8's parser marks a function literal on the right of a property assignment
 * "pretenured", and its closure is made in the old generation. When it is made per
 * connection or per stream, its context (the object it captured, and everything that object
 * holds) is young: the dead closure's old-to-new pointer stays in the remembered set until the
 * next full GC, so every scavenge until then keeps every such connection alive and the next one
 * promotes it. tunnel-server promoted ~2 KB per public connection so (bench/RESULTS.md, mgc's
 * and dgc's sections). A bound function (`f.bind(obj, ...)`), a method, or a closure made into
 * a local first (`const f = () => ...; x.f = f;`) is made in the young generation.
 *
 * TypeScript parameter properties (`constructor(readonly id: number)`) make the class's field
 * initialisers assignments in the constructor, so an arrow class field in such a class is the
 * same thing: those are checked too.
 *
 * The scan is textual (a regular expression per file): it catches the usual forms, not every
 * way to write one.
 * @module
 */
import { assertEquals } from "./_assert.ts";

const roots = ["../lib", "../services"];

/**
 * Sites allowed, by file and assigned property: made once per process (or per server), so
 * nothing per connection is kept. A new entry needs the same reason.
 */
const allowed = new Set([
  "lib/tunnel/app.ts .fetch", // once per app
  "lib/tunnel/cluster.ts .remoteClient", // once per cluster member
  "lib/tunnel/cluster.ts .askPeersForHost", // once per cluster member
  "services/construct/tunnel-server.ts .onClaimsChange", // once per server
  "services/demo/set.ts .onopen", // inside a string (the demo page's script)
  "services/demo/set.ts .onmessage", // inside a string (the demo page's script)
]);

/** `x.f = <function literal>` or `x[k] = <function literal>` (`async`, typed arrows too). */
const assigned =
  /(\.#?[\w$]+|\])\s*=\s*(?:async\s+)?(?:function\b|\((?:[^()]|\([^()]*\))*\)\s*(?::\s*[^=;{]+?)?\s*=>|[\w$]+\s*=>)/g;
/** A class field initialised with a function literal (two-space indent: a class member). */
const arrowField =
  /^ {2}(?:(?:readonly|private|protected|public|override)\s+)*(#?[\w$]+)[?!]?\s*(?::[^\n]*?)?=\s*(?:async\s+)?(?:function\b|\([^\n]*?=>|[\w$]+\s*=>)/;
/** A local declared with a type (its `]` is the type's, not an element assignment). */
const typedLocal = /^\s*(?:export\s+)?(?:const|let|var)\s+[\w$]+\s*:/;
const paramProperty = /\b(?:readonly|public|private|protected)\s+#?[\w$]+\s*[?:]/;

async function* sources(dir: URL): AsyncGenerator<URL> {
  for await (const e of Deno.readDir(dir)) {
    const u = new URL(e.name + (e.isDirectory ? "/" : ""), dir);
    if (e.isDirectory) yield* sources(u);
    else if (e.name.endsWith(".ts")) yield u;
  }
}

/** The findings of one file's text (`path` as printed), allowed ones left out. */
export function scan(path: string, text: string): string[] {
  const found: string[] = [];
  const lines = text.split("\n");
  const lineOf = (index: number) => text.slice(0, index).split("\n").length;
  const isComment = (line: string) => /^\s*(\/\/|\*|\/\*)/.test(line);
  for (const m of text.matchAll(assigned)) {
    const n = lineOf(m.index);
    // A class member (`f: T["k"] = () => ...`) is the class scan's: a plain class field is
    // defined by the class's own initialiser, not made in the old generation.
    if (isComment(lines[n - 1]) || arrowField.test(lines[n - 1])) continue;
    if (typedLocal.test(lines[n - 1])) continue; // `const f: T["k"] = () => ...`: a local
    if (allowed.has(`${path} ${m[1]}`)) continue;
    found.push(`${path}:${n}: ${lines[n - 1].trim()}`);
  }
  // Classes with parameter properties: their arrow fields.
  let inClass = false, params = false;
  const fields: number[] = [];
  const endClass = () => {
    if (params) { for (const n of fields) found.push(`${path}:${n}: ${lines[n - 1].trim()}`); }
    inClass = params = false;
    fields.length = 0;
  };
  for (const [i, line] of lines.entries()) {
    if (/^(?:export\s+)?(?:abstract\s+)?class\s/.test(line)) {
      endClass();
      inClass = true;
    } else if (inClass && /^}/.test(line)) {
      endClass();
    } else if (inClass && /^ {2}constructor\(/.test(line)) {
      let sig = "";
      for (let j = i; j < lines.length; j++) {
        sig += lines[j] + "\n";
        if (/\)\s*(?:\{|:)/.test(lines[j])) break;
      }
      params = paramProperty.test(sig.replace(/^\s*(\/\/|\*|\/\*).*$/gm, ""));
    } else if (inClass && arrowField.test(line)) {
      fields.push(i + 1);
    }
  }
  endClass();
  return found;
}

Deno.test("source scan: what it finds and what it lets through", () => {
  const found = scan(
    "x.ts",
    [
      "function f(conn: C) {",
      "  conn.read = (p) => read(p);",
      "  this.writeFramed = async (p: Uint8Array): Promise<number> => 1;",
      "  obj.cb = function () {};",
      "  table[k] = (x) => x;",
      "  const ok = (p) => read(p);",
      "  conn.read = ok;",
      "  conn.read = read.bind(conn);",
      '  const g: UdpChannel["send"] = (d) => d;',
      "  // conn.read = (p) => p;",
      "  if (a.b === (c) => c) {}",
      "}",
      "class Leg {",
      "  #settle: (s: boolean) => void = () => {};",
      "  constructor(readonly host: string) {}",
      "}",
      "class Fine {",
      "  #sink = async (p: Uint8Array): Promise<void> => {};",
      '  onDatagram: UdpChannel["onDatagram"] = () => {};',
      "  constructor(host: string) {}",
      "}",
    ].join("\n"),
  );
  assertEquals(found.map((f) => f.split(":")[1]), ["2", "3", "4", "5", "14"]);
});

Deno.test("lib/ and services/ assign no function literal to a property per object", async () => {
  const found: string[] = [];
  const top = new URL("../", import.meta.url).pathname;
  for (const root of roots) {
    for await (const file of sources(new URL(root + "/", import.meta.url))) {
      found.push(...scan(file.pathname.slice(top.length), await Deno.readTextFile(file)));
    }
  }
  assertEquals(found, []);
});
