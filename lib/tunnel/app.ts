/**
 * The embeddable front end: a Hono app (a fetch handler) serving the control path through
 * `Deno.upgradeWebSocket` and proxying public requests over tunnel streams, streaming
 * bodies both ways. Mount it in `Deno.serve` or another Hono app. Slower than the
 * standalone fast path (every request crosses Deno's HTTP stack twice) and without
 * pass-through of Upgrade requests, which a fetch handler cannot hijack.
 * @module
 */

// Pinned inline, not through warren's deno.json: lib is imported from anywhere.
// deno-lint-ignore no-import-prefix
import { type Context, Hono } from "npm:hono@4.13.19";
import {
  BufferedReader,
  type Deadline,
  deadlines,
  type Duplex,
  errorMessage,
  writeAll,
} from "../net/mod.ts";
import {
  type BodyFraming,
  copyBody,
  copyChunked,
  copyExact,
  encodeLatin1,
  headerHasToken,
  hopByHopFields as hopByHop,
  readResponseHead,
  type RequestHead,
  responseBodyFraming,
  type ResponseHead,
  serializeRequestHead,
} from "../http/mod.ts";
import { controlPath } from "./protocol.ts";
import {
  clientRefusal,
  errorPage,
  forwardHeaders,
  localPortOf,
  presentedIdentifier,
} from "./forward.ts";
import type { ClientConn } from "./client_conn.ts";
import type { TunnelServer } from "./server.ts";
import { normalizeHost, registryRetryAfterS } from "./registry.ts";
import { subdomainHeader } from "./subdomains.ts";
import { TunnelError, type TunnelStream } from "./tunnel_stream.ts";
import type { HostRewrite } from "./rewrite.ts";
import { WebSocketDuplex } from "../transport/ws_adapter.ts";
import { checkUpgradeRequest } from "../transport/websocket.ts";
import {
  appHandshake,
  bridgeWebSocket,
  type WebSocketLimits,
  type WebSocketTarget,
} from "./ws_passthrough.ts";

/** Options of {@linkcode createTunnelApp}. */
export interface TunnelAppOptions {
  /** X-Forwarded-Proto value. @default "http" */
  proto?: "http" | "https";
  /** Keep incoming X-Forwarded-* and append to them. @default false */
  trustForwarded?: boolean;
  /** The port the app is served on (a Host header naming it counts as "no port"). */
  publicPort?: number;
  /** Limits of WebSocket pass-through (message size, buffering). */
  webSocket?: WebSocketLimits;
  /** One "access" log line per proxied request (as the standalone front's). @default false */
  accessLog?: boolean;
}

/** What Deno.serve passes a handler beside the request (Hono's `c.env`); absent in tests. */
type ServeInfo = { remoteAddr?: Deno.NetAddr } | undefined;

/** The public peer of a request (`remote` is "-" when served without connection info). */
export function remoteOf(c: Context): { ip: string; remote: string } {
  return peerOf(c.env as ServeInfo);
}

/** The public peer from Deno.serve's handler info. */
function peerOf(info: ServeInfo): { ip: string; remote: string } {
  const a = info?.remoteAddr;
  return a ? { ip: a.hostname, remote: `${a.hostname}:${a.port}` } : { ip: "unknown", remote: "-" };
}

function htmlError(
  status: 400 | 401 | 403 | 404 | 501 | 502 | 503 | 504,
  host: string,
  extra: Record<string, string> = {},
): Response {
  return new Response(errorPage(status, host), {
    status,
    headers: {
      "content-type": "text/html; charset=utf-8",
      "cache-control": "no-store",
      ...extra,
    },
  });
}

const chunkEnd = new TextEncoder().encode("0\r\n\r\n");
const crlf = new TextEncoder().encode("\r\n");

