/**
 * Upgrade requests through the standalone tunnel front: the connection becomes opaque bytes
 * only after the app's 101 naming a protocol the client offered. An app that answers an
 * Upgrade request normally (Python's http.server, nginx, Go's net/http) keeps getting parsed
 * requests: a second request's forged X-Forwarded-For and a third request's other Host never
 * reach it unchecked (issue 16, "Upgrade smuggling through the tunnel front").
 */

import { assert, assertEquals, assertMatch } from "./_assert.ts";
import { type EchoApp, startGoEcho, startNginxEcho, startPythonEcho } from "./_echo_apps.ts";
import { startRawOrigin } from "./_http.ts";
import { rawSend, withAppTunnel } from "./_tunnel.ts";
import { writeAll } from "../lib/net/mod.ts";

const smuggle = "GET /first HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\n" +
  "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n" +
  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n" +
  "GET /second HTTP/1.1\r\nHost: app.test\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n" +
  "GET /third HTTP/1.1\r\nHost: internal.test\r\nConnection: close\r\n\r\n";

const apps: [string, () => Promise<EchoApp>][] = [
  ["python http.server", startPythonEcho],
  ["nginx", startNginxEcho],
  ["Go net/http", startGoEcho],
];

for (const [name, start] of apps) {
  Deno.test(`tunnel front: an Upgrade the app does not take keeps requests parsed (${name})`, async () => {
    const app = await start();
    try {
      await withAppTunnel(app.port, async (port) => {
        const text = await rawSend(port, smuggle);
        assertMatch(text, /GET \/first\|127\.0\.0\.1\|app\.test/);
        // The second request got the front's X-Forwarded-For, not the forged one.
        assertMatch(text, /GET \/second\|127\.0\.0\.1\|app\.test/);
        assert(!text.includes("6.6.6.6"), text);
        // The third names a host nobody registered: the front answers 404 itself.
        assert(!text.includes("/third"), text);
        assertMatch(
          text,
          /HTTP\/1\.1 404 [^\r]*\r\n[^]*No tunnel is registered for host <b>internal\.test/,
        );
      });
    } finally {
      await app.stop();
    }
  });
}

Deno.test("tunnel front: a 101 for a protocol the client did not offer is answered 502", async () => {
  const origin = startRawOrigin(async (_head, _r, conn) => {
    await writeAll(
      conn,
      new TextEncoder().encode(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\nRAW",
      ),
    );
    return true;
  });
  try {
    await withAppTunnel(origin.addr.port, async (port) => {
      const text = await rawSend(port, smuggle);
      assertMatch(text, /^HTTP\/1\.1 502 /);
      assert(!text.includes("101"), text);
      assert(!text.includes("RAW"), text);
      // Nothing after the Upgrade request reached the app.
      assertEquals(origin.heads.map((h) => h.target), ["/first"]);
    });
  } finally {
    await origin.stop(0);
  }
});

Deno.test("tunnel front: after the app's 101 the bytes pass untouched both ways", async () => {
  const origin = startRawOrigin(async (_head, r, conn) => {
    await writeAll(
      conn,
      new TextEncoder().encode(
        "HTTP/1.1 100 Continue\r\n\r\n" +
          "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo/1\r\nConnection: Upgrade\r\n\r\n",
      ),
    );
    // Echo everything after the switch, bytes read ahead included, until the client ends.
    const rest = r.takeBuffered();
    if (rest.length) await writeAll(conn, rest);
    const buf = new Uint8Array(4096);
    while (true) {
      const n = await conn.read(buf);
      if (n === null) break;
      await writeAll(conn, buf.subarray(0, n));
    }
    await conn.closeWrite();
    return false;
  });
  try {
    await withAppTunnel(origin.addr.port, async (port) => {
      const text = await rawSend(
        port,
        "GET /up HTTP/1.1\r\nHost: app.test\r\nConnection: upgrade\r\nUpgrade: echo/1\r\n\r\n" +
          "NOT A REQUEST\r\n\r\nGET /x HTTP/1.1\r\nHost: other.test\r\n\r\n",
      );
      assertMatch(text, /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 101 /);
      assert(
        text.endsWith("\r\n\r\nNOT A REQUEST\r\n\r\nGET /x HTTP/1.1\r\nHost: other.test\r\n\r\n"),
      );
      assertEquals(origin.heads.map((h) => h.target), ["/up"]);
    });
  } finally {
    await origin.stop(0);
  }
});
