/**
 * Request heads of the standalone tunnel front across its two ways of taking them (issue 20):
 * a head that is all buffered is taken where it lies, without a promise; one that is not (split
 * across reads) or is bad goes the slow way, which waits for the rest or answers 400. Pipelined
 * requests that cross between the two must each reach the app once, in order, with their own
 * X-Forwarded-For, and their answers come back in order.
 */

import { assertEquals, assertMatch } from "./_assert.ts";
import { startTargetEcho } from "./_http.ts";
import { withAppTunnel } from "./_tunnel.ts";
import { within } from "./_util.ts";
import { BufferedReader, closeQuietly, writeAll } from "../lib/net/mod.ts";
import { getHeader, readResponseHead } from "../lib/http/mod.ts";

/** The next response on `r`: its status and its (Content-Length framed) body. */
async function nextResponse(r: BufferedReader): Promise<string> {
  const head = await within(readResponseHead(r), "a response head");
  const n = Number(getHeader(head.headers, "content-length") ?? "0");
  const body = n > 0 ? await within(r.readExact(n), "a response body") : new Uint8Array();
  return `${head.status} ${new TextDecoder().decode(body)}`;
}

Deno.test("tunnel front: pipelined heads split between a whole one and a partial one each reach the app once, in order", async () => {
  const app = startTargetEcho();
  try {
    await withAppTunnel(app.addr.port, async (port) => {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      const r = new BufferedReader(conn);
      const send = (s: string) => writeAll(conn, new TextEncoder().encode(s));
      try {
        // One whole head and the start of the next in one write: the first is answered
        // while the second waits for its rest.
        await send("GET /1 HTTP/1.1\r\nHost: app.test\r\n\r\nGET /2 HTTP/1.1\r\nHo");
        assertEquals(await nextResponse(r), "200 GET /1\n");
        // The rest of it, a whole one behind it, and the start of a third.
        await send("st: app.test\r\n\r\nGET /3 HTTP/1.1\r\nHost: app.test\r\n\r\nGET /4 HT");
        assertEquals(await nextResponse(r), "200 GET /2\n");
        assertEquals(await nextResponse(r), "200 GET /3\n");
        // A head cut inside its empty line, then one written a byte at a time.
        await send("TP/1.1\r\nHost: app.test\r\n\r");
        await send("\n");
        assertEquals(await nextResponse(r), "200 GET /4\n");
        for (const b of new TextEncoder().encode("GET /5 HTTP/1.1\r\nHost: app.test\r\n\r\n")) {
          await writeAll(conn, Uint8Array.of(b));
        }
        assertEquals(await nextResponse(r), "200 GET /5\n");
        assertEquals(app.heads.map((h) => h.target), ["/1", "/2", "/3", "/4", "/5"]);
        for (const h of app.heads) {
          assertEquals(getHeader(h.headers, "x-forwarded-for"), "127.0.0.1");
        }
      } finally {
        closeQuietly(conn);
      }
    });
  } finally {
    await app.stop(0);
  }
});

Deno.test("tunnel front: a malformed head behind a good one in the same read is answered 400 after the good one's answer", async () => {
  const app = startTargetEcho();
  try {
    await withAppTunnel(app.addr.port, async (port) => {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      const r = new BufferedReader(conn);
      try {
        await writeAll(
          conn,
          new TextEncoder().encode(
            "GET /ok HTTP/1.1\r\nHost: app.test\r\n\r\n" +
              "GET /bad HTTP/1.1\r\nHost: app.test\r\nno colon here\r\n\r\n",
          ),
        );
        assertEquals(await nextResponse(r), "200 GET /ok\n");
        assertMatch(await nextResponse(r), /^400 /);
        // Then the front closes: nothing more is read or answered.
        assertEquals(await within(r.fill(), "the front's close"), false);
        assertEquals(app.heads.map((h) => h.target), ["/ok"]);
      } finally {
        closeQuietly(conn);
      }
    });
  } finally {
    await app.stop(0);
  }
});