/**
 * A Hono app that is a whole tunnel server front: `/_controlPath_/` for clients, every
 * other request routed by Host to the client serving it.
 *
 * @example
 * ```ts
 * import { createTunnelApp, TunnelServer } from "./mod.ts";
 * const server = new TunnelServer();
 * await server.addHost("app.example.com", "s3cret-identifier");
 * const http = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, createTunnelApp(server).fetch);
 * // No client serves the host yet: the front answers by itself.
 * const res = await fetch(`http://127.0.0.1:${http.addr.port}/`);
 * console.assert(res.status === 404, String(res.status));
 * await res.body?.cancel();
 * await http.shutdown();
 * await server.close();
 * ```
 */
export function createTunnelApp(server: TunnelServer, opts: TunnelAppOptions = {}): Hono {
  const app = new Hono();
  app.all(controlPath, (c) => control(server, c.req.raw, c.env as ServeInfo));
  app.all("*", (c) => proxy(server, c.req.raw, c.env as ServeInfo, opts));
  // Called as a fetch handler (Deno.serve(app.fetch)), a public request skips Hono: its
  // routing and Context were 10 µs of each proxied request, and the catch-all route above
  // answers every path but the control path anyway. A path Hono would decode (any `%`) goes
  // through Hono as before, so both ways pick the same handler. Mounted in another Hono app
  // (`app.route`), the routes above serve.
  const routed = app.fetch;
  app.fetch = (req, env, ctx) => {
    const path = plainPath(req.url);
    if (path === undefined || path === controlPath) return routed(req, env, ctx);
    return proxy(server, req, env as ServeInfo, opts).catch((err: unknown) => {
      // What Hono's default error handler answers (our handler throws only on a bug).
      server.log.error("tunnel front failed", { error: errorMessage(err) });
      return new Response("Internal Server Error", { status: 500 });
    });
  };
  return app;
}

/**
 * The path of a request URL when it has no `%` (which Hono decodes before routing), else
 * undefined: what Hono's router would match, without its Context.
 */
export function plainPath(url: string): string | undefined {
  const start = url.indexOf("/", url.indexOf(":") + 3);
  if (start < 0) return undefined;
  let end = start;
  for (; end < url.length; end++) {
    const ch = url.charCodeAt(end);
    if (ch === 0x25) return undefined; // %
    if (ch === 0x3f || ch === 0x23) break; // ? #
  }
  return url.slice(start, end);
}

/**
 * The origin-form target (path and query) of a request URL as the WHATWG URL parser gives it
 * (`pathname + search`): read off the URL's text when the parser would change nothing there
 * (the common case: no dot segment, no character it escapes), else parsed.
 */
export function originTarget(url: string): string {
  const scheme = url.indexOf("://");
  const start = scheme < 0 ? -1 : url.indexOf("/", scheme + 3);
  if (start > 0 && plainTargetRe.test(url.slice(start))) return url.slice(start);
  const u = new URL(url);
  return u.pathname + u.search;
}

/**
 * A target the URL parser keeps byte for byte: characters it neither escapes in a path nor
 * in a query (so no `'`, `"`, `<`, `>`, `` ` ``, `{`, `}`, space, `#` or `\\`), no `%2e`, no
 * `.` right after a `/` (a dot segment, which it removes) and no empty query (it drops the `?`).
 */
const plainTargetRe =
  /^(?![^?]*\/\.)(?![^?]*%2[eE])(?!.*\?$)\/[A-Za-z0-9\-._~!$&()*+,;=:@/%?|^\[\]]*$/;

/** The control path: a tunnel client's WebSocket, once its identifier is admitted. */
async function control(server: TunnelServer, req: Request, info: ServeInfo): Promise<Response> {
  if ((req.headers.get("upgrade") ?? "").toLowerCase() !== "websocket") {
    return new Response("websocket upgrade required\n", { status: 400 });
  }
  const identifier = presentedIdentifier((n) => req.headers.get(n));
  const peer = peerOf(info); // before the upgrade: the request is gone after it
  const admitted = await server.admit(
    identifier,
    peer.remote === "-" ? undefined : peer.remote, // no connection info: not limited
    req.headers.get(subdomainHeader) ?? undefined,
  );
  if (!admitted.ok) {
    server.log.warn("client refused", { remote: peer.remote, failure: admitted.reason });
    const { status, text } = clientRefusal[admitted.reason];
    return new Response(text, { status });
  }
  // No WebSocket idle timeout: the session's own keepalive finds a dead client (heartbeat),
  // and Deno's re-armed a timer on every message the client sent.
  const { socket, response } = Deno.upgradeWebSocket(req, { idleTimeout: 0 });
  const duplex = new WebSocketDuplex(socket);
  duplex.opened.then(
    () => server.attach(duplex, admitted.identifier, peer.remote),
    (err) => server.log.debug("websocket did not open", { error: errorMessage(err) }),
  );
  return response;
}

