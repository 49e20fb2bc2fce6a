/**
 * `deno task demo` (services/demo.ts): every row ok with the table's columns, the README's
 * block the same output once numbers are masked (so the README cannot drift), and `--serve`:
 * every printed command works when run, every status page answers, SIGINT stops it cleanly.
 */

import { assert, assertEquals, assertMatch } from "./_assert.ts";
import { nextWithin, run, within } from "./_util.ts";

const demo = new URL("../services/demo.ts", import.meta.url).pathname;
const readme = new URL("../README.md", import.meta.url).pathname;

/** The rows the demo prints, in order: every service's paths. */
const paths = [
  "seaprox static",
  "seaprox socks5",
  "seaprox http CONNECT",
  "seaprox http forward",
  "seaprox link",
  "depot",
  "tunnel http",
  "tunnel websocket",
  "fusion",
];

/** The output's shape: secrets and numbers (ports, times, sizes) masked, spaces as one. */
const shape = (text: string) =>
  text.trim().split("\n").map((l) =>
    l.replace(/\b[0-9a-f]{32}\b/g, "SECRET").replace(/\d+(\.\d+)?/g, "N").replace(/ +/g, " ")
      .trim()
  );

/** The fenced blocks of the README's demo section whose first line starts with `first`. */
function readmeBlock(first: RegExp): string {
  const text = Deno.readTextFileSync(readme);
  const section = text.slice(text.indexOf("## The demo"));
  for (const m of section.matchAll(/```text\n([\s\S]*?)```/g)) {
    if (first.test(m[1])) return m[1];
  }
  throw new Error(`README's demo section has no block starting ${first}`);
}

/** The table's rows (between the header and the blank line after it). */
function tableRows(out: string): string[][] {
  const lines = out.split("\n");
  const head = lines.findIndex((l) => /^path\s/.test(l));
  assert(head >= 0, `no table header in:\n${out}`);
  assertEquals(lines[head].split(/\s+/), ["path", "through", "time", "bytes", "ok"]);
  const end = lines.indexOf("", head);
  return lines.slice(head + 1, end).map((l) => l.split(/\s{2,}/));
}

Deno.test("demo: every path ok, the table's columns, the README shows the same output", async () => {
  const r = await run(Deno.execPath(), ["run", "-A", demo]);
  assertEquals(r.code, 0, r.stdout + r.stderr);
  const rows = tableRows(r.stdout);
  assertEquals(rows.map((row) => row[0]), paths, r.stdout);
  for (const row of rows) {
    assertEquals(row.length, 5, `five columns: ${row.join(" | ")}`);
    assertMatch(row[2], /^\d+ ms$/);
    assertEquals(row[3], "4.00 MiB", `${row[0]} carried the 4 MiB`);
    assertEquals(row[4], "ok", `${row[0]}: ${row.join(" | ")}`);
  }
  assertMatch(r.stdout, /\nall checks passed: 9 paths in [\d.]+ s, through seaprox .*fusion\n$/);
  assertEquals(shape(readmeBlock(/^warren demo:/)), shape(r.stdout), "README demo block");
});

Deno.test("demo: passes with only the image's permissions (its default command, not -A)", async () => {
  // The Dockerfile's last CMD runs the demo: the same arguments, from this checkout.
  const dockerfile = Deno.readTextFileSync(new URL("../Dockerfile", import.meta.url));
  const cmd = JSON.parse([...dockerfile.matchAll(/^CMD (\[.*\])$/gm)].at(-1)![1]) as string[];
  assertEquals(cmd[0], "deno");
  assert(!cmd.includes("-A") && cmd.includes("services/demo.ts"), `${cmd}`);
  const args = cmd.slice(1).filter((a) => a !== "--cached-only")
    .map((a) => a === "services/demo.ts" ? demo : a);
  const r = await run(Deno.execPath(), args);
  assertEquals(r.code, 0, r.stdout + r.stderr);
  assertMatch(r.stdout, /\nall checks passed: 9 paths/);
});

/** Read `stream` until `marker` appears; the text so far. The rest keeps being drained. */
async function readUntil(stream: ReadableStream<Uint8Array>, marker: string) {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes(marker)) {
    const { value, done } = await nextWithin(reader, `the demo to print ${JSON.stringify(marker)}`);
    if (done) break;
    text += value;
  }
  const rest = (async () => {
    let tail = "";
    for (let r = await reader.read(); !r.done; r = await reader.read()) tail += r.value;
    return tail;
  })();
  return { text, rest };
}

Deno.test("demo --serve: the printed commands work, the status pages answer, SIGINT stops all", async () => {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", demo, "--serve"],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  const { text, rest } = await readUntil(child.stdout, "ready; Ctrl-C stops everything");
  try {
    assertMatch(text, /all checks passed: 9 paths/, text);
    // The indented lines under `title`, up to the blank line, as [name, value].
    const section = (title: string) => {
      const lines = text.slice(text.indexOf(title)).split("\n").slice(1);
      return lines.slice(0, lines.indexOf("")).map((l) => l.trim().split(/\s{2,}/));
    };
    const commands = section("try them");
    assertEquals(commands.map((c) => c[0]), [
      "seaprox static",
      "seaprox socks5",
      "seaprox http",
      "seaprox http CONNECT",
      "seaprox link",
      "depot",
      "tunnel http",
      "tunnel websocket",
      "fusion",
    ]);
    // Run as pasted into a shell; `deno` is the one running this test.
    const path = `${Deno.execPath().replace(/\/[^/]+$/, "")}:${Deno.env.get("PATH") ?? ""}`;
    for (const [service, command] of commands) {
      const r = await run("sh", ["-c", command], { env: { PATH: path } });
      assertEquals(r.code, 0, `${service}: ${command}\n${r.stderr}`);
      assertMatch(
        r.stdout,
        /^hello (from the origin|over a websocket)\n$/,
        `${service}: ${command}`,
      );
    }
    const pages = section("live status pages");
    assertEquals(pages.length, 8, text);
    for (const [name, url] of pages) {
      const health = await fetch(new URL("healthz", url));
      assertEquals(await health.text(), "ok\n", name);
      const status = await fetch(new URL("status", url));
      assertEquals(status.status, 200, name);
      assert(typeof await status.json() === "object", `${name}: /status is JSON`);
      const page = await fetch(url);
      assertEquals(page.status, 200, name);
      await page.body?.cancel();
    }
  } finally {
    child.kill("SIGINT");
  }
  const status = await within(child.status, "the demo to exit after SIGINT");
  const tail = await within(rest, "the rest of the demo's output");
  assertEquals(status.code, 0, `exit after SIGINT\n${tail}\n${await stderr}`);
  assertEquals(tail.trim(), "stopped");
  assertEquals((await stderr).trim(), "", "nothing on stderr");
  // The README's --serve block is this run's output, once numbers and secrets are masked.
  const served = text.slice(text.indexOf("try them")) + tail;
  assertEquals(shape(readmeBlock(/^try them/)), shape(served), "README --serve block");
});
