/** The default sink writes a turn's lines in one write: none lost, none reordered. */
import { assertEquals } from "./_assert.ts";

const logMod = new URL("../lib/log.ts", import.meta.url).href;

async function run(tail: string): Promise<{ code: number; lines: string[] }> {
  const script = `
    import { Logger } from ${JSON.stringify(logMod)};
    const log = new Logger("info", { svc: "t" });
    for (let i = 0; i < 2000; i++) log.info("line", { i });
    await new Promise((r) => setTimeout(r, 1));
    log.warn("after a turn", { n: 1 });
    ${tail}`;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--ext=ts", script],
    stdout: "null",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stderr);
  return { code: out.code, lines: text.split("\n").filter((l) => l !== "") };
}

function check(lines: string[], last: string[]): void {
  assertEquals(lines.length, 2001 + last.length);
  for (let i = 0; i < 2000; i++) {
    assertEquals(lines[i].replace(/^ts=\S+ /, ""), `level=info svc=t msg="line" i=${i}`);
  }
  assertEquals(lines[2000].replace(/^ts=\S+ /, ""), `level=warn svc=t msg="after a turn" n=1`);
  assertEquals(lines.slice(2001).map((l) => l.replace(/^ts=\S+ /, "")), last);
}

Deno.test("log: lines logged right before Deno.exit are written (unload flushes them)", async () => {
  const { code, lines } = await run(`log.error("bye", { code: 3 }); Deno.exit(3);`);
  assertEquals(code, 3);
  check(lines, [`level=error svc=t msg="bye" code=3`]);
});

Deno.test("log: a normal end writes every line, in order", async () => {
  const { code, lines } = await run(`log.info("end");`);
  assertEquals(code, 0);
  check(lines, [`level=info svc=t msg="end"`]);
});

Deno.test("log: the lines before an uncaught error or rejection are written before it ends the process", async () => {
  for (
    const tail of [
      `setTimeout(() => { log.error("dying", { why: "throw" }); throw new Error("boom"); }, 1);`,
      `setTimeout(async () => { log.error("dying", { why: "reject" }); await Promise.reject(new Error("boom")); }, 1);`,
    ]
  ) {
    const { code, lines } = await run(tail);
    assertEquals(code, 1);
    const logged = lines.filter((l) => l.startsWith("ts="));
    check(logged, [
      `level=error svc=t msg="dying" why=${tail.includes("reject") ? "reject" : "throw"}`,
    ]);
  }
});
