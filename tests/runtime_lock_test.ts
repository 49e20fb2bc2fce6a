/**
 * The image's lockfile (tools/runtime_lock.ts): deno.lock without the packages only tests
 * import. A copy of what the image holds caches every entry point against it with --frozen
 * (so it lacks nothing and pins every version as committed) and installs no test package.
 */
import { assert, assertEquals } from "./_assert.ts";
import { type DenoLock, npmSpecifiers, pruneLock } from "../tools/runtime_lock.ts";
import { run } from "./_util.ts";

const repo = new URL("../", import.meta.url).pathname;
const testOnly = [
  "fast-check",
  "playwright-core",
  "socks",
  "pure-rand",
  "ip-address",
  "smart-buffer",
];
const nameOf = (key: string) => key.slice(0, key.lastIndexOf("@"));

Deno.test("runtime lock: npm specifiers are read without subpaths", () => {
  const text = `import a from "npm:hono@4.13.19";\nimport b from "npm:uplot@1.6.32/dist/x.js";\n` +
    `import c from "npm:@scope/pkg@1.2.3";`;
  assertEquals([...npmSpecifiers(text)].sort(), [
    "npm:@scope/pkg@1.2.3",
    "npm:hono@4.13.19",
    "npm:uplot@1.6.32",
  ]);
});

Deno.test("runtime lock: prunes to the kept specifiers and what they reach", () => {
  const lock: DenoLock = {
    version: "5",
    specifiers: { "npm:a@1.0.0": "1.0.0", "npm:t@2.0.0": "2.0.0" },
    npm: {
      "a@1.0.0": { integrity: "x", dependencies: ["b"] },
      "b@1.0.0": { integrity: "x", dependencies: ["c@2.0.0"] },
      "c@1.0.0": { integrity: "x" },
      "c@2.0.0": { integrity: "x" },
      "t@2.0.0": { integrity: "x", dependencies: ["c@1.0.0"] },
    },
    workspace: { dependencies: ["npm:a@1.0.0"] },
  };
  const pruned = pruneLock(lock, new Set(["npm:a@1.0.0"]));
  assertEquals(pruned.specifiers, { "npm:a@1.0.0": "1.0.0" });
  assertEquals(Object.keys(pruned.npm!).sort(), ["a@1.0.0", "b@1.0.0", "c@2.0.0"]);
  assertEquals(pruned.workspace, lock.workspace);
});

Deno.test("runtime lock: the image's files cache against it, frozen, with no test package", async () => {
  const dir = await Deno.makeTempDir({ prefix: "warren-runtime-lock-" });
  try {
    const copy = await run("sh", [
      "-c",
      `cd "$1" && tar -c deno.json deno.lock mod.ts lib services deploy tools | tar -x -C "$2"`,
      "sh",
      repo,
      dir,
    ]);
    assertEquals(copy.code, 0, copy.stderr);
    const deno = Deno.execPath();
    const prune = await run("sh", [
      "-c",
      `cd "$1" && "$2" run --allow-read=. --allow-write=deno.lock tools/runtime_lock.ts`,
      "sh",
      dir,
      deno,
    ]);
    assertEquals(prune.code, 0, prune.stderr);
    const lock = JSON.parse(await Deno.readTextFile(`${dir}/deno.lock`)) as DenoLock;
    const kept = Object.keys(lock.npm ?? {}).map(nameOf);
    assertEquals(kept.filter((n) => testOnly.includes(n)), [], `kept ${kept}`);
    for (const n of ["hono", "prom-client", "smol-toml"]) assert(kept.includes(n), n);
    const cache = await run("sh", [
      "-c",
      `cd "$1" && "$2" cache --frozen services/*.ts deploy/*.ts`,
      "sh",
      dir,
      deno,
    ]);
    assertEquals(cache.code, 0, `deno cache --frozen against the runtime lock:\n${cache.stderr}`);
    const installed = [...Deno.readDirSync(`${dir}/node_modules/.deno`)].map((e) => e.name);
    assert(installed.some((n) => n.startsWith("hono@")), installed.join(" "));
    assertEquals(installed.filter((n) => testOnly.some((t) => n.startsWith(`${t}@`))), []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
