/**
 * Responses whose framing headers disagree, through handleHttpProxy (RFC 9112 §6.3, issue 16):
 * with both Content-Length and Transfer-Encoding, Transfer-Encoding decides, and the proxy
 * drops Content-Length so no client behind it can read the body the other way (a response
 * split that poisons the kept-alive connection).
 */

import { assertEquals } from "./_assert.ts";
import { rawExchange, startHttpProxy, startRawOrigin } from "./_http.ts";
import { BufferedReader, closeQuietly, dial, writeAll } from "../lib/net/mod.ts";
import { getHeader } from "../lib/http/mod.ts";

const enc = new TextEncoder();

Deno.test("http proxy: a response with Content-Length and chunked Transfer-Encoding loses Content-Length", async () => {
  // Content-Length 5 would end the body inside the chunk framing and leave "GET /smuggled"-like
  // bytes for the next response on the client's kept-alive connection.
  const origin = startRawOrigin(async (head, _r, conn) => {
    const body = head.target === "/both" ? "b\r\nhello world\r\n0\r\n\r\n" : "";
    await writeAll(
      conn,
      enc.encode(
        head.target === "/both"
          ? `HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n${body}`
          : "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
      ),
    );
    return true;
  });
  const proxy = startHttpProxy();
  const c = await dial("127.0.0.1", proxy.addr.port);
  try {
    const r = new BufferedReader(c);
    const port = origin.addr.port;
    const res = await rawExchange(c, r, `GET http://127.0.0.1:${port}/both HTTP/1.1\r\n\r\n`);
    assertEquals(getHeader(res.head.headers, "content-length"), undefined);
    assertEquals(getHeader(res.head.headers, "transfer-encoding"), "chunked");
    assertEquals(res.body, "b\r\nhello world\r\n0\r\n\r\n");
    // The connection is still in step: the next response is the next request's.
    const res2 = await rawExchange(c, r, `GET http://127.0.0.1:${port}/next HTTP/1.1\r\n\r\n`);
    assertEquals([res2.head.status, res2.body], [200, "ok"]);
  } finally {
    closeQuietly(c);
    await proxy.stop();
    await origin.stop();
  }
});

Deno.test("http proxy: an HTTP/1.0 client gets a de-chunked body without Content-Length", async () => {
  const origin = startRawOrigin(async (_head, _r, conn) => {
    await writeAll(
      conn,
      enc.encode(
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n" +
          "b\r\nhello world\r\n0\r\n\r\n",
      ),
    );
    return true;
  });
  const proxy = startHttpProxy();
  const c = await dial("127.0.0.1", proxy.addr.port);
  try {
    const r = new BufferedReader(c);
    const res = await rawExchange(
      c,
      r,
      `GET http://127.0.0.1:${origin.addr.port}/ HTTP/1.0\r\n\r\n`,
    );
    assertEquals(getHeader(res.head.headers, "content-length"), undefined);
    assertEquals(res.body, "hello world");
  } finally {
    closeQuietly(c);
    await proxy.stop();
    await origin.stop();
  }
});

Deno.test("http proxy: an HTTP/1.0 request with Transfer-Encoding is refused, not forwarded", async () => {
  // HTTP/1.0 has no transfer codings (RFC 9112 §6.1): a hop that reads this body by another
  // rule (until close, or not at all) than the next one would let bytes pass as a request.
  const origin = startRawOrigin(async (_head, _r, conn) => {
    await writeAll(conn, enc.encode("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
    return true;
  });
  const proxy = startHttpProxy();
  const c = await dial("127.0.0.1", proxy.addr.port);
  try {
    const r = new BufferedReader(c);
    const res = await rawExchange(
      c,
      r,
      `POST http://127.0.0.1:${origin.addr.port}/ HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n` +
        "5\r\nhello\r\n0\r\n\r\n",
      "POST",
    );
    assertEquals(res.head.status, 400);
    assertEquals(origin.heads.length, 0);
  } finally {
    closeQuietly(c);
    await proxy.stop();
    await origin.stop();
  }
});