/**
 * The field names a `Connection` value lists beyond those dropped anyway (RFC 9110 §7.6.1:
 * they are for this hop only; framing fields and Host are kept); undefined when it lists none,
 * the usual case.
 */
function connectionNamed(value: string | undefined): Set<string> | undefined {
  if (value === undefined) return undefined;
  let names: Set<string> | undefined;
  for (const part of value.split(",")) {
    const t = part.trim().toLowerCase();
    if (t === "" || t === "close" || t === "content-length" || t === "host") continue;
    if (!hopByHop.has(t)) (names ??= new Set()).add(t);
  }
  return names;
}

/** Drop the fields `named` from `fields` (in place), when there are any. */
function dropNamed(fields: [string, string][], named: Set<string> | undefined): void {
  if (!named) return;
  let o = 0;
  for (const f of fields) if (!named.has(f[0].toLowerCase())) fields[o++] = f;
  fields.length = o;
}

/** The request fields the front reads, gathered in one pass over the headers. */
interface RequestFields {
  host: string | null;
  upgrade: string | null;
  authorization: string | undefined;
  hasLength: boolean;
  /** Whether the client sent content: a Content-Length other than 0, or a Transfer-Encoding. */
  hasContent: boolean;
  /** The fields forwarded (hop-by-hop ones left out). */
  forwarded: [string, string][];
}

function requestFields(req: Request): RequestFields {
  const f: RequestFields = {
    host: null,
    upgrade: null,
    authorization: undefined,
    hasLength: false,
    hasContent: false,
    forwarded: [],
  };
  let connection: string | undefined;
  // Deno's Headers give names in lower case, values of repeated fields joined.
  req.headers.forEach((v, k) => {
    if (k === "host") f.host = v;
    else if (k === "connection") connection = v;
    else if (k === "authorization") f.authorization = v;
    else if (k === "content-length") {
      f.hasLength = true;
      // Repeated fields come joined ("0, 0"); "00" is a zero length too.
      f.hasContent = v.split(",").some((n) => Number(n.trim()) !== 0);
    } else if (k === "transfer-encoding") f.hasContent = true;
    else if (k === "upgrade") f.upgrade = v;
    if (!hopByHop.has(k)) f.forwarded.push([k, v]);
  });
  dropNamed(f.forwarded, connectionNamed(connection));
  return f;
}

