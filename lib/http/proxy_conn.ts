/**
 * One client connection of the HTTP proxy as a small state machine (`HttpProxyConn`, one
 * {@linkcode HttpProxyState}): request heads read and authorised, CONNECT tunnels, forward
 * requests with a kept-alive upstream, 1xx and 101 handling, response relay, and the
 * answers the proxy gives itself. `handleHttpProxy` (proxy.ts) is its public entry.
 * @module
 */

import { type Logger, silentLogger } from "../log.ts";
import {
  BufferedReader,
  classifyError,
  closeQuietly,
  type Duplex,
  errorMessage,
  type HostPort,
  IdleTimer,
  isDisconnect,
  joinHostPort,
  listenAbort,
  type NetFailureReason,
  noDelay,
  relay,
  relayPool,
  type RelayStats,
  unlistenAbort,
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
  fieldNameIs,
  getHeader,
  type HeaderFields,
  type HeadLimits,
  HttpError,
  readRequestHead,
  readRequestHeadWithin,
  readResponseHeadRaw,
  type RequestHead,
  type ResponseHead,
  serializeResponseHead,
  statusForHttpError,
} from "./head.ts";
import { buildHead, FieldNames, type HopFacts, hopFacts } from "./proxy_head.ts";
import { parseBasicCredentials, simpleResponse, statusText } from "./response.ts";
import { parseAbsoluteTarget, parseAuthority } from "./target.ts";
import type { HttpExchange, HttpProxyOptions } from "./proxy.ts";

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
const hopByHop = new FieldNames([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authorization",
  "proxy-authenticate",
  "te",
  "upgrade",
]);
/**
 * Fields a chunked body's trailers lose on the way: the hop-by-hop ones (RFC 9110 §7.6.1 says
 * trailer fields too), and those that cannot be trailers (§6.5.1: framing, routing,
 * authentication, request modifiers, how to process the content), which a next hop merging
 * trailers into the head could otherwise act on. The `Connection` options of the head are
 * added per message.
 */
const notTrailers = hopByHop.with([
  "transfer-encoding",
  "content-length",
  "trailer",
  "host",
  "authorization",
  "www-authenticate",
  "expect",
  "max-forwards",
  "range",
  "if-match",
  "if-none-match",
  "if-modified-since",
  "if-unmodified-since",
  "if-range",
  "content-encoding",
  "content-type",
  "content-range",
]);
/** Hop-by-hop fields, and Content-Length beside a Transfer-Encoding (RFC 9112 §6.3). */
const hopByHopCoded = hopByHop.with(["content-length"]);
/** Hop-by-hop fields, and the framing of a body the proxy de-chunks for an HTTP/1.0 client. */
const hopByHopDechunked = hopByHop.with(["transfer-encoding", "trailer", "content-length"]);
/** Methods a proxy may resend after a stale connection failed (RFC 9110 §9.2.2). */
const idempotent = new Set(["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"]);
/**
 * `Connection` options that remove no field: those the body framing depends on, and `close`
 * (an option, not a field name).
 */
const notRemovable: ReadonlySet<string> = new Set([
  "transfer-encoding",
  "content-length",
  "host",
  "close",
]);
/** The framing of what is left of a body once all of it went out. */
const none: BodyFraming = { kind: "none" };
/** The answer to a CONNECT whose destination was reached. */
const established = new TextEncoder().encode("HTTP/1.1 200 Connection Established\r\n\r\n");

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

/**
 * A forward request's upstream counting its bytes into the caller's `stats` (aToB: written to
 * it, from the client). A CONNECT tunnel needs none: its relay counts into `stats` itself,
 * without a wrapper's promise per read and write.
 */
class CountingDuplex implements Duplex {
  constructor(readonly inner: Duplex, readonly stats: RelayStats) {}
  async read(p: Uint8Array): Promise<number | null> {
    const n = await this.inner.read(p);
    if (n !== null) this.stats.bToA += n;
    return n;
  }
  async write(p: Uint8Array): Promise<number> {
    const n = await this.inner.write(p);
    this.stats.aToB += n;
    return n;
  }
  closeWrite(): Promise<void> {
    return this.inner.closeWrite();
  }
  close(): void {
    this.inner.close();
  }
}

/**
 * A buffer for one head (and the body bytes that leave with it): from the relay pool when it
 * has one that size, given back once the write that used it was awaited. A fresh array per
 * response was a measurable share of a small request's cost (allocation and GC).
 */
