/**
 * After an answer of its own (an error: 404, 502, ...) the standalone tunnel front ends the
 * public connection as nginx and haproxy do: the answer, its FIN, then it reads and drops what
 * the client still sends until the client's EOF (bounded), and only then closes. A close with
 * a pipelined request still unread in the kernel's buffer is a reset, which can destroy the
 * answer before the client read it (RFC 9112 §9.6). On loopback Linux keeps an answer that
 * arrived readable even after a reset (and Deno reads the reset as an end), so the cases check
 * the close itself: each pipelines a request with a body behind the one that gets the error
 * answer (more than the front reads at once), reads the whole answer and the end, and then
 * sends the rest of the body, which the front must still take (after a reset that write fails).
 */

import { assertEquals, assertMatch } from "./_assert.ts";
import { startTunnel, withAppTunnel } from "./_tunnel.ts";
import { freePort, until, within } from "./_util.ts";
import { BufferedReader, closeQuietly, writeAll } from "../lib/net/mod.ts";
import { getHeader, readResponseHead } from "../lib/http/mod.ts";

const enc = new TextEncoder();

/** Bytes of the pipelined request's body sent before the answer is read, and after it. */
const bodyPartBytes = 64 * 1024;

/**
 * The fronts' linger in the cases that write after the answer: far beyond every wait here, so
 * the write after the FIN is taken however long a loaded box takes to make it (the default
 * 5 s could end first). Each case ends the connection itself.
 */
const front = { lingerMs: 600_000 };

/**
 * On a new public connection, `first` and a pipelined POST with half its body in one write;
 * then the answer to `first` (status and whole body), the front's end, and the body's second
 * half (taken and dropped by the lingering front), then the client's own end.
 */
async function errorThenPipelined(
  port: number,
  first: string,
  host = "app.test",
): Promise<{ status: number; body: string }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const r = new BufferedReader(conn);
  try {
    const pipelined = `POST /after HTTP/1.1\r\nHost: ${host}\r\n` +
      `Content-Length: ${2 * bodyPartBytes}\r\n\r\n${"b".repeat(bodyPartBytes)}`;
    // Not awaited before the reads: the front may leave it unread while the answer waits.
    const written = writeAll(conn, enc.encode(first + pipelined));
    const head = await within(readResponseHead(r), "the error answer's head");
    const n = Number(getHeader(head.headers, "content-length") ?? "-1");
    const body = new TextDecoder().decode(await within(r.readExact(n), "the answer's body"));
    assertEquals(await within(r.fill(), "the front's end"), false, "bytes after the answer");
    await within(written, "the pipelined request's first half");
    // The end was a FIN and the front still reads: the rest goes (a reset fails it).
    await within(writeAll(conn, new Uint8Array(bodyPartBytes)), "the body's second half");
    await conn.closeWrite();
    return { status: head.status, body };
  } finally {
    closeQuietly(conn);
  }
}

Deno.test("tunnel front linger: a 404 for an unknown host, a pipelined request behind it: the whole 404, then a clean end", async () => {
  const t = startTunnel({}, 0, front);
  try {
    const res = await errorThenPipelined(
      t.port,
      "GET /x HTTP/1.1\r\nHost: nobody.test\r\n\r\n",
      "nobody.test",
    );
    assertEquals(res.status, 404);
    assertMatch(res.body, /nobody\.test/);
  } finally {
    await t.close();
  }
});

Deno.test("tunnel front linger: a 502 for an app that refuses the dial (the pump's answer), a pipelined request behind it: the whole 502, then a clean end", async () => {
  // Nothing listens on the client's local port: each stream's dial is refused.
  await withAppTunnel(freePort(), async (port) => {
    for (
      const first of [
        // The front reads nothing more until the upgrade is answered: the pipelined bytes
        // wait in the kernel's buffer while the pump answers 502.
        "GET /ws HTTP/1.1\r\nHost: app.test\r\nConnection: upgrade\r\nUpgrade: foo\r\n\r\n",
        // A plain GET: the pipelined request may be read (and its body sent toward the
        // broken stream) while the pump answers.
        "GET /plain HTTP/1.1\r\nHost: app.test\r\n\r\n",
      ]
    ) {
      const res = await errorThenPipelined(port, first);
      assertEquals(res.status, 502, first);
      assertMatch(res.body, /app\.test/);
    }
  }, front);
});

/**
 * On a new connection to the front at `port`, a GET for an unknown host: the whole 404 and the
 * front's FIN; then `after` on the connection (still open on our side), then its close.
 */
async function notFoundThenFin(
  port: number,
  after?: (conn: Deno.TcpConn) => Promise<void>,
): Promise<void> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const r = new BufferedReader(conn);
  try {
    await writeAll(conn, enc.encode("GET / HTTP/1.1\r\nHost: nobody.test\r\n\r\n"));
    const head = await within(readResponseHead(r), "the 404");
    assertEquals(head.status, 404);
    await within(r.readExact(Number(getHeader(head.headers, "content-length"))), "its body");
    assertEquals(await within(r.fill(), "the front's FIN"), false);
    await after?.(conn);
  } finally {
    closeQuietly(conn);
  }
}

Deno.test("tunnel front linger: a client that sends nothing more after the error answer gets the answer and its FIN", async () => {
  const t = startTunnel();
  try {
    await notFoundThenFin(t.port);
  } finally {
    await t.close();
  }
});

Deno.test("tunnel front linger: a client that never ends after the error answer is closed once the linger is over", async () => {
  const t = startTunnel({}, 0, { lingerMs: 100 });
  try {
    await notFoundThenFin(t.port, async (conn) => {
      // The front drops what arrives while it lingers; once it closed, a write is answered
      // with a reset and the next one fails.
      await until("the front's close after its linger", async () => {
        try {
          await conn.write(new Uint8Array(1));
          return false;
        } catch {
          return true;
        }
      });
    });
  } finally {
    await t.close();
  }
});