async function proxy(
  server: TunnelServer,
  req: Request,
  info: ServeInfo,
  opts: TunnelAppOptions,
): Promise<Response> {
  const method = req.method;
  const target = originTarget(req.url);
  const fields = requestFields(req);
  // HTTP/2 and HTTP/3 carry the authority in the URL, not in a Host header.
  const hostHeader = fields.host ?? new URL(req.url).host;
  const route = await server.route(hostHeader);
  if (!route.ok) {
    server.countRequest(route.host, String(route.status));
    return htmlError(
      route.status,
      route.host,
      route.status === 503 ? { "retry-after": String(registryRetryAfterS) } : {},
    );
  }
  const peer = peerOf(info);
  const denied = server.checkAccess(route, fields.authorization, peer.ip);
  if (denied) {
    // Refused here (401/403): nothing of it reaches the client.
    server.countRequest(route.host, String(denied.status));
    server.log.info("access denied", {
      remote: peer.remote,
      host: route.host,
      status: denied.status,
      failure: denied.reason,
    });
    return htmlError(
      denied.status,
      route.host,
      denied.challenge ? { "www-authenticate": denied.challenge } : {},
    );
  }
  const host = route.host;
  const upgrade = upgradeTokens(fields.upgrade);
  if (upgrade.length > 0 && !(upgrade.length === 1 && upgrade[0] === "websocket")) {
    server.countRequest(host, "501");
    return new Response(
      `Upgrade to ${fields.upgrade} is not supported by this (embeddable) tunnel front: it ` +
        "passes only WebSocket. The standalone tunnel-server front passes any Upgrade.\n",
      { status: 501, headers: { "content-type": "text/plain; charset=utf-8" } },
    );
  }
  const headers = fields.forwarded;
  if (fields.host === null) headers.unshift(["host", hostHeader]);
  const body = req.body; // read once: a getter of Deno's (3 µs on its first call)
  if (body === null && fields.hasContent) {
    // Deno.serve hands no body for GET and HEAD, whatever came: the head alone would announce
    // content that never follows (the app waits for it, or reads the next request as it).
    server.countRequest(host, "501");
    return new Response(
      `A ${method} request with content cannot pass this (embeddable) tunnel front: Deno.serve ` +
        "does not hand such content on. The standalone tunnel-server front passes it.\n",
      { status: 501, headers: { "content-type": "text/plain; charset=utf-8" } },
    );
  }
  const chunked = body !== null && !fields.hasLength;
  if (chunked) headers.push(["transfer-encoding", "chunked"]);
  const head: RequestHead = { method, target, version: "HTTP/1.1", headers };
  head.headers = forwardHeaders(head, peer, opts.proto ?? "http", opts.trustForwarded ?? false);
  const rewrite = server.rewriteOf(route);
  if (rewrite) head.headers = rewrite.request(head.headers);
  const localPort = localPortOf(hostHeader, opts.publicPort);
  if (upgrade.length > 0) {
    return await proxyWebSocket(
      server,
      req,
      host,
      {
        client: route.client,
        localPort,
        target: head.target,
        headers: head.headers,
      },
      opts.webSocket ?? {},
      rewrite,
    );
  }
  const headBytes = serializeRequestHead(head);
  const pool = poolOf(route.client, `${host}|${localPort}`);
  const startedMs = opts.accessLog ? performance.now() : 0;
  let bytesIn = 0;
  let entry: PooledStream | undefined;
  let bodyDone: Promise<boolean> = Promise.resolve(true);
  let resHead: ResponseHead | undefined;
  // A body-less request on a reused stream the app has meanwhile closed is retried once on
  // a fresh stream (nothing of it can have been processed).
  for (let attempt = 0; resHead === undefined; attempt++) {
    entry = attempt === 0 ? pool.take() : undefined;
    const reused = entry !== undefined;
    if (entry) {
      try {
        await writeAll(entry.ts.out, headBytes);
      } catch {
        entry.release();
        entry = undefined;
        if (attempt === 0) continue;
      }
    }
    if (!entry) {
      let ts: TunnelStream;
      try {
        ts = await server.openStream(route.client, host, "http", localPort, headBytes);
      } catch {
        server.countRequest(host, "502");
        return htmlError(502, host);
      }
      try {
        await ts.reply(server.responseTimeoutMs);
      } catch (err) {
        ts.release();
        const timeout = err instanceof TunnelError && err.reason === "timeout";
        server.countRequest(host, timeout ? "504" : "502");
        return htmlError(timeout ? 504 : 502, host);
      }
      entry = new PooledStream(ts, server.responseTimeoutMs);
    }
    const e = entry;
    // 504 when nothing came back for responseTimeoutMs after the last request byte.
    e.awaitResponse();
    if (body) {
      bodyDone = pumpBody(server, host, body, e.ts, chunked, (n) => {
        e.sinceMs = deadlines.clockMs();
        bytesIn += n;
      });
    }
    try {
      let h;
      do h = await readResponseHead(e.reader); while (h.status < 200);
      resHead = h;
      e.watch = "none";
    } catch (err) {
      e.release();
      if (reused && !e.timedOut && body === null && attempt === 0) continue;
      server.countRequest(host, e.timedOut ? "504" : "502");
      server.log.debug("bad response from tunnel", { host, error: errorMessage(err) });
      return htmlError(e.timedOut ? 504 : 502, host);
    }
  }
  const e = entry!;
  server.countRequest(host, "proxied");
  const framing = responseBodyFraming(resHead, method);
  const reusable = framing.kind !== "close" && resHead.version === "HTTP/1.1" &&
    !headerHasToken(resHead.headers, "connection", "close");
  /** After the exchange: back to the pool when the connection can carry another request. */
  const sent = { bytes: 0 };
  const status = resHead.status;
  const finish = async (ok: boolean) => {
    if (ok && reusable && (await bodyDone) && e.reader.buffered === 0) pool.put(e);
    else e.release();
    if (opts.accessLog) {
      // As the standalone front's line; sizes are the bodies (heads are Deno's here).
      const q = target.indexOf("?");
      server.log.info("access", {
        host: normalizeHost(hostHeader),
        method,
        path: q < 0 ? target : target.slice(0, q),
        status,
        in: bytesIn,
        out: sent.bytes,
        ms: Math.round(performance.now() - startedMs),
        rid: e.ts.requestId,
        client: route.client.fingerprint,
        remote: peer.remote,
        ...(ok ? {} : { failure: "cut" }),
      });
    }
  };
  return await tunnelResponse(
    server,
    host,
    resHead,
    method,
    framing,
    e.reader,
    e.src,
    finish,
    sent,
    rewrite,
  );
}

