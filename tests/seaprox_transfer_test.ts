/**
 * Bytes through every seaprox listener type (the service, spawned): half-close (the client
 * sends, shuts its write side, still reads the whole answer) and 256 MiB compared by SHA-256.
 */

import { assertEquals, assertMatch } from "./_assert.ts";
import { closeQuietly, dial, type Duplex, withPrefix, writeAll } from "../lib/net/mod.ts";
import { socks5Connect } from "../lib/socks5/mod.ts";
import { blockStreamSha256, drainHash } from "./_util.ts";
import {
  askAfterEof,
  blockSourceServer,
  echoAfterEofServer,
  portFor,
  readHttpHead,
  startSeaproxService,
} from "./_seaprox.ts";

const bigBytes = 256 << 20;
const bigSeed = 11;

/** Open a stream to `target` through listener `kind` of `sp`. */
type Opener = (target: number) => Promise<Duplex>;

Deno.test("seaprox transfer: half-close and 256 MiB through each listener type", async (t) => {
  const echo = echoAfterEofServer();
  const source = blockSourceServer(bigBytes, bigSeed);
  const sp = await startSeaproxService([
    `static://127.0.0.1:0?to=127.0.0.1:${echo.port}`,
    `static://127.0.0.1:0?to=127.0.0.1:${source.port}`,
    "socks5://127.0.0.1:0",
    "http://127.0.0.1:0",
  ]);
  const viaSocks: Opener = async (target) => {
    const c = await dial("127.0.0.1", portFor(sp, "socks5"));
    try {
      const { leftover } = await socks5Connect(c, { host: "127.0.0.1", port: target });
      return withPrefix(c, leftover);
    } catch (err) {
      closeQuietly(c);
      throw err;
    }
  };
  const viaConnect: Opener = async (target) => {
    const c = await dial("127.0.0.1", portFor(sp, "http"));
    try {
      await writeAll(
        c,
        new TextEncoder().encode(
          `CONNECT 127.0.0.1:${target} HTTP/1.1\r\nHost: 127.0.0.1:${target}\r\n\r\n`,
        ),
      );
      assertMatch(await readHttpHead(c), /^HTTP\/1\.1 200/);
      return c;
    } catch (err) {
      closeQuietly(c);
      throw err;
    }
  };
  const openers: [string, Opener][] = [
    [
      "static",
      (target) => dial("127.0.0.1", portFor(sp, target === echo.port ? "static" : "static-2")),
    ],
    ["socks5", viaSocks],
    ["http CONNECT", viaConnect],
  ];
  try {
    for (const [kind, open] of openers) {
      await t.step(`${kind}: client shuts write, still reads the whole answer`, async () => {
        const c = await open(echo.port);
        try {
          const question = "x".repeat(100_000) + "?";
          assertEquals(await askAfterEof(c, question), `got ${question.length}: ${question}`);
        } finally {
          closeQuietly(c);
        }
      });
      await t.step(`${kind}: 256 MiB download, SHA-256 equal`, async () => {
        const c = await open(source.port);
        try {
          const got = await drainHash(c);
          assertEquals(got.bytes, bigBytes);
          assertEquals(got.sha256, blockStreamSha256(bigBytes, bigSeed));
          await c.closeWrite();
        } finally {
          closeQuietly(c);
        }
      });
    }
  } finally {
    assertEquals(await sp.stop(), 0);
    await echo.close();
    await source.close();
  }
});
