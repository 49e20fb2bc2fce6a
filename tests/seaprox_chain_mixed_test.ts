/**
 * Chains of mixed hops (`--forward` repeated, like gost's `-F`): seaprox A sends every
 * outgoing connection through microsocks (SOCKS5), then tinyproxy (HTTP CONNECT), then a
 * seaprox link to B, which dials the destination. curl through A's SOCKS5 and HTTP
 * listeners, 4 MiB each way by SHA-256; a dead hop is named in A's log and answered 0x01 /
 * 502; a refusal behind the last hop keeps its reason (0x02 / 403 for B's deny list).
 */

import { assertEquals, assertMatch } from "./_assert.ts";
import { blockStreamSha256, freePort, randomBlock, run, sha256, startOrigin } from "./_util.ts";
import { portFor, startSeaproxService } from "./_seaprox.ts";
import { startMicrosocks, startTinyproxy } from "./_upstreams.ts";

const curlBase = ["-sS", "--max-time", "30"];
const totalBytes = 4 << 20;
const token = "chain-test-link-token-0123456789";

Deno.test("seaprox chain: socks5 -> http CONNECT -> link, byte-exact; failures name the hop", async (t) => {
  const origin = startOrigin();
  const denied = startOrigin();
  const ms = await startMicrosocks();
  const tp = await startTinyproxy();
  const b = await startSeaproxService(
    ["link://127.0.0.1:0"],
    ["--link-token", token, "--deny", `127.0.0.1:${denied.port}`],
  );
  const hops = [
    `socks5://127.0.0.1:${ms.port}`,
    `http://127.0.0.1:${tp.port}`,
    `link://127.0.0.1:${portFor(b, "link")}`,
  ];
  const a = await startSeaproxService(
    ["socks5://127.0.0.1:0", "http://127.0.0.1:0"],
    ["--link-token", token, ...hops.flatMap((h) => ["--forward", h])],
  );
  const upload = await Deno.makeTempFile();
  try {
    await a.waitFor(/msg="link up"/);
    const socks = `127.0.0.1:${portFor(a, "socks5")}`;
    const http = `http://127.0.0.1:${portFor(a, "http")}`;

    await t.step("4 MiB down and up through all three hops, byte-exact", async () => {
      const down = await run("curl", [
        ...curlBase,
        "--socks5-hostname",
        socks,
        `http://localhost:${origin.port}/bytes/${totalBytes}?seed=5`,
      ]);
      assertEquals(down.code, 0, down.stderr);
      assertEquals(sha256(down.raw), blockStreamSha256(totalBytes, 5));

      const body = new Uint8Array(totalBytes);
      for (let o = 0; o < totalBytes; o += randomBlock.length) body.set(randomBlock, o);
      body[0] ^= 0x5a; // not a multiple of the block: a reordering would show
      await Deno.writeFile(upload, body);
      const up = await run("curl", [
        ...curlBase,
        "-x",
        http,
        "--data-binary",
        `@${upload}`,
        `http://127.0.0.1:${origin.port}/sha256`,
      ]);
      assertEquals(up.code, 0, up.stderr);
      assertEquals(JSON.parse(up.stdout), { sha256: sha256(body), bytes: totalBytes });
      // Each hop really carried it: tinyproxy logged the CONNECT to B's link port.
      await tp.waitFor(new RegExp(`CONNECT 127\\.0\\.0\\.1:${portFor(b, "link")}`));
    });

    await t.step("a refusal behind the last hop keeps its reason: 0x02 and 403", async () => {
      const s = await run("curl", [
        ...curlBase,
        "--socks5",
        socks,
        `http://127.0.0.1:${denied.port}/hello`,
      ]);
      assertEquals(s.code, 97, s.stderr);
      assertMatch(s.stderr, /SOCKS5 connection to 127\.0\.0\.1\. \(2\)/); // reply 0x02
      const h = await run("curl", [
        ...curlBase,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-x",
        http,
        `http://127.0.0.1:${denied.port}/hello`,
      ]);
      assertEquals(h.stdout, "403", h.stderr);
      await a.waitFor(/failure=not-allowed .*error="hop 3\/3 link:\/\/127\.0\.0\.1:\d+: /);
    });
  } finally {
    await Deno.remove(upload);
    assertEquals(await a.stop(), 0);
    assertEquals(await b.stop(), 0);
    await tp.stop();
    await ms.stop();
    await origin.close();
    await denied.close();
  }
});

Deno.test("seaprox chain: a dead middle hop is named, 0x01 to SOCKS5 and 502 to HTTP", async () => {
  const origin = startOrigin();
  const ms = await startMicrosocks();
  const deadPort = freePort();
  const a = await startSeaproxService(
    ["socks5://127.0.0.1:0", "http://127.0.0.1:0"],
    ["--forward", `socks5://127.0.0.1:${ms.port}`, "--forward", `http://127.0.0.1:${deadPort}`],
  );
  try {
    const s = await run("curl", [
      ...curlBase,
      "--socks5",
      `127.0.0.1:${portFor(a, "socks5")}`,
      `http://127.0.0.1:${origin.port}/hello`,
    ]);
    assertEquals(s.code, 97, s.stderr);
    assertMatch(s.stderr, /SOCKS5 connection to 127\.0\.0\.1\. \(1\)/); // reply 0x01
    const h = await run("curl", [
      ...curlBase,
      "-o",
      "/dev/null",
      "-w",
      "%{http_code}",
      "-x",
      `http://127.0.0.1:${portFor(a, "http")}`,
      `http://127.0.0.1:${origin.port}/hello`,
    ]);
    assertEquals(h.stdout, "502", h.stderr);
    const line = await a.waitFor(/end=dial-failed failure=other/);
    assertMatch(line, new RegExp(`hop 2/2 http://127\\.0\\.0\\.1:${deadPort} unreachable`));
    // Hop 1 reached it and was refused: the cause is named too, but the failure is hop 2's.
    assertMatch(line, /unreachable: hop 1\/2 socks5:\/\/.*refused/);
  } finally {
    assertEquals(await a.stop(), 0);
    await ms.stop();
    await origin.close();
  }
});

Deno.test("seaprox chain: --proxy carries the first hop through an HTTP proxy (egress)", async () => {
  const origin = startOrigin();
  const tp = await startTinyproxy();
  const ms = await startMicrosocks();
  const b = await startSeaproxService(["link://127.0.0.1:0"], ["--link-token", token]);
  const a = await startSeaproxService(["socks5://127.0.0.1:0"], [
    "--link-token",
    token,
    "--proxy",
    `http://127.0.0.1:${tp.port}`,
    "--forward",
    `socks5://127.0.0.1:${ms.port}`,
    "--forward",
    `link://127.0.0.1:${portFor(b, "link")}`,
  ]);
  try {
    await a.waitFor(/msg="link up"/);
    const r = await run("curl", [
      ...curlBase,
      "--socks5-hostname",
      `127.0.0.1:${portFor(a, "socks5")}`,
      `http://localhost:${origin.port}/bytes/${totalBytes}?seed=8`,
    ]);
    assertEquals(r.code, 0, r.stderr);
    assertEquals(sha256(r.raw), blockStreamSha256(totalBytes, 8));
    // tinyproxy carried hop 1 (microsocks); microsocks carried hop 2 (B's link port).
    await tp.waitFor(new RegExp(`CONNECT 127\\.0\\.0\\.1:${ms.port} `));
    await ms.waitFor(new RegExp(`connected to 127\\.0\\.0\\.1:${portFor(b, "link")}`));
  } finally {
    assertEquals(await a.stop(), 0);
    assertEquals(await b.stop(), 0);
    await ms.stop();
    await tp.stop();
    await origin.close();
  }
});
