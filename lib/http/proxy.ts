/**
 * The HTTP proxy protocol as library code: serve one client connection of an HTTP proxy —
 * `CONNECT host:port` tunnels and absolute-URI forward requests with keep-alive — dialling
 * every destination through a caller-supplied `connect`, so the service decides how
 * (direct, IPv6 first, an upstream SOCKS5 proxy, a seaprox link).
 * @module
 */

import { type Logger, silentLogger } from "../log.ts";
import {
  BufferedReader,
  classifyError,
  closeQuietly,
  concatBytes,
  type Duplex,
  errorMessage,
  type HostPort,
  isDisconnect,
  joinHostPort,
  type NetFailureReason,
  noDelay,
  relay,
  withPrefix,
  writeAll,
} from "../net/mod.ts";
import {
  type BodyFraming,
  copyBody,
  copyChunked,
  requestBodyFraming,
  responseBodyFraming,
  type Sink,
} from "./body.ts";
import {
  getHeader,
  type HeaderFields,
  headerTokens,
  type HeadLimits,
  HttpError,
  readRequestHeadWithin,
  readResponseHead,
  type RequestHead,
  type ResponseHead,
  serializeRequestHead,
  serializeResponseHead,
  statusForHttpError,
  withHeader,
  withoutHeaders,
} from "./head.ts";
import { parseBasicCredentials, simpleResponse, statusText } from "./response.ts";
import { parseAbsoluteTarget, parseAuthority } from "./target.ts";

/** Default idle timeout of a proxied connection (no byte either way for this long). */
export const defaultProxyIdleTimeoutMs = 300_000;
/** Default time a keep-alive request head may take once its first byte arrived. */
export const defaultProxyHeadTimeoutMs = 30_000;
/** Bytes the client-side head reader pulls per read. */
const clientReadBytes = 16 * 1024;
/** A response head is merged into one write with a first body piece up to this size. */
const coalesceMaxBytes = 16 * 1024;

/**
 * Hop-by-hop fields (RFC 9110 §7.6.1) a proxy never forwards, plus the proxy's own
 * credentials. Transfer-Encoding is absent on purpose: bodies are relayed with their
 * framing, so the framing header travels with them.
 */
const hopByHop = [
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authorization",
  "proxy-authenticate",
  "te",
  "upgrade",
];
/** Methods a proxy may resend after a stale connection failed (RFC 9110 §9.2.2). */
const idempotent = new Set(["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"]);
/** Fields a `Connection` header may not remove, because the body framing depends on them. */
const framingFields = new Set(["transfer-encoding", "content-length", "host"]);

/** Dials a destination for the proxy; reject with a `NetError` so the status is right. */
export type HttpProxyConnect = (dest: HostPort) => Promise<Duplex>;

/** Options of {@linkcode handleHttpProxy}. */
export interface HttpProxyOptions {
  /**
   * Reach `dest` (CONNECT's authority, or the host of an absolute URI; host without
   * brackets). This is where the service plugs in its dialling. Reject with a `NetError`:
   * reason "timeout" answers 504, "not-allowed" 403, anything else 502.
   */
  connect: HttpProxyConnect;
  /**
   * When set, every request must carry `Proxy-Authorization: Basic …` accepted by this
   * (compare in constant time, e.g. `staticCredentials`); otherwise 407.
   */
  authenticate?: (username: string, password: string) => boolean | Promise<boolean>;
  /** Realm named in `Proxy-Authenticate`. @default "warren" */
  realm?: string;
  /** Close when no byte moved either way for this long; 0 = never. @default 300000 */
  idleTimeoutMs?: number;
  /**
   * Once the first byte of a keep-alive connection's next request head has arrived, the
   * whole head must follow within this long, else the connection is closed (a slowloris
   * after the first request, which `serve()`'s handshake timeout covers); 0 = off.
   * @default 30000
   */
  headTimeoutMs?: number;
  /** Limits on request and response heads. @default 64 KiB, 100 fields */
  limits?: HeadLimits;
  /** Abort: the connection (and any upstream) is closed and the call resolves. */
  signal?: AbortSignal;
  /** Called once the first request head was read and authorised (stop a handshake timer). */
  handshakeDone?: () => void;
  /** Called after each request with what happened (status, bytes, failure reason). */
  onExchange?: (e: HttpExchange) => void;
  log?: Logger;
}

