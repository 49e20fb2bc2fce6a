/**
 * `serveHttp()`: a small HTTP/1.1 server for fetch handlers (the `--metrics`, `--status` and
 * `--admin` listeners), on lib/net's `serve()` loop instead of `Deno.serve`: a connection
 * cap, a head timer, a deadline for the whole exchange and a body limit, so partial requests
 * cannot pile up, and an fd shortage only pauses the accept loop instead of ending the
 * process (`Deno.serve` dies on EMFILE). One request per connection (`Connection: close`):
 * enough for scrapes, a status page and an admin API.
 * @module
 */

import { type Logger, silentLogger } from "../log.ts";
import { BufferedReader } from "../net/reader.ts";
import { closeQuietly, writeAll } from "../net/duplex.ts";
import { errorMessage } from "../net/errors.ts";
import { defaultHandshakeTimeoutMs, formatAddr, serve, type Server } from "../net/serve.ts";
import { copyChunked, copyExact, requestBodyFraming } from "./body.ts";
import {
  encodeLatin1,
  fieldNameIs,
  getHeader,
  HttpError,
  readRequestHead,
  statusForHttpError,
} from "./head.ts";
import { simpleResponse, statusText } from "./response.ts";

/** Default cap on connections of one such listener (scrapers, a page, an admin client). */
export const defaultHttpMaxConns = 64;
/** Default time from accept to the whole request (head and body) having arrived. */
export const defaultHttpRequestTimeoutMs = defaultHandshakeTimeoutMs;
/** Default time from accept to the response having been written. */
export const defaultHttpExchangeTimeoutMs = 30_000;
/** Default largest request body (admin JSON). */
export const defaultHttpMaxBodyBytes = 1 << 20;
const maxHeadBytes = 16 * 1024;

/** Answers one request; `info.remoteAddr` as `Deno.serve` gives it (Hono's `c.env`). */
export type HttpHandler = (
  req: Request,
  info: { remoteAddr: Deno.NetAddr },
) => Response | Promise<Response>;

/** Options of {@linkcode serveHttp}. */
export interface HttpServeOptions {
  /** Connections at once; more are accepted and closed. @default 64 */
  maxConns?: number;
  /** The request (head and body) must arrive within this, else the connection is closed. @default 10000 */
  requestTimeoutMs?: number;
  /** The whole exchange, response written, must end within this. @default 30000 */
  exchangeTimeoutMs?: number;
  /** Larger request bodies are answered 413. @default 1 MiB */
  maxBodyBytes?: number;
  log?: Logger;
}

/**
 * Serve `handler` on `listener` (see the module doc). Returns lib/net's `Server`: its stats
 * count refusals at the cap and head timeouts, and it is in `liveServers` like every listener.
 *
 * @example
 * ```ts
 * import { serveHttp } from "./server.ts";
 * const server = serveHttp(Deno.listen({ hostname: "127.0.0.1", port: 0 }), () =>
 *   new Response("ok\n"));
 * const res = await fetch(`http://127.0.0.1:${server.addr.port}/`);
 * console.assert((await res.text()) === "ok\n");
 * await server.stop();
 * ```
 */