/** Responses with a Content-Length up to this are read whole before they are answered. */
const smallBodyBytes = 64 * 1024;

/**
 * The public Response for a response head read from a tunnel stream, its body streamed
 * from `reader`/`src`; `finish(ok)` runs once the body is through (or failed).
 */
async function tunnelResponse(
  server: TunnelServer,
  host: string,
  resHead: ResponseHead,
  method: string,
  framing: BodyFraming,
  reader: BufferedReader,
  src: Duplex,
  finish: (ok: boolean) => unknown,
  counted: { bytes: number },
  rewrite?: HostRewrite,
): Promise<Response> {
  // Pairs, not a Headers object: the Response takes them as they are (from a Headers it
  // copies a sorted iteration), 3 µs less per response.
  const out: [string, string][] = [];
  const fields = rewrite?.rewritesResponse ? rewrite.response(resHead.headers) : resHead.headers;
  let connection: string | undefined;
  for (const f of fields) {
    const l = f[0].toLowerCase();
    if (l === "connection") connection = connection === undefined ? f[1] : `${connection},${f[1]}`;
    if (hopByHop.has(l)) continue;
    // A HEAD's Content-Length is the size a GET would get: it stays (Deno sends it as given).
    if (l === "content-length" && framing.kind !== "length" && method !== "HEAD") continue;
    out.push(f);
  }
  dropNamed(out, connectionNamed(connection));
  if (framing.kind === "none") {
    void finish(true); // finish does not reject (bodyDone only resolves)
    return new Response(null, { status: resHead.status, headers: out });
  }
  if (framing.kind === "length" && framing.length <= smallBodyBytes) {
    // Read whole: Deno answers a complete body on its fast path, without the stream machinery.
    const body = new Uint8Array(framing.length);
    let o = 0;
    try {
      await copyExact(reader, src, framing.length, (p) => {
        body.set(p, o);
        o += p.length;
        return Promise.resolve();
      });
    } catch (err) {
      void finish(false); // does not reject
      server.log.debug("response body from tunnel cut", { host, error: errorMessage(err) });
      return htmlError(502, host);
    }
    counted.bytes = body.length;
    void finish(true); // does not reject
    return new Response(body, { status: resHead.status, headers: out });
  }
  const pipe = new TransformStream<Uint8Array, Uint8Array>();
  const writer = pipe.writable.getWriter();
  const sink = async (p: Uint8Array) => {
    counted.bytes += p.length;
    await writer.ready;
    await writer.write(p.slice());
  };
  // Never rejects: a failed copy aborts the public body, `finish` runs in any case.
  void (async () => {
    let ok = false;
    try {
      if (framing.kind === "chunked") await copyChunked(reader, src, sink, false);
      else await copyBody(reader, src, framing, sink);
      await writer.close();
      ok = true;
    } catch (err) {
      await writer.abort(err).catch(() => {
        // The public client already went away.
      });
    } finally {
      await finish(ok);
    }
  })();
  return new Response(pipe.readable, { status: resHead.status, headers: out });
}