class WriteBuffer {
  #pooled: Uint8Array | undefined;
  /** At least `n` bytes (`buildHead`'s allocator). */
  take = (n: number): Uint8Array => {
    this.release();
    const b = relayPool.acquire(n);
    if (b.length >= n) return this.#pooled = b;
    relayPool.release(b); // the budget allowed only a smaller class
    return new Uint8Array(n);
  };
  /** Give the buffer back; no write may still be using it. */
  release(): void {
    if (this.#pooled) relayPool.release(this.#pooled);
    this.#pooled = undefined;
  }
}

/**
 * The fields of an interim (1xx) or 101 head for the client: hop-by-hop ones and those its
 * `Connection` names removed (RFC 9110 §7.6.1), except `keep` (a 101's Upgrade).
 */
function passedFields(headers: HeaderFields, keep?: string): HeaderFields {
  const drop = hopByHop.with(hopFacts(headers, false).connection, notRemovable);
  return headers.filter(([k]) => !drop.has(k) || (keep !== undefined && fieldNameIs(k, keep)));
}

/** Whether the sender of a head wants the connection kept open afterwards. */
function wantsKeepAlive(version: RequestHead["version"], facts: HopFacts): boolean {
  if (facts.close) return false;
  return version === "HTTP/1.1" || facts.keepAlive;
}

/** Where a client connection of the HTTP proxy is. */
export enum HttpProxyState {
  /** Waiting for (or reading) the next request head. */
  ReadingHead = "reading-head",
  /** A forward request's head is being sent upstream (idleness closes everything). */
  Sending = "sending",
  /** The request went upstream; its response head is awaited (idleness answers 504). */
  AwaitingResponse = "awaiting-response",
  /** A response head and body are relayed to the client. */
  Responding = "responding",
  /** A CONNECT tunnel or an upgraded connection: raw bytes both ways. */
  Relaying = "relaying",
  /** Finished: both sides are closed. */
  Closed = "closed",
}

/** A kept-alive connection to the last forward destination. */
interface Upstream {
  key: string;
  conn: Duplex;
  reader: BufferedReader;
  /** The reader's buffer, from the relay pool. */
  buf: Uint8Array;
}

/** A forward request, checked and rewritten for its destination. */
interface ForwardPlan {
  head: RequestHead;
  dest: HostPort;
  /** `host:port` of the destination (the upstream's reuse key). */
  key: string;
  /** The head to send upstream (origin form, hop-by-hop fields removed). */
  upHead: Uint8Array;
  /** Where `upHead` lies: back to the pool when the request is done. */
  upHeadBuffer: WriteBuffer;
  reqFraming: BodyFraming;
  /** Fields a chunked request body's trailers lose (with those its `Connection` names). */
  reqTrailerDrop: FieldNames;
  /** Whether the client wants its connection kept. */
  clientKeep: boolean;
  /** The Upgrade value when the client asks for one. */
  upgrade: string | undefined;
}

/** One request in flight upstream, once its response head arrived. */
interface Exchange {
  up: Upstream;
  res: ResponseHead;
  /**
   * The final response head's bytes as received when they are exactly what re-serialising
   * gives (`readResponseHeadRaw`): a view into the upstream reader's buffer, valid until its
   * next read.
   */
  resRaw: Uint8Array | undefined;
  /** Settles when the request body copy ends: undefined, or the error it ended with. */
  bodyCopy: Promise<unknown>;
  /** Whether the whole request body went upstream. */
  bodyDone: boolean;
  /** Whether interim (1xx) heads went to the client already. */
  sentSomething: boolean;
  requestBytes: number;
  responseBytes: number;
}

/** Serves one client connection of an HTTP proxy; see `handleHttpProxy`. */
export class HttpProxyConn {
  /** Where the connection is. */
  state: HttpProxyState = HttpProxyState.ReadingHead;
  readonly #conn: Duplex;
  readonly #opts: HttpProxyOptions;
  readonly #log: Logger;
  readonly #limits: HeadLimits;
  readonly #idleTimeoutMs: number;
  readonly #client: BufferedReader;
  /** The client reader's buffer, from the relay pool (back there once no read can be pending). */
  #clientBuf: Uint8Array | undefined;
  /**
   * The idle watch. With a caller's handshake timer (`handshakeDone`) it starts with the first
   * forward request: that timer covers the first head, and a CONNECT tunnel's relay keeps its
   * own idle timer, so a tunnel needs none (a deadline on the shared wheel, and its removal).
   */
  #idle: IdleTimer | undefined;
  #upstream: Upstream | undefined;
  #username: string | undefined;
  #heads = 0;

