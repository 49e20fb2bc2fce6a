import { assertEquals, assertMatch } from "./_assert.ts";
import { run } from "./_util.ts";

Deno.test("seaprox demo: `deno task demo` passes every check and exits 0", async () => {
  const demo = new URL("../services/demo.ts", import.meta.url).pathname;
  const r = await run(Deno.execPath(), ["run", "-A", demo]);
  assertEquals(r.code, 0, r.stdout + r.stderr);
  assertMatch(r.stdout, /all checks passed/);
  assertEquals(r.stdout.match(/^ok /gm)?.length, 4, r.stdout);
});