/** The protocols an Upgrade field asks for (lower case, versions dropped); empty for none. */
function upgradeTokens(up: string | null): string[] {
  if (up === null) return [];
  return up.toLowerCase().split(",").map((t) => t.trim().split("/")[0]).filter((t) => t);
}

/**
 * A WebSocket request: the app's handshake over a tunnel stream first; on its 101 the
 * public request is upgraded with the app's subprotocol and bridged; any other answer is
 * passed back as an ordinary response.
 */
async function proxyWebSocket(
  server: TunnelServer,
  req: Request,
  host: string,
  target: Omit<WebSocketTarget, "server" | "host">,
  limits: WebSocketLimits,
  rewrite: HostRewrite | undefined,
): Promise<Response> {
  const bad = checkUpgradeRequest(req.method, (n) => req.headers.get(n) ?? undefined);
  if (bad) {
    server.countRequest(host, "400");
    return new Response(`${bad}\n`, { status: 400 });
  }
  const r = await appHandshake({ server, host, ...target });
  if (r.kind === "failed") {
    server.countRequest(host, String(r.status));
    server.log.debug("websocket handshake with the app failed", { host, error: r.why });
    return htmlError(r.status, host);
  }
  if (r.kind === "refused") {
    server.countRequest(host, "proxied");
    const ts = r.ts;
    return await tunnelResponse(
      server,
      host,
      r.head,
      req.method,
      responseBodyFraming(r.head, req.method),
      r.reader,
      ts.body(),
      () => ts.release(),
      { bytes: 0 },
      rewrite,
    );
  }
  let upgraded: { socket: WebSocket; response: Response };
  try {
    upgraded = Deno.upgradeWebSocket(req, r.protocol ? { protocol: r.protocol } : {});
  } catch (err) {
    // Not a request Deno.serve can upgrade (e.g. built by hand and passed to app.fetch).
    await r.conn.sendCloseFrame(1011, "the public side cannot be upgraded").catch(() => {
      // The app side is gone already: nobody to tell.
    });
    r.ts.release();
    server.countRequest(host, "501");
    server.log.debug("cannot upgrade the public request", { host, error: errorMessage(err) });
    return new Response("this request cannot be upgraded here\n", { status: 501 });
  }
  // The app's other 101 headers (Set-Cookie, ...) reach the public client too.
  const fields = rewrite?.rewritesResponse ? rewrite.response(r.head.headers) : r.head.headers;
  for (const [k, v] of fields) {
    const l = k.toLowerCase();
    if (hopByHop.has(l) || l.startsWith("sec-websocket-") || l === "content-length") continue;
    try {
      upgraded.response.headers.append(k, v);
    } catch {
      // Immutable in this Deno version, or not a valid header value: the 101 goes without.
    }
  }
  server.countRequest(host, "proxied");
  void bridgeWebSocket(server, host, upgraded.socket, r, limits); // ends both sides itself
  return upgraded.response;
}

/**
 * Size of each request-body read. Deliberately below the 64 KiB a default reader asks for:
 * see {@linkcode bodyReader}.
 */
const bodyReadBytes = 32 * 1024;
/** Request-body bytes read ahead of the tunnel stream at most (while the stream is slow). */
const bodyReadAheadBytes = 2 * 1024 * 1024;
/** Largest single write of gathered request-body bytes onto the tunnel stream. */
const bodyWriteBytes = 1024 * 1024;

/**
 * A reader of `body` in pieces of at most {@linkcode bodyReadBytes}.
 *
 * Why not the default reader: with a chunked request body and a handler that awaits other
 * I/O between reads (as this one must), Deno's request-body read op ends up copying its
 * whole backlog of unread body on every read (`perf`: 92-96 % of the front's CPU in
 * memmove, one 47-65 MB copy per 64 KiB read; 16-51 MB/s). Reads smaller than the usual
 * 64 KiB chunk mostly avoid getting there: 155-294 MB/s on the same box, 16 and 32 KiB
 * alike; 64 KiB and 4 KiB do not help. See README.md ("Uploads through the embeddable
 * front").
 */