  /** A client connection to serve with {@linkcode HttpProxyConn.run}. */
  constructor(conn: Duplex, opts: HttpProxyOptions) {
    this.#conn = conn;
    this.#opts = opts;
    this.#log = opts.log ?? silentLogger;
    this.#limits = opts.limits ?? {};
    this.#idleTimeoutMs = opts.idleTimeoutMs ?? defaultProxyIdleTimeoutMs;
    if (!opts.socketsNoDelay) noDelay(conn);
    this.#clientBuf = relayPool.acquire(clientReadBytes);
    this.#client = new BufferedReader(conn, this.#clientBuf);
    if (!opts.handshakeDone) this.#idle = this.#watchIdle();
  }

  /** Start the idle watch. */
  #watchIdle(): IdleTimer {
    // Waiting for a response, idleness closes only the upstream so the client still gets a 504.
    return new IdleTimer(this.#idleTimeoutMs, () => {
      if (this.state === HttpProxyState.AwaitingResponse) closeQuietly(this.#upstream?.conn);
      else this.#closeAll();
    });
  }

  /** Serve requests until the client is done; `conn` is closed by then. Never rejects. */
  async run(): Promise<void> {
    const signal = this.#opts.signal;
    if (signal?.aborted) this.#closeAll();
    else if (signal) listenAbort(signal, this);
    let settled = false;
    try {
      await this.#serve();
      settled = true;
    } finally {
      this.state = HttpProxyState.Closed;
      this.#idle?.stop();
      if (signal) unlistenAbort(signal, this);
      closeQuietly(this.#conn);
      // Every read of the client and upstream readers was awaited on the way out of #serve;
      // after a throw one might not have been (a request body's copy, say), and a buffer
      // handed to another connection could then take its bytes: their budget goes back to
      // the pool, the buffers to the GC. (Kept counted, each held 16 KiB of the budget for
      // good; a kept-alive upstream still attached is the usual end of a connection.)
      if (settled) {
        this.#dropUpstream();
        this.#releaseClientBuffer();
      } else {
        const up = this.#upstream;
        this.#upstream = undefined;
        closeQuietly(up?.conn);
        if (up) relayPool.forget(up.buf);
        if (this.#clientBuf) relayPool.forget(this.#clientBuf);
        this.#clientBuf = undefined;
      }
    }
  }

  /** The requests of the connection, one after the other. */
  async #serve(): Promise<void> {
    while (this.state === HttpProxyState.ReadingHead) {
      const head = await this.#readHead();
      if (head === null) return;
      // Without credentials to check, no frame of its own for the check.
      if (this.#opts.authenticate && !(await this.#authorize(head))) return;
      if (this.#heads === 1) this.#opts.handshakeDone?.();
      if (head.method === "CONNECT") return await this.#tunnel(head);
      this.#idle ??= this.#watchIdle();
      if (!(await this.#forward(head))) return;
      this.state = HttpProxyState.ReadingHead;
    }
  }

  /** Give the client reader's buffer back to the pool; the reader is not read again. */
  #releaseClientBuffer(): void {
    if (this.#clientBuf) relayPool.release(this.#clientBuf);
    this.#clientBuf = undefined;
  }

  /**
   * @internal The abort listener (the connection itself: no closure): close everything, except
   * a tunnel's sockets, which its relay (listening to the same abort) resets, so the client
   * reads the cut as one: closed from here first, it read a FIN, a clean end.
   */
  handleEvent(): void {
    if (this.state !== HttpProxyState.Relaying) this.#closeAll();
  }

  #closeAll(): void {
    closeQuietly(this.#conn);
    closeQuietly(this.#upstream?.conn);
  }

  /** Drop the upstream connection (closed). */
  #dropUpstream(): void {
    const up = this.#upstream;
    if (!up) return;
    this.#upstream = undefined;
    closeQuietly(up.conn);
    // Dropped between reads (every read of it is awaited before): the buffer is free again.
    relayPool.release(up.buf);
  }

  #report(e: HttpExchange): void {
    if (this.#log.enabled("debug")) {
      this.#log.debug("http exchange", {
        method: e.method,
        dest: e.dest ? joinHostPort(e.dest.host, e.dest.port) : undefined,
        status: e.status,
        failure: e.failure,
        up: e.requestBytes,
        down: e.responseBytes,
      });
    }
    e.username = this.#username;
    this.#opts.onExchange?.(e);
  }

  /** Answer the client by ourselves; a client that is already gone is no error. */
  async #answer(msg: Uint8Array): Promise<boolean> {
    try {
      await writeAll(this.#conn, msg);
      return true;
    } catch {
      return false; // the client vanished; there is nobody left to tell
    }
  }

  /** Answer `status` with a one-line text. */
  #answerText(status: number, text: string): Promise<boolean> {
    return this.#answer(simpleResponse(status, `${status} ${statusText[status]}: ${text}\n`));
  }

  /** Write `bytes` to the client; a failure is a `SinkFailed` (the client's fault). */
  async #writeClient(bytes: Uint8Array): Promise<void> {
    try {
      await writeAll(this.#conn, bytes);
    } catch (err) {
      throw new SinkFailed("client", err);
    }
  }

  /** A body sink to `dst` that counts and keeps the idle watch fed. */
  #sinkTo(dst: Duplex, side: SinkFailed["side"], count: (n: number) => void): Sink {
    return async (p) => {
      try {
        await writeAll(dst, p);
      } catch (err) {
        throw new SinkFailed(side, err);
      }
      count(p.length);
      this.#idle?.touch();
    };
  }