export function serveHttp(
  listener: Deno.Listener<Deno.Conn, Deno.NetAddr>,
  handler: HttpHandler,
  opts: HttpServeOptions = {},
): Server {
  const log = opts.log ?? silentLogger;
  const exchangeMs = opts.exchangeTimeoutMs ?? defaultHttpExchangeTimeoutMs;
  const maxBody = opts.maxBodyBytes ?? defaultHttpMaxBodyBytes;
  return serve(listener, async (conn, ctx) => {
    // serve() closes the connection when this returns; the deadline closes it earlier.
    const deadline = setTimeout(() => closeQuietly(conn), exchangeMs);
    try {
      const req = await readRequest(conn, listener.addr, maxBody);
      ctx.handshakeDone();
      if (req instanceof Uint8Array) return await writeAll(conn, req);
      if (req === null) return;
      let res: Response;
      try {
        res = await handler(req, { remoteAddr: conn.remoteAddr as Deno.NetAddr });
      } catch (err) {
        ctx.log.warn("http handler failed", { remote: ctx.remote, error: errorMessage(err) });
        res = new Response("internal error\n", { status: 500 });
      }
      await writeAll(conn, await serializeResponse(res, req.method === "HEAD"));
    } finally {
      clearTimeout(deadline);
    }
  }, {
    maxConns: opts.maxConns ?? defaultHttpMaxConns,
    handshakeTimeoutMs: opts.requestTimeoutMs ?? defaultHttpRequestTimeoutMs,
    log,
  });
}

/**
 * The request on `conn`, null when the peer closed before sending one, or the bytes of the
 * error response a malformed, oversize or truncated request gets.
 */
async function readRequest(
  conn: Deno.Conn,
  local: Deno.NetAddr,
  maxBody: number,
): Promise<Request | Uint8Array | null> {
  const r = new BufferedReader(conn);
  try {
    const head = await readRequestHead(r, { maxHeadBytes });
    if (head === null) return null;
    const framing = requestBodyFraming(head);
    const parts: Uint8Array[] = [];
    let size = 0;
    const sink = (p: Uint8Array): Promise<void> => {
      size += p.length;
      if (size > maxBody) throw new BodyTooLarge();
      parts.push(p.slice());
      return Promise.resolve();
    };
    if (framing.kind === "length") {
      if (framing.length > maxBody) throw new BodyTooLarge();
      await copyExact(r, conn, framing.length, sink);
    } else if (framing.kind === "chunked") await copyChunked(r, conn, sink, false);
    // Origin form only, and a Host that is a host (no path or userinfo to shift the URL).
    const host = getHeader(head.headers, "host") ?? formatAddr(local);
    if (!head.target.startsWith("/") || !/^[\w.:\[\]-]+$/.test(host)) {
      throw new HttpError("bad request target or Host");
    }
    const url = new URL(`http://${host}${head.target}`);
    const headers = new Headers();
    for (const [k, v] of head.headers) headers.append(k, v);
    const body = head.method === "GET" || head.method === "HEAD" || size === 0
      ? undefined
      : concat(parts, size);
    return new Request(url, { method: head.method, headers, body });
  } catch (err) {
    if (err instanceof BodyTooLarge) return simpleResponse(413, "request body too large\n");
    if (err instanceof HttpError) {
      const status = statusForHttpError(err);
      return status === undefined ? null : simpleResponse(status, `${err.message}\n`);
    }
    // new URL / new Headers / new Request refused a field the head parser let through.
    if (err instanceof TypeError) return simpleResponse(400, "bad request\n");
    throw err;
  }
}

class BodyTooLarge extends Error {}

function concat(parts: Uint8Array[], size: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(size);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** Status line, the handler's fields (framing ones replaced), Content-Length, close. */
async function serializeResponse(res: Response, headOnly: boolean): Promise<Uint8Array> {
  const body = new Uint8Array(await res.arrayBuffer());
  let head = `HTTP/1.1 ${res.status} ${res.statusText || statusText[res.status] || ""}\r\n`;
  for (const [k, v] of res.headers) {
    if (["content-length", "transfer-encoding", "connection"].some((n) => fieldNameIs(k, n))) {
      continue;
    }
    head += `${k}: ${v}\r\n`;
  }
  const bodyless = res.status === 204 || res.status === 304;
  if (!bodyless) head += `content-length: ${body.length}\r\n`;
  head += "connection: close\r\n\r\n";
  const h = encodeLatin1(head);
  if (headOnly || bodyless) return h;
  const out = new Uint8Array(h.length + body.length);
  out.set(h);
  out.set(body, h.length);
  return out;
}
