/**
 * Host and request-target handling of the standalone tunnel front (RFC 9112 §3.2, issue 16):
 * two Host fields, a Host with a non-numeric port, or an absolute-form target naming another
 * authority are answered 400 without reaching the app; an absolute-form target reaches the
 * app in origin form; nothing after a `Connection: close` request is forwarded; an HTTP/1.0
 * request with Transfer-Encoding is refused.
 */

import { assert, assertEquals, assertMatch } from "./_assert.ts";
import { startPythonEcho } from "./_echo_apps.ts";
import { startTargetEcho } from "./_http.ts";
import { rawSend, withAppTunnel } from "./_tunnel.ts";

const refused: [string, string][] = [
  ["two Host fields", "GET /a HTTP/1.1\r\nHost: app.test\r\nHost: internal.test\r\n\r\n"],
  ["a Host with a non-numeric port", "GET /a HTTP/1.1\r\nHost: app.test:abc\r\n\r\n"],
  [
    "an absolute-form target naming another host",
    "GET http://internal.admin/a HTTP/1.1\r\nHost: app.test\r\n\r\n",
  ],
  [
    "an absolute-form target naming another port",
    "GET http://app.test:8081/a HTTP/1.1\r\nHost: app.test:8080\r\n\r\n",
  ],
  [
    "an HTTP/1.0 request with Transfer-Encoding",
    "POST /a HTTP/1.0\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
  ],
];

for (const [what, request] of refused) {
  Deno.test(`tunnel front: ${what} is answered 400 and never reaches the app`, async () => {
    const app = startTargetEcho();
    try {
      await withAppTunnel(app.addr.port, async (port) => {
        const text = await rawSend(port, request);
        assertMatch(text, /^HTTP\/1\.1 400 /);
        assertEquals(app.heads.length, 0);
      });
    } finally {
      await app.stop(0);
    }
  });
}

Deno.test("tunnel front: an absolute-form target reaches the app in origin form", async () => {
  const app = await startPythonEcho();
  try {
    await withAppTunnel(app.port, async (port) => {
      const text = await rawSend(
        port,
        "GET http://APP.test/x?y=1 HTTP/1.1\r\nHost: app.test\r\n\r\n" +
          "GET http://app.test:80/z HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
      );
      assertMatch(text, /GET \/x\?y=1\|127\.0\.0\.1\|app\.test\n/);
      assertMatch(text, /GET \/z\|127\.0\.0\.1\|app\.test\n/);
      assert(!text.includes("http://"), text);
    });
  } finally {
    await app.stop();
  }
});

Deno.test("tunnel front: nothing after a Connection: close request is forwarded", async () => {
  const app = startTargetEcho();
  try {
    await withAppTunnel(app.addr.port, async (port) => {
      const text = await rawSend(
        port,
        "GET /first HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n" +
          "GET /second HTTP/1.1\r\nHost: app.test\r\n\r\n",
      );
      assertMatch(text, /^HTTP\/1\.1 200 OK\r\n[^]*GET \/first\n$/);
      assertEquals(app.heads.map((h) => h.target), ["/first"]);
    });
  } finally {
    await app.stop(0);
  }
});

Deno.test("tunnel front: nothing after an HTTP/1.0 request without keep-alive is forwarded", async () => {
  const app = startTargetEcho();
  try {
    await withAppTunnel(app.addr.port, async (port) => {
      await rawSend(
        port,
        "GET /first HTTP/1.0\r\nHost: app.test\r\n\r\nGET /second HTTP/1.1\r\nHost: app.test\r\n\r\n",
      );
      assertEquals(app.heads.map((h) => h.target), ["/first"]);
    });
  } finally {
    await app.stop(0);
  }
});
