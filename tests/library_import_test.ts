/**
 * warren is a library too: a program in a directory outside the checkout, with no config
 * pointing into it, imports lib/ by absolute file path. One snippet runs a yamux session
 * against the Go hashicorp/yamux peer (4 MiB through its sink, compared by SHA-256); another
 * type-checks and loads every public module (their npm packages are pinned in lib itself).
 */

import { assert, assertEquals } from "./_assert.ts";
import { goPeer } from "./_mux.ts";
import { nextWithin } from "./_util.ts";

const root = new URL("../", import.meta.url);

/** Write `files` into a fresh temp directory (outside the checkout) and run `deno args` there. */
async function runOutside(
  files: Record<string, string>,
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const dir = await Deno.makeTempDir({ prefix: "warren-outside-" });
  try {
    assert(!dir.startsWith(root.pathname), `${dir} is outside the checkout`);
    for (const [name, text] of Object.entries(files)) {
      await Deno.writeTextFile(`${dir}/${name}`, text);
    }
    const out = await new Deno.Command(Deno.execPath(), {
      args,
      cwd: dir,
      env: { NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const dec = new TextDecoder();
    return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Start the Go yamux peer as a server; its port and a stop function. */
async function goServer(): Promise<{ port: number; stop(): Promise<void> }> {
  const child = new Deno.Command(await goPeer(), {
    args: ["server", "127.0.0.1:0"],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!/listening \S+\n/.test(text)) {
    const r = await nextWithin(reader, `the Go server's "listening" line (got: ${text})`);
    if (r.done) throw new Error(`go server exited: ${text}`);
    text += r.value;
  }
  return {
    port: Number(/listening \S+:(\d+)/.exec(text)![1]),
    async stop() {
      child.kill("SIGKILL");
      await child.status;
      await reader.cancel();
    },
  };
}

const muxSnippet = (muxUrl: string) => `
import { Session } from ${JSON.stringify(muxUrl)};

const port = Number(Deno.args[0]);
const session = Session.client(await Deno.connect({ hostname: "127.0.0.1", port }));
const stream = await session.open({ data: new TextEncoder().encode("sink\\n") });
// 4 MiB of a deterministic pattern, hashed here and by the Go peer.
const data = new Uint8Array(4 << 20).map((_, i) => (i * 31 + (i >> 12)) & 0xff);
for (let off = 0; off < data.length; off += 65536) {
  const chunk = data.subarray(off, off + 65536);
  for (let n = 0; n < chunk.length;) n += await stream.write(chunk.subarray(n));
}
await stream.closeWrite();
let reply = "";
const buf = new Uint8Array(256);
for (let n; (n = await stream.read(buf)) !== null;) reply += new TextDecoder().decode(buf.subarray(0, n));
const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
const mine = Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
console.log(JSON.stringify({ reply: reply.trim(), expected: data.length + " " + mine }));
await session.close();
`;

Deno.test("library: lib/mux imported from outside the checkout runs a session with Go yamux", async () => {
  const go = await goServer();
  try {
    const muxUrl = new URL("lib/mux/mod.ts", root).href;
    const out = await runOutside({ "main.ts": muxSnippet(muxUrl) }, [
      "run",
      `--allow-net=127.0.0.1:${go.port}`,
      "main.ts",
      String(go.port),
    ]);
    assertEquals(out.code, 0, out.stderr);
    const { reply, expected } = JSON.parse(out.stdout) as { reply: string; expected: string };
    assertEquals(reply, expected, "the Go peer got every byte, in order");
  } finally {
    await go.stop();
  }
});

/** Every public module (deno.json's exports), as absolute file URLs. */
function publicModules(): string[] {
  const meta = JSON.parse(Deno.readTextFileSync(new URL("deno.json", root))) as {
    exports: Record<string, string>;
  };
  return Object.values(meta.exports).map((p) => new URL(p, root).href);
}

Deno.test("library: every public module type-checks and loads from outside the checkout", async () => {
  const modules = publicModules();
  assert(modules.length >= 9, "deno.json exports a map of subpaths");
  const snippet = modules.map((m, i) => `import * as m${i} from ${JSON.stringify(m)};`).join("\n") +
    `\nconsole.log([${
      modules.map((_, i) => `Object.keys(m${i}).length`).join(", ")
    }].join(" "));\n`;
  const checked = await runOutside({ "main.ts": snippet }, ["check", "main.ts"]);
  assertEquals(checked.code, 0, checked.stderr);
  const ran = await runOutside({ "main.ts": snippet }, ["run", "--allow-read", "main.ts"]);
  assertEquals(ran.code, 0, ran.stderr);
  const counts = ran.stdout.trim().split(" ").map(Number);
  assertEquals(counts.length, modules.length);
  assert(counts.every((n) => n > 0), `every module exports something: ${counts}`);
});