/** One request served by the proxy, as reported to `onExchange`. */
export interface HttpExchange {
  /** Request method (`CONNECT`, `GET` …); empty when the head itself was bad. */
  method: string;
  /** Destination, once known. */
  dest?: HostPort;
  /** Status sent to the client (200 for an established tunnel); 0 if none could be sent. */
  status: number;
  /** Why it failed: a dial failure reason, or "auth", "bad-request", "upstream-protocol" … */
  failure?: NetFailureReason | "auth" | "bad-request" | "upstream-protocol" | "client-gone";
  /** Username when proxy authentication was used. */
  username?: string;
  /** Body (or tunnel) bytes client → destination. */
  requestBytes: number;
  /** Body (or tunnel) bytes destination → client. */
  responseBytes: number;
}

/** The status a proxy answers for a failed dial. */
export function statusForFailure(reason: NetFailureReason): number {
  return reason === "timeout" ? 504 : reason === "not-allowed" ? 403 : 502;
}

const failureText: Record<NetFailureReason, string> = {
  "resolve": "cannot resolve host",
  "refused": "connection refused",
  "host-unreachable": "host unreachable",
  "network-unreachable": "network unreachable",
  "timeout": "connection timed out",
  "not-allowed": "destination not allowed",
  "aborted": "aborted",
  "other": "cannot connect",
};

/** A write to one side failed while copying a body (so the other side is not to blame). */
class SinkFailed extends Error {
  override name = "SinkFailed";
  constructor(readonly side: "client" | "upstream", cause: unknown) {
    super(`write to ${side} failed: ${errorMessage(cause)}`, { cause });
  }
}

/** A kept-alive connection to the last forward destination. */
interface Upstream {
  key: string;
  conn: Duplex;
  reader: BufferedReader;
}

/** Closes everything when nothing moved for `ms`. */
class IdleWatch {
  #last = Date.now();
  #timer: ReturnType<typeof setInterval> | undefined;
  fired = false;
  constructor(ms: number, onIdle: () => void) {
    if (ms <= 0) return;
    this.#timer = setInterval(() => {
      if (Date.now() - this.#last < ms) return;
      this.fired = true;
      this.stop();
      onIdle();
    }, Math.max(10, Math.min(ms / 4, 1000)));
  }
  touch(): void {
    this.#last = Date.now();
  }
  stop(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
  }
}

/**
 * Serve one client connection of an HTTP proxy until it is done, then close it.
 *
 * - `CONNECT host:port` → `opts.connect(dest)` → `200 Connection Established` → raw relay
 *   (half-close kept; bytes the client sent early are forwarded).
 * - `GET http://host[:port]/path` (any method, absolute URI) → the request is sent in origin
 *   form with `Host` set to the URI's authority, hop-by-hop fields and those named in
 *   `Connection` removed, `Proxy-Authorization` stripped; bodies (Content-Length or chunked
 *   requests; Content-Length, chunked or close-delimited responses) are streamed, never
 *   buffered whole. The client connection is kept alive for the next request; the upstream
 *   connection is reused while the host stays the same and re-dialled when it changes.
 *   Interim 1xx responses are forwarded; a `101 Switching Protocols` after an `Upgrade`
 *   request becomes a raw relay (WebSocket through the proxy).
 * - Errors answer a short text: 400 malformed head or target, 431/414 oversize head, 505
 *   other HTTP versions, 407 missing/wrong credentials, 502 dial failure or a broken
 *   upstream response, 504 dial timeout (or no response within the idle timeout), 403 when
 *   `connect` rejects with reason "not-allowed".
 *
 * Resolves when the client is done (never rejects); `conn` is closed by then.
 *
 * @example
 * ```ts ignore
 * serve(listener, (conn, ctx) =>
 *   handleHttpProxy(conn, {
 *     connect: (dest) => dial(dest.host, dest.port, { timeoutMs: 10_000 }),
 *     authenticate: staticCredentials("user", "pass"),
 *     handshakeDone: ctx.handshakeDone,
 *     signal: ctx.signal,
 *   }));
 * ```
 */