function bodyReader(body: ReadableStream<Uint8Array>): {
  read(): Promise<ReadableStreamReadResult<Uint8Array>>;
  cancel(reason?: unknown): Promise<void>;
} {
  try {
    const byob = body.getReader({ mode: "byob" });
    return {
      read: () => byob.read(new Uint8Array(bodyReadBytes)),
      cancel: (reason) => byob.cancel(reason),
    };
  } catch {
    // Not a byte stream (a Request built in JS from an ordinary stream).
    const r = body.getReader();
    return { read: () => r.read(), cancel: (reason) => r.cancel(reason) };
  }
}

/**
 * Stream the request body onto the tunnel (chunk-framed when its length is unknown). Reads
 * run ahead of the writes (up to {@linkcode bodyReadAheadBytes}), and what gathered while a
 * write was in flight goes out as one write (one chunk, one mux frame run).
 */
async function pumpBody(
  server: TunnelServer,
  host: string,
  body: ReadableStream<Uint8Array>,
  ts: TunnelStream,
  chunked: boolean,
  onBytes: (n: number) => void,
): Promise<boolean> {
  const reader = bodyReader(body);
  const queue: Uint8Array[] = [];
  let queued = 0;
  let ended = false;
  let failed: unknown;
  let wakeWriter: (() => void) | undefined;
  let wakeReader: (() => void) | undefined;
  const wake = () => {
    wakeWriter?.();
    wakeWriter = undefined;
  };
  const readLoop = (async () => {
    try {
      while (true) {
        while (queued >= bodyReadAheadBytes && failed === undefined) {
          await new Promise<void>((r) => wakeReader = r);
        }
        if (failed !== undefined) return;
        const r = await reader.read();
        if (r.done) break;
        if (r.value.length === 0) continue;
        queue.push(r.value);
        queued += r.value.length;
        wake();
      }
    } catch (err) {
      failed ??= err;
    } finally {
      ended = true;
      wake();
    }
  })();
  try {
    while (true) {
      while (queue.length === 0 && !ended) await new Promise<void>((r) => wakeWriter = r);
      if (failed !== undefined) throw failed;
      if (queue.length === 0) break;
      let n = 0;
      let k = 0;
      while (k < queue.length && (k === 0 || n + queue[k].length <= bodyWriteBytes)) {
        n += queue[k++].length;
      }
      const parts = queue.splice(0, k);
      queued -= n;
      wakeReader?.();
      wakeReader = undefined;
      await writeAll(ts.out, gather(parts, n, chunked));
      onBytes(n);
    }
    if (chunked) await writeAll(ts.out, chunkEnd);
    return true;
  } catch (err) {
    failed ??= err;
    wakeReader?.();
    reader.cancel(err).catch(() => {
      // The body already failed or ended.
    });
    server.log.debug("request body copy ended", { host, error: errorMessage(err) });
    ts.stream.reset();
    return false;
  } finally {
    await readLoop;
  }
}

/** `parts` (`n` bytes) as one buffer; as one HTTP chunk when `chunked`. */
function gather(parts: Uint8Array[], n: number, chunked: boolean): Uint8Array {
  if (parts.length === 1 && !chunked) return parts[0];
  const size = chunked ? encodeLatin1(`${n.toString(16)}\r\n`) : new Uint8Array(0);
  const out = new Uint8Array(size.length + n + (chunked ? 2 : 0));
  out.set(size);
  let o = size.length;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  if (chunked) out.set(crlf, o);
  return out;
}

/**
 * A tunnel stream that carries one request after another, with its one deadline, on the wheel
 * for as long as the stream lives: while the stream waits in the pool it ends it after
 * {@linkcode idleStreamMs}, while a request waits for its response it resets the stream after
 * the response timeout. A request moves it by field stores; the wheel is touched only when a
 * watch must end before the deadline's current turn (about once per stream per idle period;
 * two adds and deletes per request were 5 µs of each).
 */