  /** The next request head; null when the connection ends (a bad head is answered). */
  async #readHead(): Promise<RequestHead | null> {
    const first = this.#heads === 0;
    const headTimeoutMs = first ? 0 : this.#opts.headTimeoutMs ?? defaultProxyHeadTimeoutMs;
    let timedOut = false;
    let head: RequestHead | null;
    try {
      // The first head is under the caller's handshake timer; later ones wait without a
      // deadline for their first byte (the idle watch's business), then get headTimeoutMs.
      head = first
        ? await readRequestHead(this.#client, this.#limits)
        : await readRequestHeadWithin(this.#client, headTimeoutMs, () => {
          timedOut = true;
          this.#closeAll();
        }, this.#limits);
    } catch (err) {
      if (timedOut) {
        // Cut like a first head over the handshake timer (closed, no answer), and said so.
        this.#log.warn("request head timeout, closing", { timeoutMs: headTimeoutMs });
        this.#report({
          method: "",
          status: 0,
          failure: "head-timeout",
          requestBytes: 0,
          responseBytes: 0,
        });
        return null;
      }
      if (err instanceof HttpError) {
        const status = statusForHttpError(err);
        if (status !== undefined) await this.#answerText(status, err.message);
        this.#report({
          method: "",
          status: status ?? 0,
          failure: "bad-request",
          requestBytes: 0,
          responseBytes: 0,
        });
      }
      // Anything else is the connection itself failing (reset, closed by idle/abort).
      return null;
    }
    if (head === null) return null;
    this.#heads++;
    this.#idle?.touch();
    return head;
  }

  /** Check `Proxy-Authorization` when credentials are required; false: answered 407. */
  async #authorize(head: RequestHead): Promise<boolean> {
    const check = this.#opts.authenticate;
    if (!check) return true;
    const cred = parseBasicCredentials(getHeader(head.headers, "proxy-authorization"));
    let ok = false;
    try {
      ok = cred !== undefined && (await check(cred.username, cred.password)) === true;
    } catch (err) {
      this.#log.warn("http proxy authenticator failed", { error: errorMessage(err) });
    }
    if (!ok) {
      const realm = (this.#opts.realm ?? "warren").replace(/["\\]/g, "");
      await this.#answer(simpleResponse(407, "407 Proxy Authentication Required\n", {
        headers: [["Proxy-Authenticate", `Basic realm="${realm}", charset="UTF-8"`]],
      }));
      this.#report({
        method: head.method,
        status: 407,
        failure: "auth",
        requestBytes: 0,
        responseBytes: 0,
      });
      return false;
    }
    this.#username = cred?.username;
    return true;
  }

  /** Dial `dest` or answer the failure; undefined when it failed. */
  async #dialOrAnswer(method: string, dest: HostPort): Promise<Duplex | undefined> {
    try {
      const up = await this.#opts.connect(dest);
      return this.#opts.socketsNoDelay ? up : noDelay(up);
    } catch (err) {
      const reason = classifyError(err);
      const status = statusForFailure(reason);
      const where = joinHostPort(dest.host, dest.port);
      this.#log.debug("http proxy dial failed", {
        dest: where,
        reason,
        error: errorMessage(err),
      });
      await this.#answerText(status, `${failureText[reason]} (${where})`);
      this.#report({ method, dest, status, failure: reason, requestBytes: 0, responseBytes: 0 });
      return undefined;
    }
  }

  /** CONNECT: dial, 200, relay. The connection ends with the tunnel. */
  async #tunnel(head: RequestHead): Promise<void> {
    const fail = { method: head.method, requestBytes: 0, responseBytes: 0 };
    let dest: HostPort;
    try {
      dest = parseAuthority(head.target);
    } catch (err) {
      await this.#answerText(400, errorMessage(err));
      this.#report({ ...fail, status: 400, failure: "bad-request" });
      return;
    }
    const up = await this.#dialOrAnswer(head.method, dest);
    if (!up) return;
    try {
      // One write takes the answer whole (no frame of writeAll's for it).
      const n = await this.#conn.write(established);
      if (n < established.length) await writeAll(this.#conn, established.subarray(n));
    } catch {
      // The client left before its answer: nobody to tell, the report says so.
      closeQuietly(up);
      this.#report({ ...fail, dest, status: 0, failure: "client-gone" });
      return;
    }
    this.state = HttpProxyState.Relaying;
    const early = this.#client.takeBuffered(); // a copy: the reader is done
    this.#releaseClientBuffer();
    // The relay counts into the caller's live counters; the report gives this tunnel's share.
    const stats = this.#opts.stats ?? { aToB: 0, bToA: 0 };
    const up0 = stats.aToB, down0 = stats.bToA;
    await relay(withPrefix(this.#conn, early), up, {
      idleTimeoutMs: this.#idleTimeoutMs,
      signal: this.#opts.signal,
      stats,
    });
    this.#report({
      method: head.method,
      dest,
      status: 200,
      requestBytes: stats.aToB - up0,
      responseBytes: stats.bToA - down0,
    });
  }

  /** One forward request; resolves whether the client connection may serve another. */
  async #forward(head: RequestHead): Promise<boolean> {
    const plan = await this.#plan(head);
    if (!plan) return false;
    try {
      const ex = await this.#exchange(plan);
      if (!ex) return false;
      if (ex.res.status === 101) return await this.#switchProtocols(plan, ex);
      return await this.#relayResponse(plan, ex);
    } finally {
      plan.upHeadBuffer.release(); // every write of it was awaited
    }
  }

  /** Answer a request the proxy will not forward: 400 (or `status`), then close. */
  async #refuse(head: RequestHead, message: string, status = 400): Promise<undefined> {
    await this.#answerText(status, message);
    this.#report({
      method: head.method,
      status,
      failure: "bad-request",
      requestBytes: 0,
      responseBytes: 0,
    });
    return undefined;
  }

  /** Check a forward request and rewrite its head for the destination. */
  async #plan(head: RequestHead): Promise<ForwardPlan | undefined> {
    if (head.target.startsWith("/") || head.target === "*") {
      return await this.#refuse(
        head,
        "this is a proxy; send an absolute URI (http://host/path) or CONNECT",
      );
    }
    let target, reqFraming: BodyFraming;
    try {
      target = parseAbsoluteTarget(head.target);
      reqFraming = requestBodyFraming(head);
    } catch (err) {
      return await this.#refuse(head, errorMessage(err));
    }
    if (target.scheme !== "http") {
      return await this.#refuse(head, "only http:// URIs are forwarded; use CONNECT for https");
    }
    const facts = hopFacts(head.headers, true);
    const clientKeep = wantsKeepAlive(head.version, facts);
    const upgrade = facts.upgrade ? getHeader(head.headers, "upgrade") : undefined;
    // Every character of a head read as latin-1 fits a byte: building it cannot throw.
    const upHeadBuffer = new WriteBuffer();
    const upHead = buildHead({
      start: `${head.method} ${target.path} HTTP/1.1`,
      fields: head.headers,
      drop: hopByHop.with(facts.connection, notRemovable).with(
        facts.proxyConnection,
        notRemovable,
      ),
      host: target.authority,
      extra: upgrade !== undefined
        ? [["Connection", "upgrade"], ["Upgrade", upgrade]]
        : clientKeep
        ? []
        : [["Connection", "close"]],
    }, upHeadBuffer.take);
    const dest = target.dest;
    const key = joinHostPort(dest.host, dest.port);
    const reqTrailerDrop = reqFraming.kind !== "chunked"
      ? notTrailers
      : notTrailers.with(facts.connection).with(facts.proxyConnection);
    return {
      head,
      dest,
      key,
      upHead,
      upHeadBuffer,
      reqFraming,
      reqTrailerDrop,
      clientKeep,
      upgrade,
    };
  }

  /**
   * Send the request upstream (reusing the kept-alive connection to the same destination)
   * while its body streams, and read the response head, interim heads forwarded. A stale
   * kept-alive upstream is retried once when nothing is lost by it. Undefined when the
   * exchange failed (answered).
   */
  async #exchange(plan: ForwardPlan): Promise<Exchange | undefined> {
    const { head, dest, key, upHead, reqFraming } = plan;
    for (let attempt = 0;; attempt++) {
      let reused = false;
      if (this.#upstream && this.#upstream.key === key) {
        reused = true;
      } else {
        this.#dropUpstream();
        const dialed = await this.#dialOrAnswer(head.method, dest);
        if (!dialed) return undefined;
        const stats = this.#opts.stats;
        const c = stats ? new CountingDuplex(dialed, stats) : dialed;
        const buf = relayPool.acquire(clientReadBytes);
        this.#upstream = { key, conn: c, reader: new BufferedReader(c, buf), buf };
      }
      const up: Upstream = this.#upstream;
      // A kept-alive upstream may have closed meanwhile: retry once on a fresh connection
      // when nothing of this request is lost by doing so (no body was consumed).
      const canRetry = reused && attempt === 0 && reqFraming.kind === "none" &&
        idempotent.has(head.method);
      this.state = HttpProxyState.Sending;
      try {
        await writeAll(up.conn, upHead);
      } catch (err) {
        this.#dropUpstream();
        if (canRetry) continue;
        await this.#upstreamFailed(head, dest, err, false);
        return undefined;
      }
      this.#idle?.touch();

      // The request body streams while the response is read, so `Expect: 100-continue`
      // and early answers (413, 401) work.
      const ex: Exchange = {
        up,
        res: { version: "HTTP/1.1", status: 0, reason: "", headers: [] },
        resRaw: undefined,
        bodyCopy: Promise.resolve(),
        bodyDone: false,
        sentSomething: false,
        requestBytes: 0,
        responseBytes: 0,
      };
      ex.bodyCopy = copyBody(
        this.#client,
        this.#conn,
        reqFraming,
        this.#sinkTo(up.conn, "upstream", (n) => ex.requestBytes += n),
        undefined,
        plan.reqTrailerDrop,
      ).then(
        () => (ex.bodyDone = true, undefined),
        (err: unknown) => err,
      );
      this.state = HttpProxyState.AwaitingResponse;
      try {
        await this.#responseHead(plan, ex);
      } catch (err) {
        this.state = HttpProxyState.Responding; // an answer of our own, or a close
        this.#dropUpstream();
        // A stale upstream shows as EOF, or as a reset when our head raced its close.
        const stale = (err instanceof HttpError && err.reason === "eof") || isDisconnect(err);
        if (
          canRetry && !ex.sentSomething && stale && !this.#idle?.fired &&
          !this.#opts.signal?.aborted
        ) {
          await ex.bodyCopy; // no body: already settled
          continue;
        }
        await this.#failAfterHead(head, dest, err, ex);
        return undefined;
      }
      this.state = HttpProxyState.Responding;
      return ex;
    }
  }

  /**
   * Read response heads until a final one (or a 101) into `ex.res` and `ex.resRaw`; interim
   * ones go to HTTP/1.1 clients.
   */
  async #responseHead(plan: ForwardPlan, ex: Exchange): Promise<void> {
    const reader = ex.up.reader;
    while (true) {
      if (reader.buffered === 0 && (await reader.readExactOrEof(0, false)) === null) {
        throw new HttpError("upstream closed before answering", "eof");
      }
      const { head: res, raw } = await readResponseHeadRaw(reader, this.#limits);
      this.#idle?.touch();
      if (res.status >= 200 || res.status === 101) {
        ex.res = res;
        ex.resRaw = raw;
        return;
      }
      // Interim answers (100 Continue, 103 Early Hints) pass on to HTTP/1.1 clients.
      if (plan.head.version === "HTTP/1.1") {
        const fields = passedFields(res.headers);
        await writeAll(
          this.#conn,
          serializeResponseHead({ ...res, version: "HTTP/1.1", headers: fields }),
        );
        ex.sentSomething = true;
      }
    }
  }

  /** A 101 after an Upgrade request: pass it on, then relay raw bytes both ways. */
  async #switchProtocols(plan: ForwardPlan, ex: Exchange): Promise<false> {
    const { head, dest } = plan;
    const up = ex.up;
    if (plan.upgrade === undefined) {
      this.#dropUpstream();
      const err = new HttpError("101 without an Upgrade request");
      await this.#failAfterHead(head, dest, err, ex);
      return false;
    }
    const fields = passedFields(ex.res.headers, "upgrade");
    fields.push(["Connection", "upgrade"]);
    await ex.bodyCopy;
    this.#upstream = undefined;
    // What the upstream sent past its 101 (a copy): its reader is done, every read awaited.
    const upEarly = up.reader.takeBuffered();
    relayPool.release(up.buf);
    const switched = serializeResponseHead({ ...ex.res, version: "HTTP/1.1", headers: fields });
    if (!(await this.#answer(switched))) {
      closeQuietly(up.conn);
      return false;
    }
    this.state = HttpProxyState.Relaying;
    this.#idle?.stop(); // the relay keeps its own idle timer from here on
    const early = this.#client.takeBuffered(); // a copy: the reader is done
    this.#releaseClientBuffer();
    const r = await relay(
      withPrefix(this.#conn, early),
      withPrefix(up.conn, upEarly),
      { idleTimeoutMs: this.#idleTimeoutMs, signal: this.#opts.signal },
    );
    this.#report({
      method: head.method,
      dest,
      status: 101,
      requestBytes: ex.requestBytes + r.aToB,
      responseBytes: r.bToA,
    });
    return false;
  }

  /** Relay the response head and body; resolves whether the client connection is kept. */
  async #relayResponse(plan: ForwardPlan, ex: Exchange): Promise<boolean> {
    const { head, dest, key } = plan;
    const { up, res } = ex;
    let resFraming: BodyFraming;
    try {
      resFraming = responseBodyFraming(res, head.method);
    } catch (err) {
      this.#dropUpstream();
      await this.#failAfterHead(head, dest, err, ex);
      return false;
    }
    const facts = hopFacts(res.headers, true);
    const upstreamKeep = resFraming.kind !== "close" && wantsKeepAlive(res.version, facts);
    // HTTP/1.0 clients do not know chunked: they get the data, delimited by our close.
    const dechunk = resFraming.kind === "chunked" && head.version === "HTTP/1.0";
    let keep = plan.clientKeep && resFraming.kind !== "close" && !dechunk;
    // Transfer-Encoding overrides Content-Length (RFC 9112 §6.3): a length passed on beside
    // it could make the next hop read the body the other way.
    const drop = dechunk ? hopByHopDechunked : facts.transferCoded ? hopByHopCoded : hopByHop;
    // The body bytes already read behind a Content-Length head leave with it in one write
    // (one packet for a small response), taken as a view of the reader's buffer: no copy.
    let first: Uint8Array | undefined;
    let rest = resFraming;
    if (resFraming.kind === "length" && up.reader.buffered > 0) {
      const n = Math.min(up.reader.buffered, resFraming.length, coalesceMaxBytes);
      first = await up.reader.readExact(n, false);
      rest = n < resFraming.length ? { kind: "length", length: resFraming.length - n } : none;
    }
    // Otherwise (chunked, close-delimited) room is left behind the head for the first piece
    // the body copy hands over. The head is built now, while the received bytes it copies
    // from are still there.
    const room = first?.length ??
      (rest.kind === "none" ? 0 : Math.min(up.reader.buffered, coalesceMaxBytes));
    const headBuffer = new WriteBuffer();
    let out: Uint8Array | undefined = buildHead({
      start: res.version === "HTTP/1.1" && ex.resRaw
        ? undefined
        : `HTTP/1.1 ${res.status} ${res.reason}`,
      fields: res.headers,
      raw: ex.resRaw,
      drop: drop.with(facts.connection, notRemovable),
      extra: !keep
        ? [["Connection", "close"]]
        : head.version === "HTTP/1.0"
        ? [["Connection", "keep-alive"]]
        : [],
      room,
    }, headBuffer.take);
    const headBytes = out.length - room;
    try {
      if (first) {
        out.set(first, headBytes);
        await this.#writeClient(out);
        out = undefined;
        ex.responseBytes += first.length;
        this.#idle?.touch();
      }
      const toClient = this.#sinkTo(this.#conn, "client", (n) => ex.responseBytes += n);
      const sink: Sink = async (p) => {
        const h = out;
        out = undefined;
        if (h && p.length <= coalesceMaxBytes) {
          let both = h;
          if (p.length > room) {
            both = new Uint8Array(headBytes + p.length);
            both.set(h.subarray(0, headBytes));
          }
          both.set(p, headBytes);
          await this.#writeClient(both.subarray(0, headBytes + p.length));
          ex.responseBytes += p.length;
          this.#idle?.touch();
          return;
        }
        if (h) await this.#writeClient(h.subarray(0, headBytes));
        await toClient(p);
      };
      if (dechunk) await copyChunked(up.reader, up.conn, sink, false);
      else {
        const trailerDrop = rest.kind === "chunked"
          ? notTrailers.with(facts.connection)
          : undefined;
        await copyBody(up.reader, up.conn, rest, sink, undefined, trailerDrop);
      }
      if (out) await this.#writeClient(out.subarray(0, headBytes));
    } catch (err) {
      // Mid-response, the only honest signal left is closing the client connection.
      this.#closeAll();
      this.#dropUpstream(); // its reads settled (the copy ended): its buffer is free again
      await ex.bodyCopy;
      this.#log.debug("http proxy response cut", { dest: key, error: errorMessage(err) });
      this.#report({
        method: head.method,
        dest,
        status: res.status,
        failure: err instanceof SinkFailed ? "client-gone" : "upstream-protocol",
        requestBytes: ex.requestBytes,
        responseBytes: ex.responseBytes,
      });
      return false;
    } finally {
      headBuffer.release(); // every write of it was awaited
    }
    if (!ex.bodyDone) {
      // The server answered before taking the whole request body: the client connection
      // cannot be re-synchronised, so both sides end here.
      keep = false;
      this.#closeAll();
      this.#dropUpstream();
    }
    const bodyErr = await ex.bodyCopy;
    if (bodyErr !== undefined) keep = false;
    if (!upstreamKeep || !keep) this.#dropUpstream();
    this.#report({
      method: head.method,
      dest,
      status: res.status,
      requestBytes: ex.requestBytes,
      responseBytes: ex.responseBytes,
    });
    return keep;
  }

  /** Answer a broken upstream, end the client connection, let the request body copy settle. */
  async #failAfterHead(
    head: RequestHead,
    dest: HostPort,
    err: unknown,
    ex: Exchange,
  ): Promise<void> {
    await this.#upstreamFailed(head, dest, err, ex.sentSomething);
    // A request body still arriving would block forever on a client waiting for an answer.
    if (!ex.bodyDone) closeQuietly(this.#conn);
    await ex.bodyCopy;
  }

  /** A broken upstream: 502 (or 504 for a timeout) if nothing was sent yet, else just close. */
  async #upstreamFailed(
    head: RequestHead,
    dest: HostPort,
    err: unknown,
    sentSomething: boolean,
  ): Promise<void> {
    const reason = classifyError(err);
    const timedOut = this.#idle?.fired === true || reason === "timeout";
    const status = timedOut ? 504 : 502;
    const where = joinHostPort(dest.host, dest.port);
    this.#log.debug("http proxy upstream failed", { dest: where, error: errorMessage(err) });
    if (!sentSomething) {
      const why = timedOut ? "no response in time" : `bad response: ${errorMessage(err)}`;
      await this.#answerText(status, `${why} (${where})`);
    }
    this.#report({
      method: head.method,
      dest,
      status: sentSomething ? 0 : status,
      failure: timedOut ? "timeout" : "upstream-protocol",
      requestBytes: 0,
      responseBytes: 0,
    });
  }
}
