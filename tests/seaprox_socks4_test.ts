/**
 * SOCKS4 and SOCKS4a on seaprox's socks5:// listener (same port, the version byte decides),
 * against curl: 4 MiB each way byte-exact, the deny list on names and resolved addresses,
 * the connection limit, and the refusal (0x5B, logged) on a listener that requires a password.
 */

import { assert, assertEquals, assertMatch } from "./_assert.ts";
import { blockStreamSha256, randomBlock, run, sha256, startOrigin } from "./_util.ts";
import { portFor, startSeaproxService } from "./_seaprox.ts";

const curlBase = ["-sS", "--max-time", "30"];
const totalBytes = 4 << 20;
const seed = 17;

Deno.test("seaprox socks4: curl --socks4/--socks4a byte-exact, deny list, auth refusal", async (t) => {
  const origin = startOrigin();
  const denied = startOrigin();
  const sp = await startSeaproxService(
    ["socks5://127.0.0.1:0", "socks5://alice:s3cret@127.0.0.1:0"],
    ["--deny", `127.0.0.1:${denied.port}`],
  );
  const socks = portFor(sp, "socks5");
  const socksAuth = portFor(sp, "socks5-2");
  const upload = await Deno.makeTempFile();
  try {
    await t.step("curl --socks4: 4 MiB down and up, byte-exact", async () => {
      const down = await run("curl", [
        ...curlBase,
        "--socks4",
        `127.0.0.1:${socks}`,
        `http://127.0.0.1:${origin.port}/bytes/${totalBytes}?seed=${seed}`,
      ]);
      assertEquals(down.code, 0, down.stderr);
      assertEquals(down.raw.length, totalBytes);
      assertEquals(sha256(down.raw), blockStreamSha256(totalBytes, seed));

      const body = new Uint8Array(totalBytes);
      for (let o = 0; o < totalBytes; o += randomBlock.length) body.set(randomBlock, o);
      await Deno.writeFile(upload, body);
      const up = await run("curl", [
        ...curlBase,
        "--socks4",
        `127.0.0.1:${socks}`,
        "--data-binary",
        `@${upload}`,
        `http://127.0.0.1:${origin.port}/sha256`,
      ]);
      assertEquals(up.code, 0, up.stderr);
      assertEquals(JSON.parse(up.stdout), { sha256: sha256(body), bytes: totalBytes });
      await sp.waitFor(/connection closed.* proxy="socks4\[.*end=done/);
    });

    await t.step("curl --socks4a: the name is resolved by seaprox, byte-exact", async () => {
      const r = await run("curl", [
        ...curlBase,
        "--socks4a",
        `127.0.0.1:${socks}`,
        `http://localhost:${origin.port}/bytes/${totalBytes}?seed=${seed + 1}`,
      ]);
      assertEquals(r.code, 0, r.stderr);
      assertEquals(sha256(r.raw), blockStreamSha256(totalBytes, seed + 1));
      await sp.waitFor(/connection closed.* proxy="socks4a\[.*name\[localhost:\d+\].*end=done/);
    });

    await t.step(
      "the deny list holds for SOCKS4 (address) and SOCKS4a (name resolved)",
      async () => {
        for (const [flag, host] of [["--socks4", "127.0.0.1"], ["--socks4a", "localhost"]]) {
          const r = await run("curl", [
            ...curlBase,
            flag,
            `127.0.0.1:${socks}`,
            `http://${host}:${denied.port}/hello?id=x`,
          ]);
          assert(r.code !== 0, `${flag} to a denied destination must fail: ${r.stdout}`);
          assertMatch(r.stderr, /SOCKS4/i);
        }
        await sp.waitFor(/proxy="socks4\[.* end=dial-failed failure=not-allowed/);
        await sp.waitFor(
          /proxy="socks4a\[.*name\[localhost:.* end=dial-failed failure=not-allowed/,
        );
      },
    );

    await t.step("a listener with user:pass refuses SOCKS4 with 0x5B and a log line", async () => {
      const r = await run("curl", [
        ...curlBase,
        "--socks4",
        `127.0.0.1:${socksAuth}`,
        "-U",
        "alice",
        `http://127.0.0.1:${origin.port}/hello?id=x`,
      ]);
      assert(r.code !== 0, "SOCKS4 on a password listener must fail");
      assertMatch(r.stderr, /rejected|failed/i);
      const line = await sp.waitFor(/end=auth-failed failure=auth-required/);
      assertMatch(line, /requires a password, which SOCKS4 cannot carry/);
      assert(!line.includes("s3cret"));
    });
  } finally {
    await Deno.remove(upload);
    assertEquals(await sp.stop(), 0);
    await origin.close();
    await denied.close();
  }
});

Deno.test("seaprox socks4: the connection limit covers SOCKS4 clients", async () => {
  const sp = await startSeaproxService(["socks5://127.0.0.1:0"], ["--max-conns", "1"]);
  const socks = portFor(sp, "socks5");
  // A silent client holds the one slot (admitted at accept, before any handshake).
  const holder = await Deno.connect({ hostname: "127.0.0.1", port: socks });
  try {
    const r = await run("curl", [
      ...curlBase,
      "--socks4",
      `127.0.0.1:${socks}`,
      "http://127.0.0.1:9/",
    ]);
    assert(r.code !== 0, "over the limit must fail");
    await sp.waitFor(/connection closed.* end=limit/);
  } finally {
    holder.close();
    assertEquals(await sp.stop(), 0);
  }
});
