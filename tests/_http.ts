/** Helpers for the HTTP tests: an HTTP proxy built on lib/http, served on a free port. */

import { BufferedReader, dial, serve, type Server, writeAll } from "../lib/net/mod.ts";
import {
  copyBody,
  handleHttpProxy,
  type HttpExchange,
  type HttpProxyOptions,
  readRequestHead,
  readResponseHead,
  type RequestHead,
  responseBodyFraming,
  type ResponseHead,
} from "../lib/http/mod.ts";

/** An HTTP proxy on 127.0.0.1:0 dialling directly; every exchange is recorded. */
export function startHttpProxy(
  opts: Partial<HttpProxyOptions> = {},
): Server & { exchanges: HttpExchange[] } {
  const exchanges: HttpExchange[] = [];
  const server = serve(
    Deno.listen({ hostname: "127.0.0.1", port: 0 }),
    (conn, ctx) =>
      handleHttpProxy(conn, {
        connect: (dest) => dial(dest.host, dest.port, { timeoutMs: 5000, prefer: "ipv4" }),
        handshakeDone: ctx.handshakeDone,
        signal: ctx.signal,
        onExchange: (e) => exchanges.push(e),
        ...opts,
      }),
    { handshakeTimeoutMs: 10_000 },
  );
  return Object.assign(server, { exchanges });
}

/** Handles one request on a raw origin; returns false to close the connection. */
export type RawOriginHandler = (
  head: RequestHead,
  r: BufferedReader,
  conn: Deno.Conn,
) => Promise<boolean>;

/**
 * A hand-written HTTP origin on lib/http's codec, for answers a real server will not give
 * (chunked with trailers, close-delimited, broken heads, silence). Records every head.
 */
export function startRawOrigin(handler: RawOriginHandler): Server & { heads: RequestHead[] } {
  const heads: RequestHead[] = [];
  const server = serve(Deno.listen({ hostname: "127.0.0.1", port: 0 }), async (conn, ctx) => {
    ctx.handshakeDone();
    const r = new BufferedReader(conn);
    while (true) {
      const head = await readRequestHead(r);
      if (!head) return;
      heads.push(head);
      if (!(await handler(head, r, conn))) return;
    }
  }, { handshakeTimeoutMs: 0 });
  return Object.assign(server, { heads });
}

/**
 * A raw origin that answers every request with `METHOD target\n` (Content-Length framed) and
 * never closes by itself: which requests reached it, and in which order, is read off the
 * answers and its `heads`.
 */
export function startTargetEcho(): Server & { heads: RequestHead[] } {
  return startRawOrigin(async (head, _r, conn) => {
    const body = `${head.method} ${head.target}\n`;
    await writeAll(
      conn,
      new TextEncoder().encode(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n${body}`),
    );
    return true;
  });
}

/** Send raw bytes on `conn`, then read one response (head + body) from the same connection. */
export async function rawExchange(
  conn: Deno.Conn,
  r: BufferedReader,
  request: string | Uint8Array,
  method = "GET",
): Promise<{ head: ResponseHead; body: string }> {
  await writeAll(conn, typeof request === "string" ? new TextEncoder().encode(request) : request);
  const head = await readResponseHead(r);
  const parts: Uint8Array[] = [];
  await copyBody(r, conn, responseBodyFraming(head, method), (p) => {
    parts.push(p.slice());
    return Promise.resolve();
  });
  const body = new TextDecoder().decode(
    parts.reduce((acc, p) => {
      const out = new Uint8Array(acc.length + p.length);
      out.set(acc);
      out.set(p, acc.length);
      return out;
    }, new Uint8Array()),
  );
  return { head, body };
}