export async function handleHttpProxy(conn: Duplex, opts: HttpProxyOptions): Promise<void> {
  const log = opts.log ?? silentLogger;
  const limits = opts.limits ?? {};
  const idleTimeoutMs = opts.idleTimeoutMs ?? defaultProxyIdleTimeoutMs;
  const headTimeoutMs = opts.headTimeoutMs ?? defaultProxyHeadTimeoutMs;
  noDelay(conn);
  const client = new BufferedReader(conn, clientReadBytes);
  let upstream: Upstream | undefined;
  const closeAll = () => {
    closeQuietly(conn);
    closeQuietly(upstream?.conn);
  };
  // Waiting for a response, idleness closes only the upstream so the client still gets a 504.
  let awaitingResponse = false;
  const idle = new IdleWatch(
    idleTimeoutMs,
    () => awaitingResponse ? closeQuietly(upstream?.conn) : closeAll(),
  );
  const onAbort = () => closeAll();
  if (opts.signal?.aborted) onAbort();
  opts.signal?.addEventListener("abort", onAbort, { once: true });
  let username: string | undefined;
  let first = true;

  const report = (e: Omit<HttpExchange, "username">) => {
    const full: HttpExchange = { ...e, username };
    log.debug("http exchange", {
      method: e.method,
      dest: e.dest ? joinHostPort(e.dest.host, e.dest.port) : undefined,
      status: e.status,
      failure: e.failure,
      up: e.requestBytes,
      down: e.responseBytes,
    });
    opts.onExchange?.(full);
  };
  /** Answer the client by ourselves; a client that is already gone is no error. */
  const answer = async (msg: Uint8Array): Promise<boolean> => {
    try {
      await writeAll(conn, msg);
      return true;
    } catch {
      return false; // the client vanished; there is nobody left to tell
    }
  };
  const sinkTo = (
    dst: Duplex,
    side: SinkFailed["side"],
    count: (n: number) => void,
  ): Sink =>
  async (p) => {
    try {
      await writeAll(dst, p);
    } catch (err) {
      throw new SinkFailed(side, err);
    }
    count(p.length);
    idle.touch();
  };

  /** Dial `dest` or answer the failure; undefined when it failed. */
  const dialOrAnswer = async (method: string, dest: HostPort): Promise<Duplex | undefined> => {
    try {
      return noDelay(await opts.connect(dest));
    } catch (err) {
      const reason = classifyError(err);
      const status = statusForFailure(reason);
      const where = joinHostPort(dest.host, dest.port);
      log.debug("http proxy dial failed", { dest: where, reason, error: errorMessage(err) });
      await answer(
        simpleResponse(
          status,
          `${status} ${statusText[status]}: ${failureText[reason]} (${where})\n`,
        ),
      );
      report({ method, dest, status, failure: reason, requestBytes: 0, responseBytes: 0 });
      return undefined;
    }
  };

  /** CONNECT: dial, 200, relay. The connection ends with the tunnel. */
  const tunnel = async (head: RequestHead): Promise<void> => {
    let dest: HostPort;
    try {
      dest = parseAuthority(head.target);
    } catch (err) {
      await answer(simpleResponse(400, `400 Bad Request: ${errorMessage(err)}\n`));
      report({
        method: head.method,
        status: 400,
        failure: "bad-request",
        requestBytes: 0,
        responseBytes: 0,
      });
      return;
    }
    const up = await dialOrAnswer(head.method, dest);
    if (!up) return;
    if (!(await answer(new TextEncoder().encode("HTTP/1.1 200 Connection Established\r\n\r\n")))) {
      closeQuietly(up);
      report({
        method: head.method,
        dest,
        status: 0,
        failure: "client-gone",
        requestBytes: 0,
        responseBytes: 0,
      });
      return;
    }
    idle.stop(); // the relay keeps its own idle timer from here on
    const r = await relay(withPrefix(conn, client.takeBuffered()), up, {
      idleTimeoutMs,
      signal: opts.signal,
    });
    report({ method: head.method, dest, status: 200, requestBytes: r.aToB, responseBytes: r.bToA });
  };

  /** One forward request; resolves whether the client connection may serve another. */
  const forward = async (head: RequestHead): Promise<boolean> => {
    const bad = async (message: string, status = 400): Promise<false> => {
      await answer(simpleResponse(status, `${status} ${statusText[status]}: ${message}\n`));
      report({
        method: head.method,
        status,
        failure: "bad-request",
        requestBytes: 0,
        responseBytes: 0,
      });
      return false;
    };
    if (head.target.startsWith("/") || head.target === "*") {
      return await bad("this is a proxy; send an absolute URI (http://host/path) or CONNECT");
    }
    let target, reqFraming: BodyFraming;
    try {
      target = parseAbsoluteTarget(head.target);
      reqFraming = requestBodyFraming(head);
    } catch (err) {
      return await bad(errorMessage(err));
    }
    if (target.scheme !== "http") {
      return await bad("only http:// URIs are forwarded; use CONNECT for https");
    }
    const dest = target.dest;
    const clientKeep = wantsKeepAlive(head);
    const connTokens = [
      ...headerTokens(head.headers, "connection"),
      ...headerTokens(head.headers, "proxy-connection"),
    ];
    const upgrade = connTokens.includes("upgrade") ? getHeader(head.headers, "upgrade") : undefined;
    let headers = withoutHeaders(head.headers, [
      ...hopByHop,
      ...connTokens.filter((t) => !framingFields.has(t)),
    ]);
    headers = withHeader(headers, "Host", target.authority);
    if (upgrade !== undefined) headers.push(["Connection", "upgrade"], ["Upgrade", upgrade]);
    else if (!clientKeep) headers.push(["Connection", "close"]);
    const upHead = serializeRequestHead({
      method: head.method,
      target: target.path,
      version: "HTTP/1.1",
      headers,
    });

    const key = joinHostPort(dest.host, dest.port);
    let requestBytes = 0, responseBytes = 0;
    for (let attempt = 0;; attempt++) {
      let reused = false;
      if (upstream && upstream.key === key) {
        reused = true;
      } else {
        closeQuietly(upstream?.conn);
        upstream = undefined;
        const c = await dialOrAnswer(head.method, dest);
        if (!c) return false;
        upstream = { key, conn: c, reader: new BufferedReader(c, clientReadBytes) };
      }
      const up: Upstream = upstream;
      // A kept-alive upstream may have closed meanwhile: retry once on a fresh connection
      // when nothing of this request is lost by doing so (no body was consumed).
      const canRetry = reused && attempt === 0 && reqFraming.kind === "none" &&
        idempotent.has(head.method);
      try {
        await writeAll(up.conn, upHead);
      } catch (err) {
        awaitingResponse = false;
        closeQuietly(up.conn);
        upstream = undefined;
        if (canRetry) continue;
        return await upstreamFailed(head, dest, err, false);
      }
      idle.touch();

      // The request body streams while the response is read, so `Expect: 100-continue`
      // and early answers (413, 401) work.
      let bodyDone = false;
      const bodyCopy = copyBody(
        client,
        conn,
        reqFraming,
        sinkTo(up.conn, "upstream", (n) => requestBytes += n),
      ).then(
        () => (bodyDone = true, undefined),
        (err: unknown) => err,
      );

      let res: ResponseHead;
      let sentSomething = false;
      awaitingResponse = true;
      try {
        while (true) {
          if (up.reader.buffered === 0 && (await up.reader.readExactOrEof(0)) === null) {
            throw new HttpError("upstream closed before answering", "eof");
          }
          res = await readResponseHead(up.reader, limits);
          idle.touch();
          if (res.status >= 200 || res.status === 101) break;
          // Interim answers (100 Continue, 103 Early Hints) pass on to HTTP/1.1 clients.
          if (head.version === "HTTP/1.1") {
            await writeAll(conn, serializeResponseHead({ ...res, version: "HTTP/1.1" }));
            sentSomething = true;
          }
        }
      } catch (err) {
        awaitingResponse = false;
        closeQuietly(up.conn);
        upstream = undefined;
        // A stale upstream shows as EOF, or as a reset when our head raced its close.
        const stale = (err instanceof HttpError && err.reason === "eof") || isDisconnect(err);
        if (canRetry && !sentSomething && stale && !idle.fired && !opts.signal?.aborted) {
          await bodyCopy; // no body: already settled
          continue;
        }
        return await failAfterHead(head, dest, err, sentSomething, bodyDone, bodyCopy);
      }

      awaitingResponse = false;
      if (res.status === 101) {
        if (upgrade === undefined) {
          closeQuietly(up.conn);
          upstream = undefined;
          const err = new HttpError("101 without an Upgrade request");
          return await failAfterHead(head, dest, err, sentSomething, bodyDone, bodyCopy);
        }
        const fields = withoutHeaders(res.headers, [
          "connection",
          "keep-alive",
          "proxy-connection",
        ]);
        fields.push(["Connection", "upgrade"]);
        await bodyCopy;
        upstream = undefined;
        if (
          !(await answer(serializeResponseHead({ ...res, version: "HTTP/1.1", headers: fields })))
        ) {
          closeQuietly(up.conn);
          return false;
        }
        idle.stop();
        const r = await relay(
          withPrefix(conn, client.takeBuffered()),
          withPrefix(up.conn, up.reader.takeBuffered()),
          { idleTimeoutMs, signal: opts.signal },
        );
        report({
          method: head.method,
          dest,
          status: 101,
          requestBytes: requestBytes + r.aToB,
          responseBytes: r.bToA,
        });
        return false;
      }

      let resFraming: BodyFraming;
      try {
        resFraming = responseBodyFraming(res, head.method);
      } catch (err) {
        closeQuietly(up.conn);
        upstream = undefined;
        return await failAfterHead(head, dest, err, sentSomething, bodyDone, bodyCopy);
      }
      const upstreamKeep = resFraming.kind !== "close" && wantsKeepAlive(res);
      // HTTP/1.0 clients do not know chunked: they get the data, delimited by our close.
      const dechunk = resFraming.kind === "chunked" && head.version === "HTTP/1.0";
      let keep = clientKeep && resFraming.kind !== "close" && !dechunk;
      const resConnTokens = headerTokens(res.headers, "connection");
      let fields: HeaderFields = withoutHeaders(res.headers, [
        ...hopByHop,
        ...resConnTokens.filter((t) => !framingFields.has(t)),
        ...(dechunk ? ["transfer-encoding", "trailer"] : []),
        // Transfer-Encoding overrides Content-Length (RFC 9112 §6.3): a length passed on
        // beside it could make the next hop read the body the other way.
        ...(headerTokens(res.headers, "transfer-encoding").length > 0 ? ["content-length"] : []),
      ]);
      if (!keep) fields.push(["Connection", "close"]);
      else if (head.version === "HTTP/1.0") fields = [...fields, ["Connection", "keep-alive"]];
      try {
        // The head goes out with the first body piece: one write, one packet for small
        // responses.
        let pendingHead: Uint8Array | undefined = serializeResponseHead({
          ...res,
          version: "HTTP/1.1",
          headers: fields,
        });
        const toClient = sinkTo(conn, "client", (n) => responseBytes += n);
        const sink: Sink = async (p) => {
          const h = pendingHead;
          pendingHead = undefined;
          if (h && p.length <= coalesceMaxBytes) {
            await writeAll(conn, concatBytes(h, p));
            responseBytes += p.length;
            idle.touch();
            return;
          }
          if (h) await writeAll(conn, h);
          await toClient(p);
        };
        if (dechunk) await copyChunked(up.reader, up.conn, sink, false);
        else await copyBody(up.reader, up.conn, resFraming, sink);
        if (pendingHead) await writeAll(conn, pendingHead);
      } catch (err) {
        // Mid-response, the only honest signal left is closing the client connection.
        closeAll();
        upstream = undefined;
        await bodyCopy;
        log.debug("http proxy response cut", { dest: key, error: errorMessage(err) });
        report({
          method: head.method,
          dest,
          status: res.status,
          failure: err instanceof SinkFailed ? "client-gone" : "upstream-protocol",
          requestBytes,
          responseBytes,
        });
        return false;
      }
      if (!bodyDone) {
        // The server answered before taking the whole request body: the client connection
        // cannot be re-synchronised, so both sides end here.
        keep = false;
        closeAll();
        upstream = undefined;
      }
      const bodyErr = await bodyCopy;
      if (bodyErr !== undefined) keep = false;
      if (!upstreamKeep || !keep) {
        closeQuietly(upstream?.conn);
        upstream = undefined;
      }
      report({ method: head.method, dest, status: res.status, requestBytes, responseBytes });
      return keep;
    }
  };

  /** Answer a broken upstream, end the client connection, let the request body copy settle. */
  const failAfterHead = async (
    head: RequestHead,
    dest: HostPort,
    err: unknown,
    sentSomething: boolean,
    bodyDone: boolean,
    bodyCopy: Promise<unknown>,
  ): Promise<false> => {
    await upstreamFailed(head, dest, err, sentSomething);
    // A request body still arriving would block forever on a client waiting for an answer.
    if (!bodyDone) closeQuietly(conn);
    await bodyCopy;
    return false;
  };

  /** A broken upstream: 502 (or 504 for a timeout) if nothing was sent yet, else just close. */
  const upstreamFailed = async (
    head: RequestHead,
    dest: HostPort,
    err: unknown,
    sentSomething: boolean,
  ): Promise<false> => {
    const reason = classifyError(err);
    const timedOut = idle.fired || reason === "timeout";
    const status = timedOut ? 504 : 502;
    const where = joinHostPort(dest.host, dest.port);
    log.debug("http proxy upstream failed", { dest: where, error: errorMessage(err) });
    if (!sentSomething) {
      const why = timedOut ? "no response in time" : `bad response: ${errorMessage(err)}`;
      await answer(simpleResponse(status, `${status} ${statusText[status]}: ${why} (${where})\n`));
    }
    report({
      method: head.method,
      dest,
      status: sentSomething ? 0 : status,
      failure: timedOut ? "timeout" : "upstream-protocol",
      requestBytes: 0,
      responseBytes: 0,
    });
    return false;
  };

  try {
    while (true) {
      let head: RequestHead | null;
      try {
        // The first head is under the caller's handshake timer; later ones wait without a
        // deadline for their first byte (the idle watch's business), then get headTimeoutMs.
        head = await readRequestHeadWithin(client, first ? 0 : headTimeoutMs, closeAll, limits);
      } catch (err) {
        if (err instanceof HttpError) {
          const status = statusForHttpError(err);
          if (status !== undefined) {
            await answer(
              simpleResponse(status, `${status} ${statusText[status]}: ${err.message}\n`),
            );
          }
          report({
            method: "",
            status: status ?? 0,
            failure: "bad-request",
            requestBytes: 0,
            responseBytes: 0,
          });
        }
        // Anything else is the connection itself failing (reset, closed by idle/abort).
        return;
      }
      if (head === null) return;
      idle.touch();
      if (opts.authenticate) {
        const cred = parseBasicCredentials(getHeader(head.headers, "proxy-authorization"));
        let ok = false;
        try {
          ok = cred !== undefined &&
            (await opts.authenticate(cred.username, cred.password)) === true;
        } catch (err) {
          log.warn("http proxy authenticator failed", { error: errorMessage(err) });
        }
        if (!ok) {
          const realm = (opts.realm ?? "warren").replace(/["\\]/g, "");
          await answer(simpleResponse(407, "407 Proxy Authentication Required\n", {
            headers: [["Proxy-Authenticate", `Basic realm="${realm}", charset="UTF-8"`]],
          }));
          report({
            method: head.method,
            status: 407,
            failure: "auth",
            requestBytes: 0,
            responseBytes: 0,
          });
          return;
        }
        username = cred?.username;
      }
      if (first) {
        first = false;
        opts.handshakeDone?.();
      }
      if (head.method === "CONNECT") return await tunnel(head);
      if (!(await forward(head))) return;
    }
  } finally {
    idle.stop();
    opts.signal?.removeEventListener("abort", onAbort);
    closeQuietly(upstream?.conn);
    closeQuietly(conn);
  }
}

/** Whether the sender of `head` wants the connection kept open afterwards. */
function wantsKeepAlive(head: RequestHead | ResponseHead): boolean {
  const tokens = [
    ...headerTokens(head.headers, "connection"),
    ...headerTokens(head.headers, "proxy-connection"),
  ];
  if (tokens.includes("close")) return false;
  return head.version === "HTTP/1.1" || tokens.includes("keep-alive");
}