class PooledStream implements Deadline {
  due: number;
  /** What the deadline watches now. */
  watch: "idle" | "response" | "none" = "none";
  /** Since when (wheel clock, ms): idle in the pool, or the last request byte written. */
  sinceMs: number;
  /** Whether the response timeout reset the stream. */
  timedOut = false;
  /** The pool holding it while idle. */
  pool: StreamPool | undefined;
  readonly src: Duplex;
  readonly reader: BufferedReader;

  constructor(readonly ts: TunnelStream, readonly responseTimeoutMs: number) {
    this.src = ts.body();
    this.reader = new BufferedReader(this.src);
    this.sinceMs = deadlines.clockMs();
    this.due = this.sinceMs + responseTimeoutMs;
    deadlines.add(this);
  }

  /** A request went out: its response is due within the response timeout. */
  awaitResponse(): void {
    this.timedOut = false;
    this.#watch("response", this.responseTimeoutMs);
  }

  /** Back in the pool: closed when idle for {@linkcode idleStreamMs}. */
  idle(pool: StreamPool): void {
    this.pool = pool;
    this.ts.setIdle(true);
    this.#watch("idle", idleStreamMs);
  }

  /**
   * Watch `kind` from now for `limitMs`. The wheel is touched only when that is due before the
   * deadline's current turn (which re-checks and moves on otherwise).
   */
  #watch(kind: "idle" | "response", limitMs: number): void {
    this.watch = kind;
    this.sinceMs = deadlines.clockMs();
    const due = this.sinceMs + limitMs;
    if (due < this.due) {
      this.due = due;
      deadlines.add(this);
    }
  }

  /** @internal The wheel reached `due`: a watch is over, or the next check is set. */
  fire(nowMs: number): number | void {
    if (this.watch === "none") return nowMs + idleStreamMs;
    const later = this.sinceMs + (this.watch === "idle" ? idleStreamMs : this.responseTimeoutMs);
    if (later > nowMs) return later;
    if (this.watch === "idle") {
      this.pool?.remove(this);
      this.ts.release();
    } else {
      this.timedOut = true;
      this.ts.stream.reset();
    }
  }

  /** Close the stream (idempotent). */
  release(): void {
    deadlines.delete(this);
    this.ts.release();
  }
}

/**
 * Most idle streams kept per client, host and local port: above the concurrency of a busy
 * page or load test (with 32, wrk -c50 kept opening streams: 7k instead of 9-10k rps).
 */
const maxIdleStreams = 128;
/** An idle stream is closed after this long (below common app keep-alive timeouts). */
const idleStreamMs = 4_000;

/** A small LIFO of idle streams; emptied when the client's session ends. */
class StreamPool {
  #idle: PooledStream[] = [];
  #closed = false;

  constructor(client: ClientConn) {
    const drop = () => {
      this.#closed = true;
      for (const e of this.#idle.splice(0)) e.release();
    };
    client.whenLeaving(drop);
    void client.session.closed.then(drop); // `closed` only resolves
  }

  take(): PooledStream | undefined {
    const e = this.#idle.pop();
    if (e) {
      e.watch = "none";
      e.ts.setIdle(false);
    }
    return e;
  }

  put(e: PooledStream): void {
    if (this.#closed || this.#idle.length >= maxIdleStreams) return e.release();
    e.idle(this);
    this.#idle.push(e);
  }

  /** Take `e` out (its idle time is over). */
  remove(e: PooledStream): void {
    const i = this.#idle.indexOf(e);
    if (i >= 0) this.#idle.splice(i, 1);
  }
}

const pools = new WeakMap<ClientConn, Map<string, StreamPool>>();

function poolOf(client: ClientConn, key: string): StreamPool {
  let byKey = pools.get(client);
  if (!byKey) {
    byKey = new Map();
    pools.set(client, byKey);
  }
  let pool = byKey.get(key);
  if (!pool) {
    pool = new StreamPool(client);
    byKey.set(key, pool);
  }
  return pool;
}
