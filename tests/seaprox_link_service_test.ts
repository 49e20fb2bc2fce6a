/**
 * Two seaprox processes joined by a link: node A's SOCKS5 listener sends every connection
 * over `--via link://B`, node B dials the destination. Real curl as the client.
 */

import { assertEquals, assertMatch } from "./_assert.ts";
import { run, startOrigin } from "./_util.ts";
import { portFor, startSeaproxService } from "./_seaprox.ts";

Deno.test("seaprox service: curl via A (SOCKS5) -> link -> B reaches the origin", async () => {
  const origin = startOrigin();
  const b = await startSeaproxService(["link://127.0.0.1:0"], ["--link-token", "link-s3cret"]);
  try {
    const a = await startSeaproxService(["socks5://127.0.0.1:0"], [
      "--via",
      `link://127.0.0.1:${portFor(b, "link")}`,
      "--link-token",
      "link-s3cret",
    ]);
    try {
      const socks = `socks5h://127.0.0.1:${portFor(a, "socks5")}`;
      const ok = await run("curl", [
        "-sS",
        "-x",
        socks,
        `http://127.0.0.1:${origin.port}/hello?id=7`,
      ]);
      assertEquals(ok.stdout, "hello 7");
      // A refusal at B comes back to the SOCKS client as "connection refused" (reply 0x05).
      const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const closedPort = l.addr.port;
      l.close();
      const refused = await run("curl", ["-sS", "-x", socks, `http://127.0.0.1:${closedPort}/`]);
      assertEquals(refused.code, 97);
      assertMatch(refused.stderr, /refused|reply 5|connection/i);
      assertEquals(await a.stop(), 0);
    } finally {
      await a.stop();
    }
  } finally {
    assertEquals(await b.stop(), 0);
    await origin.close();
  }
});

Deno.test("seaprox service: link:// without a token is a usage error", async () => {
  const r = await run(Deno.execPath(), [
    "run",
    "-A",
    new URL("../services/seaprox.ts", import.meta.url).pathname,
    "--listen",
    "link://127.0.0.1:0",
  ]);
  assertEquals(r.code, 2);
  assertMatch(r.stderr, /--link-token/);
});
