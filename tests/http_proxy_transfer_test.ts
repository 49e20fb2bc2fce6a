/** 64 MiB through handleHttpProxy with curl, both ways, forward and CONNECT, by SHA-256. */

import { assertEquals } from "./_assert.ts";
import { startHttpProxy } from "./_http.ts";
import { blockStream, blockStreamSha256, run, sha256, startOrigin } from "./_util.ts";

const total = 64 << 20;

Deno.test("http proxy: 64 MiB download and upload through curl -x and -p -x", async () => {
  const origin = startOrigin();
  const proxy = startHttpProxy();
  const file = await Deno.makeTempFile({ prefix: "warren-http-upload-" });
  try {
    const f = await Deno.open(file, { write: true });
    for (const chunk of blockStream(total, 11)) await f.write(chunk);
    f.close();
    const px = `http://127.0.0.1:${proxy.addr.port}`;
    const want = blockStreamSha256(total, 4);
    for (const mode of [[], ["-p"]]) {
      const down = await run("curl", [
        "-sS",
        "--max-time",
        "120",
        ...mode,
        "-x",
        px,
        `http://127.0.0.1:${origin.port}/bytes/${total}?seed=4`,
      ]);
      assertEquals(down.code, 0, down.stderr);
      assertEquals([down.raw.length, sha256(down.raw)], [total, want], `download ${mode}`);
    }
    const upWant = { sha256: blockStreamSha256(total, 11), bytes: total };
    const uploads: [string, string[]][] = [
      ["content-length", []],
      ["chunked", ["-H", "Transfer-Encoding: chunked"]],
      ["connect", ["-p"]],
    ];
    for (const [name, extra] of uploads) {
      const up = await run("curl", [
        "-sS",
        "--max-time",
        "120",
        ...extra,
        "-x",
        px,
        "--data-binary",
        `@${file}`,
        `http://127.0.0.1:${origin.port}/sha256`,
      ]);
      assertEquals(up.code, 0, up.stderr);
      assertEquals(JSON.parse(up.stdout), upWant, `upload ${name}`);
    }
  } finally {
    await Deno.remove(file);
    await proxy.stop();
    await origin.close();
  }
});
