/**
 * The standalone front end (fast path): our own HTTP/1 listener. It parses each request
 * head, checks its Host and target, routes by Host, writes the head (with X-Forwarded-*)
 * and the body onto a tunnel stream, and copies the response bytes back untouched. The
 * first request of a tunnel client (the control path) is handed to front_control.ts.
 *
 * Keep-alive: one tunnel stream per public connection and virtual host. Every request head
 * on the connection is parsed (so each gets X-Forwarded-* and its Host is checked); while
 * the Host stays the same, requests follow on the same stream (the client's connection to
 * the local app stays alive too). When a later request names another Host, the stream's
 * write side is closed, the previous responses drain, and a new stream to the new host's
 * client carries the request: responses can never cross hosts or requests.
 *
 * Reuse: a stream the public connection is done with goes, at a response boundary and with the
 * app's connection open, to an idle pool (front_pool.ts) for the next public connection's safe,
 * body-less request to the same client, host and local port; a public `close` is then taken out
 * of the request toward the app and put in its response (see the README's "Keep-alive").
 *
 * Upgrade: a request asking for one (`Connection: upgrade` + `Upgrade`) gets a stream of
 * its own, and nothing more is read from the public side until the app answered it. Only a
 * `101` naming a protocol the client offered switches the connection to opaque bytes both
 * ways; any other answer is relayed and the next request is parsed as usual.
 * @module
 */

import {
  BufferedReader,
  closeQuietly,
  type ConnContext,
  type Deadline,
  deadlines,
  type Duplex,
  errorMessage,
  IdleTimer,
  withPrefix,
  writeAll,
} from "../net/mod.ts";
import { type Logger, type LogTail, silentLogger } from "../log.ts";
import {
  type BodyFraming,
  copyBody,
  fieldNameIs,
  getHeader,
  headerTokens,
  HttpError,
  type RawRequestHead,
  readRequestHeadRawWithin,
  readResponseHead,
  readResponseHeadRaw,
  requestBodyFraming,
  type RequestHead,
  responseBodyFraming,
  type ResponseHead,
  type ResponseHeadScan,
  responsePersistent,
  scanResponseHead,
  serializeRequestHead,
  serializeResponseHead,
  simpleResponse,
  statusForHttpError,
  takeBufferedRequestHead,
  takeBufferedResponseHead,
} from "../http/mod.ts";
import {
  errorPage,
  forwardHeaders,
  forwardHeadParts,
  joinParts,
  localPortOf,
  type PeerInfo,
  routedTarget,
} from "./forward.ts";
import { handleControl, isControlRequest } from "./front_control.ts";
import { WriteCoalescer } from "./coalescer.ts";
import {
  isLastRequest,
  Leg,
  LegState,
  mayReuse,
  ResponseBuffer,
  upgradeAccepted,
  upgradeOffer,
  withoutCloseOption,
} from "./front_leg.ts";
import {
  defaultIdleStreamMs,
  defaultMaxIdleStreams,
  idleKey,
  type IdleStream,
  putIdleStream,
  takeIdleStream,
} from "./front_pool.ts";
import type { Route, TunnelServer } from "./server.ts";
import { closingResponseBytes, type HostRewrite, withoutCloseBytes } from "./rewrite.ts";
import type { AccessDenied } from "./access.ts";
import { registryRetryAfterS } from "./registry.ts";
import { tunnelRequestSeconds } from "./stats.ts";
import type { TunnelError, TunnelStream } from "./tunnel_stream.ts";

/** Default close of a public connection with no bytes moving either way. */
export const defaultPublicIdleTimeoutMs = 300_000;
/** Default time a keep-alive request head may take once its first byte arrived. */
export const defaultHeadTimeoutMs = 30_000;
/** First size of a public connection's head buffer (it grows for larger heads). */
const publicReadBytes = 4 * 1024;
/**
 * After the last response (the client asked to close) or an error answer of our own, how long
 * the front still reads and drops what the client sends before it closes (a close with unread bytes would be a reset,
 * which can destroy the response on its way: RFC 9112 §9.6; nginx's lingering_timeout).
 */
const defaultLingerMs = 5_000;
/**
 * Responses after which a poolable stream's copy stops parsing them (when nothing needs them
 * parsed otherwise) and the stream will not be pooled: a public connection that carried this
 * many is a kept-alive client that amortises its stream itself, and parsing costs it ~3 µs of
 * server CPU per request (same-run A/B in bench/RESULTS.md).
 */
const parsedResponsesBeforeOpaque = 16;

/** Options of {@linkcode handlePublicConn}. */
export interface HttpFrontOptions {
  /** The port this listener is reached on: a Host header naming it counts as "no port". */
  publicPort?: number;
  /** Value of X-Forwarded-Proto. @default "http" */
  proto?: "http" | "https";
  /** Keep incoming X-Forwarded-* (a trusted proxy in front) and append to them. @default false */
  trustForwarded?: boolean;
  /** Close a public connection idle this long. @default 300000 */
  idleTimeoutMs?: number;
  /**
   * Once the first byte of a keep-alive connection's next request head has arrived, the
   * whole head must follow within this long, else the connection is closed (a slowloris
   * after the first request, which `serve()`'s handshake timeout covers); 0 = off.
   * @default 30000
   */
  headTimeoutMs?: number;
  /**
   * One "access" log line per request (host, method, path, status, bytes in/out, ms, request
   * id, client fingerprint): responses are then parsed on their way out instead of copied as
   * opaque bytes. @default false
   */
  accessLog?: boolean;
  /**
   * Most idle tunnel streams kept per client, host and local port for later public
   * connections (front_pool.ts): a stream a public connection is done with carries the next
   * one's requests to the same app connection. 0 = none (a stream per public connection).
   * @default 128
   */
  idleStreams?: number;
  /** How long an idle tunnel stream is kept. @default 4000 */
  idleStreamMs?: number;
  /**
   * After the last response or an error answer of our own, how long the front still reads
   * and drops what the client sends before it closes the connection (a close with unread
   * bytes would be a reset that can destroy the answer). @default 5000
   */
  lingerMs?: number;
  /** Where events are logged. @default silent */
  log?: Logger;
}

/** Where a public connection of the standalone front is. */
export enum PublicConnState {
  /** Waiting for (or reading) the next request head. */
  ReadingHead = "reading-head",
  /** Copying a request body onto the tunnel stream. */
  CopyingBody = "copying-body",
  /** An Upgrade request went out: nothing more is read until the app answered it. */
  AwaitingUpgrade = "awaiting-upgrade",
  /** The app switched protocols: opaque bytes both ways. */
  Upgraded = "upgraded",
  /** No more requests are taken (`Connection: close`, EOF): the responses drain. */
  Draining = "draining",
  /** The connection ends now (an error answered, the app closed, a timeout). */
  Closing = "closing",
  /** Handed to the control path: a tunnel client's session runs on it. */
  Control = "control",
}

/**
 * One public connection of the standalone front, from its first request head to its close.
 * The state machine is {@linkcode PublicConnState}; each tunnel stream it uses is a `Leg`
 * whose pump copies the responses back.
 */
export class PublicConn {
  /** Where the connection is. */
  state: PublicConnState = PublicConnState.ReadingHead;
  readonly #server: TunnelServer;
  readonly #conn: Duplex;
  readonly #peer: PeerInfo;
  readonly #opts: HttpFrontOptions;
  readonly #ctx: Pick<ConnContext, "handshakeDone" | "signal"> | undefined;
  readonly #log: Logger;
  /**
   * Request bytes bound for the tunnel stream are gathered and flushed as one write just
   * before a read of the public side (which may block).
   */
  readonly #out = new WriteCoalescer();
  /** The public side as request bodies are read from it (flushes `#out` first). */
  readonly #pub: Duplex;
  readonly #reader: BufferedReader;
  #leg: Leg | undefined;
  /** Closes the public connection when nothing moved for idleTimeoutMs (set by `run`). */
  #idle: IdleTimer | undefined;
  #heads = 0;
  /** Closes the public side `lingerMs` after an answer of our own (see #endAfterAnswer). */
  #lingerTimer: ReturnType<typeof setTimeout> | undefined;
  /** The read that drops what the public side still sends (see #discardUntilEof). */
  #discarding: Promise<"public"> | undefined;
  /** Most idle tunnel streams kept per client, host and local port (0: no reuse). */
  readonly #maxIdle: number;

  /** A public connection to serve with {@linkcode PublicConn.run}. */
  constructor(
    server: TunnelServer,
    conn: Duplex,
    peer: PeerInfo,
    opts: HttpFrontOptions = {},
    ctx?: Pick<ConnContext, "handshakeDone" | "signal">,
  ) {
    this.#server = server;
    this.#conn = conn;
    this.#peer = peer;
    this.#opts = opts;
    this.#ctx = ctx;
    this.#log = opts.log ?? silentLogger;
    this.#maxIdle = opts.idleStreams ?? defaultMaxIdleStreams;
    const out = this.#out;
    this.#pub = {
      // Nothing gathered, or the stream took it at once (most reads): straight to the
      // connection, no promise of our own.
      read: (p) =>
        out.pending && !out.flushNow() ? out.flush().then(() => conn.read(p)) : conn.read(p),
      write: (p) => conn.write(p),
      closeWrite: () => conn.closeWrite(),
      close: () => conn.close(),
    };
    this.#reader = new BufferedReader(this.#pub, publicReadBytes);
  }

  /** Serve requests until the connection ends. Never throws. */
  async run(): Promise<void> {
    const idleMs = this.#opts.idleTimeoutMs ?? defaultPublicIdleTimeoutMs;
    const idle = new IdleTimer(idleMs, () => {
      this.#log.debug("public connection idle, closing", { remote: this.#peer.remote });
      closeQuietly(this.#conn);
      this.#leg?.ts.release();
    });
    this.#idle = idle;
    const reader = this.#reader;
    try {
      while (this.state === PublicConnState.ReadingHead) {
        // Usually one read brings one whole head: the read is awaited here and the head
        // taken where it lies, without #readHead's two async steps (which finish, time or
        // answer any other head).
        if (reader.buffered === 0) {
          let more = false;
          try {
            more = await reader.fill();
          } catch {
            // Closed or reset while waiting for a head: nothing to answer.
            this.state = PublicConnState.Closing;
          }
          if (!more) break;
        }
        const read = this.#takeHead() ?? await this.#readHead();
        if (read === null) break;
        const head = read.head;
        if (this.#heads === 1) {
          this.#ctx?.handshakeDone();
          if (isControlRequest(head)) {
            // A client session: the mux heartbeat judges its liveness, not the public idle
            // timer (nothing touches lastActivity any more: it would cut every session
            // idleTimeoutMs after it connected).
            idle.stop();
            this.state = PublicConnState.Control;
            await handleControl(
              this.#server,
              this.#conn,
              this.#reader,
              head,
              this.#peer,
              this.#log,
            );
            return;
          }
        }
        const forwarding = this.#request(head, read.raw);
        if (forwarding) await forwarding;
      }
      await this.#drain();
    } catch (err) {
      this.#log.debug("public connection failed", {
        remote: this.#peer.remote,
        error: errorMessage(err),
      });
    } finally {
      idle.stop();
      this.#leg?.ts.release();
      await this.#lingerOut(); // does not throw
    }
  }

  /** Whether the connection is ending now (the pump or a timer may decide so any time). */
  #closing(): boolean {
    return this.state === PublicConnState.Closing;
  }

  /** Move to `s` unless the connection is already ending. */
  #enter(s: PublicConnState): void {
    if (!this.#closing()) this.state = s;
  }

  /**
   * The request head all buffered at the front of the reader, taken without a promise (see
   * {@linkcode #readHead} for its bytes); undefined when it is not all there, or is bad:
   * #readHead reads it again, and waits for the rest or answers it.
   */
  #takeHead(): RawRequestHead | undefined {
    let read: RawRequestHead | undefined;
    try {
      read = takeBufferedRequestHead(this.#reader);
    } catch {
      return undefined;
    }
    if (read) {
      this.#heads++;
      this.#idle?.touch();
    }
    return read;
  }

  /**
   * The next request head (with its bytes, valid until the next read of the public side);
   * null at EOF or when the head could not be read (answered).
   */
  async #readHead(): Promise<RawRequestHead | null> {
    const first = this.#heads === 0;
    let head: RawRequestHead | null;
    try {
      // The first head is under serve()'s handshake timer; later ones wait without a
      // deadline for their first byte (the idle timer's business), then get headTimeoutMs.
      head = await readRequestHeadRawWithin(
        this.#reader,
        first ? 0 : this.#opts.headTimeoutMs ?? defaultHeadTimeoutMs,
        () => {
          this.#log.debug("request head too slow, closing", { remote: this.#peer.remote });
          closeQuietly(this.#conn);
        },
      );
    } catch (err) {
      const status = err instanceof HttpError ? statusForHttpError(err) : undefined;
      if (status !== undefined) {
        await this.#endLeg();
        await this.#answer(status, "");
      }
      // Otherwise closed mid-head or reset: nothing to answer.
      this.state = PublicConnState.Closing;
      return null;
    }
    if (head === null) return null;
    this.#heads++;
    this.#idle?.touch();
    return head;
  }

  /**
   * Check, route and forward one request with its body; `raw` is its head's bytes when they
   * serialise back to themselves (see `readRequestHeadRawWithin`). A request without a body on
   * a kept-alive stream is forwarded without a promise (undefined); otherwise the promise
   * settles once it is forwarded.
   */
  #request(head: RequestHead, raw: Uint8Array | undefined): Promise<void> | undefined {
    if (this.#closing()) return; // the previous response ended the connection
    let routed, framing: BodyFraming;
    try {
      routed = routedTarget(head);
      framing = requestBodyFraming(head);
      if (head.method === "CONNECT") throw new HttpError("CONNECT is not served here");
    } catch (err) {
      return this.#badRequest(err);
    }
    const connection = headerTokens(head.headers, "connection");
    const upgrade = upgradeOffer(head, connection);
    const fwd = routed.head;
    const proto = this.#opts.proto ?? "http";
    // The usual head (origin-form target, no X-Forwarded-* of its own) goes out as it came
    // with the fields spliced in (`raw` is read over by the next read: used before it).
    const parts = raw && fwd === head ? forwardHeadParts(raw, head, this.#peer, proto) : undefined;
    const serialized = (rw: HostRewrite | undefined, dropClose: boolean) => {
      let headers = forwardHeaders(fwd, this.#peer, proto, this.#opts.trustForwarded ?? false);
      if (dropClose) headers = withoutCloseOption(headers);
      return serializeRequestHead({ ...fwd, headers: rw ? rw.request(headers) : headers });
    };
    const vhost = routed.vhost;
    const forward = (leg: Leg | undefined) =>
      leg && this.#forward(leg, head, framing, connection, upgrade);
    const leg = this.#legFor(
      vhost,
      routed.hostHeader,
      parts,
      serialized,
      upgrade,
      getHeader(head.headers, "authorization"),
      head,
      isLastRequest(head, connection),
      framing.kind === "none",
    );
    return leg instanceof Promise ? leg.then(forward) : forward(leg);
  }

  /** A request that cannot be forwarded (bad Host or target, bad framing, CONNECT): 400. */
  async #badRequest(err: unknown): Promise<void> {
    await this.#endLeg();
    await this.#answer(400, "");
    this.#log.debug("bad request", { remote: this.#peer.remote, error: errorMessage(err) });
    this.state = PublicConnState.Closing;
  }

  /**
   * The request's head is on `leg` (and noted there, see #note): copy its body, wait for the
   * answer to an Upgrade, and move on. Undefined (no promise) for the usual request: no body,
   * no upgrade.
   */
  #forward(
    leg: Leg,
    head: RequestHead,
    framing: BodyFraming,
    connection: string[],
    upgrade: string[] | undefined,
  ): Promise<void> | undefined {
    this.#enter(PublicConnState.CopyingBody);
    // Most requests have no body: no copy to start (two promises fewer per request).
    if (framing.kind !== "none" || upgrade) {
      return this.#bodyAndUpgrade(leg, head, framing, connection, upgrade);
    }
    if (this.#closing()) return;
    this.#enter(
      isLastRequest(head, connection) ? PublicConnState.Draining : PublicConnState.ReadingHead,
    );
  }

  /** The rest of {@linkcode #forward} for a request with a body or an Upgrade offer. */
  async #bodyAndUpgrade(
    leg: Leg,
    head: RequestHead,
    framing: BodyFraming,
    connection: string[],
    upgrade: string[] | undefined,
  ): Promise<void> {
    if (framing.kind === "none" ? this.#closing() : !(await this.#copyRequestBody(leg, framing))) {
      return;
    }
    if (upgrade) {
      this.#enter(PublicConnState.AwaitingUpgrade);
      await this.#flush();
      const switched = await leg.switched;
      if (this.#closing()) return;
      if (switched) return await this.#relayUpgraded();
    }
    this.#enter(
      isLastRequest(head, connection) ? PublicConnState.Draining : PublicConnState.ReadingHead,
    );
  }

  /**
   * The leg that carries a request for `vhost`: the current one while the Host stays the
   * same (the head is queued on it, without a promise when it fits the gathered bytes), else
   * a new stream (the head rides in its SYN). An Upgrade request always gets a new one, so its
   * answer is the stream's first response. The head goes as `parts` (its own bytes and the
   * X-Forwarded-* lines: see `forwardHeadParts`) when given: as they are when the leg has no
   * header rewrites, else rewritten at byte level (`HostRewrite.requestBytes`); otherwise as
   * `serialized` makes it (with the rewrites). The access rules of the host and of the client it
   * goes to are checked first (once per request, with the route the request takes: a group's
   * turn moves once). Undefined when the request was answered here (401, 403, 404, 502).
   *
   * On a stream that may go to the idle pool (`Leg.poolable`) the `close` option of a last
   * request (`last`) is taken out of its head (the app keeps its connection for a later
   * public connection) and its response gets one instead. A new stream is taken from the
   * pool when one waits there for the same client, host and local port and the request is
   * safe and has no body (`bodyless`; see `mayReuse`).
   */
  #legFor(
    vhost: string,
    hostHeader: string,
    parts: [Uint8Array, Uint8Array] | undefined,
    serialized: (rewrite: HostRewrite | undefined, dropClose: boolean) => Uint8Array,
    upgrade: string[] | undefined,
    authorization: string | undefined,
    head: RequestHead,
    last: boolean,
    bodyless: boolean,
  ): Leg | Promise<Leg | undefined> {
    const cur = this.#leg;
    // A kept-alive stream follows its host, unless its client left the rotation meanwhile
    // (its health check fails): then the next request goes where a new stream would.
    if (
      cur && !upgrade && cur.host === vhost && cur.state === LegState.Open &&
      cur.ts.client?.usable !== false
    ) {
      const denied = this.#server.checkAccess(cur.ts, authorization, this.#peer.ip);
      if (denied) return this.#deny(denied, vhost);
      if (head.version !== "HTTP/1.1") cur.poolable = false;
      const dropClose = last && cur.poolable;
      // The usual head is copied from its two pieces straight into the gathered bytes.
      if (parts && !cur.rewrite && !dropClose && this.#out.addNow(parts[0], parts[1])) {
        return this.#queued(cur, vhost, parts[0].length + parts[1].length, head, false);
      }
      // With rewrites or without its close, the usual head is made where it lies (no field
      // list, no string).
      const headBytes = (parts && partsHead(parts[0], parts[1], cur.rewrite, dropClose)) ||
        serialized(cur.rewrite, dropClose);
      if (this.#out.addNow(headBytes)) {
        return this.#queued(cur, vhost, headBytes.length, head, dropClose);
      }
      return this.#out.add(headBytes).then(() =>
        this.#queued(cur, vhost, headBytes.length, head, dropClose)
      );
    }
    // The head rides in the new stream's SYN, after awaits: joined now, while `raw` is valid.
    const spliced = parts && joinParts(parts);
    const cut = parts?.[0].length ?? 0;
    const headFor = (rw: HostRewrite | undefined, dropClose: boolean) =>
      (spliced &&
        (!rw && !dropClose
          ? spliced
          : partsHead(spliced.subarray(0, cut), spliced.subarray(cut), rw, dropClose))) ||
      serialized(rw, dropClose);
    return this.#newLeg(vhost, hostHeader, headFor, upgrade, authorization, head, last, bodyless);
  }

  /** A request head of `headBytes` bytes went onto the kept-alive `leg`: count it. */
  #queued(
    leg: Leg,
    vhost: string,
    headBytes: number,
    head: RequestHead,
    closeAfter: boolean,
  ): Leg {
    leg.requestBytes += headBytes;
    leg.lastHeadBytes = headBytes;
    if (leg.framed) this.#note(leg, head, vhost, closeAfter);
    this.#server.countRequest(vhost, "proxied");
    return leg;
  }

  /**
   * Note a request whose head went onto `leg` (before the pump may see its response): a leg
   * whose responses are parsed needs each one's method to frame its response (HEAD), the
   * access log its line, the pool where the responses end.
   */
  #note(leg: Leg, head: RequestHead, vhost: string, closeAfter: boolean): void {
    const logged = this.#opts.accessLog ?? false;
    const q = logged ? head.target.indexOf("?") : -1;
    leg.pending.push({
      method: head.method,
      path: q < 0 ? head.target : head.target.slice(0, q),
      host: vhost,
      startedMs: logged ? performance.now() : 0,
      inStart: leg.requestBytes - leg.lastHeadBytes,
      closeAfter,
    });
  }

  /** {@linkcode #legFor} when the request needs a new stream (see there). */
  async #newLeg(
    vhost: string,
    hostHeader: string,
    headFor: (rewrite: HostRewrite | undefined, dropClose: boolean) => Uint8Array,
    upgrade: string[] | undefined,
    authorization: string | undefined,
    head: RequestHead,
    last: boolean,
    bodyless: boolean,
  ): Promise<Leg | undefined> {
    await this.#endLeg();
    // The previous stream's end may have ended the connection (the app closed it, a 504).
    if (this.#closing()) return undefined;
    const route = await this.#server.route(vhost);
    const denied = this.#server.checkAccess(
      { host: route.host, client: route.ok ? route.client : undefined },
      authorization,
      this.#peer.ip,
    );
    if (denied) return await this.#deny(denied, vhost);
    if (!route.ok) {
      await this.#answer(
        route.status,
        route.host,
        String(route.status),
        route.status === 503 ? [["retry-after", String(registryRetryAfterS)]] : [],
      );
      this.state = PublicConnState.Closing;
      return undefined;
    }
    const rewrite = this.#server.rewriteOf(route);
    const localPort = localPortOf(hostHeader, this.#opts.publicPort);
    const poolable = this.#maxIdle > 0 && !upgrade && head.version === "HTTP/1.1" &&
      !rewrite?.rewritesResponse;
    const headBytes = headFor(rewrite, poolable && last);
    const key = idleKey(route.host, localPort);
    if (poolable && bodyless && mayReuse(head.method)) {
      const idle = takeIdleStream(route.client, key);
      if (idle) {
        const reused = await this.#reuse(idle, route, rewrite, headBytes, head, vhost, last, key);
        if (reused !== "stale") return reused;
      }
    }
    let ts: TunnelStream;
    try {
      ts = await this.#server.openStream(route.client, route.host, "http", localPort, headBytes);
    } catch (err) {
      await this.#answer(502, route.host);
      this.#log.debug("cannot open tunnel stream", {
        host: route.host,
        error: errorMessage(err),
      });
      this.state = PublicConnState.Closing;
      return undefined;
    }
    const framed = poolable || (this.#opts.accessLog ?? false) ||
      (rewrite?.rewritesResponse ?? false);
    const leg = new Leg(route.host, ts, upgrade, framed);
    leg.poolable = poolable;
    leg.poolKey = key;
    leg.client = route.client.fingerprint;
    leg.rewrite = rewrite;
    leg.requestBytes = headBytes.length;
    leg.lastHeadBytes = headBytes.length;
    if (framed) this.#note(leg, head, vhost, poolable && last);
    leg.pump = this.#pump(leg);
    this.#leg = leg;
    this.#out.target = ts.out;
    return leg;
  }

  /**
   * Send a request (`headBytes`, safe and without a body) on a stream from the idle pool and
   * wait for the first bytes of its answer. "stale" when the stream turned out closed before
   * any (the app closed its idle connection as the request went out): the caller sends it
   * again on a fresh stream, once. Undefined when the request was answered here (504).
   */
  async #reuse(
    idle: IdleStream,
    route: Extract<Route, { ok: true }>,
    rewrite: HostRewrite | undefined,
    headBytes: Uint8Array,
    head: RequestHead,
    vhost: string,
    last: boolean,
    key: string,
  ): Promise<Leg | undefined | "stale"> {
    const ts = idle.ts;
    try {
      await writeAll(ts.out, headBytes);
    } catch {
      // Closed under us: nothing of the request went out.
      idle.read.catch(() => {});
      ts.release();
      return "stale";
    }
    const leg = new Leg(route.host, ts, undefined, true, true);
    leg.poolable = true;
    leg.poolKey = key;
    leg.client = route.client.fingerprint;
    leg.rewrite = rewrite;
    leg.answered = idle.answered;
    leg.firstRead = idle.read;
    leg.requestBytes = headBytes.length;
    leg.lastHeadBytes = headBytes.length;
    this.#note(leg, head, vhost, last);
    leg.pump = this.#pump(leg);
    this.#leg = leg;
    this.#out.target = ts.out;
    const first = await leg.first!;
    if (first === "started") {
      this.#server.countRequest(route.host, "proxied");
      return leg;
    }
    this.#leg = undefined;
    this.#out.target = undefined;
    if (first === "failed") return undefined;
    ts.release();
    this.#log.debug("idle tunnel stream closed under a request, sending it on a new one", {
      host: route.host,
    });
    return "stale";
  }

  /** Refuse a request here (401/403): nothing of it reaches the client; its body is not read. */
  async #deny(denied: AccessDenied, vhost: string): Promise<undefined> {
    await this.#endLeg();
    this.#log.info("access denied", {
      remote: this.#peer.remote,
      host: vhost,
      status: denied.status,
      failure: denied.reason,
    });
    const challenge = denied.challenge;
    await this.#answer(
      denied.status,
      vhost,
      undefined,
      challenge ? [["WWW-Authenticate", challenge]] : [],
    );
    this.state = PublicConnState.Closing;
    return undefined;
  }

  /** Request-body bytes to the tunnel stream (`room`: see lib/http's `Sink`). */
  #sink = async (p: Uint8Array, room = 0): Promise<void> => {
    this.#idle?.touch();
    if (this.#leg) this.#leg.requestBytes += p.length;
    await this.#out.add(p, room);
  };

  /**
   * Copy one request body; false when the connection must end (answered if need be). Reads
   * into the copy's buffer leave the tunnel stream's frame headroom in front, so each large
   * piece goes onto the stream as one transport write, header and payload together.
   */
  async #copyRequestBody(leg: Leg, framing: BodyFraming): Promise<boolean> {
    try {
      const room = this.#out.headroomBytes;
      await copyBody(this.#reader, this.#pub, framing, this.#sink, undefined, undefined, room);
      return !this.#closing();
    } catch (err) {
      leg.poolable = false;
      if (this.#closing()) return false;
      this.state = PublicConnState.Closing;
      this.#log.debug("request body copy failed", { host: leg.host, error: errorMessage(err) });
      const badBody = err instanceof HttpError && err.reason !== "eof";
      if (badBody && leg.responseBytes === 0) {
        // Malformed body framing before anything was answered on this stream: the client
        // gets a 400 (the app's half-received request is reset), not a silent close.
        leg.state = LegState.Abandoned;
        leg.ts.stream.reset();
        await leg.pump;
        if (leg.responseBytes === 0) await this.#answer(400, leg.host);
        return false;
      }
      leg.ts.stream.reset();
      return false;
    }
  }

  /** After the app's 101: the rest of the public side goes to the app untouched. */
  async #relayUpgraded(): Promise<void> {
    this.state = PublicConnState.Upgraded;
    await copyBody(this.#reader, this.#pub, { kind: "close" }, this.#sink).catch((err) => {
      this.#log.debug("upgraded copy ended", { error: errorMessage(err) });
    });
    await this.#halfClose();
    this.#enter(PublicConnState.Draining);
  }

  /**
   * No more requests: let the responses drain. After the public side's EOF (still
   * ReadingHead) the stream's write side is closed at once. After a last request
   * (`Connection: close`, Draining) it is not, as the app closes once it answered (RFC 9112
   * §9.6) and some apps drop a response whose request side was half-closed: the public side
   * is read (and dropped: no further request is processed) until it ends, then the stream
   * is half-closed too, or until the app ends the stream.
   */
  async #drain(): Promise<void> {
    const leg = this.#leg;
    if (!leg) return;
    const draining = this.state === PublicConnState.Draining;
    if (leg.poolable && (draining || this.state === PublicConnState.ReadingHead)) {
      // The stream outlives this connection: the responses go out, then it goes to the
      // pool; after a last request the public side is closed, lingering.
      await this.#endLeg();
      if (draining && !this.#closing()) await this.#lingeringClose();
      return;
    }
    if (draining) {
      await this.#flush();
      const publicEnded = this.#discardUntilEof();
      if ((await Promise.race([leg.pump.then(() => "pump"), publicEnded])) === "pump") return;
    }
    await this.#halfClose();
    await leg.pump;
  }

  /**
   * After the last response: half-close the public side, and read and drop what the client
   * still sends until its end, for at most `lingerMs` ({@linkcode HttpFrontOptions}).
   */
  async #lingeringClose(): Promise<void> {
    await this.#flush();
    await this.#conn.closeWrite().catch(() => {
      // Closed already.
    });
    const timer = setTimeout(
      () => closeQuietly(this.#conn),
      this.#opts.lingerMs ?? defaultLingerMs,
    );
    try {
      await this.#discardUntilEof();
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Read and drop what the public side still sends; resolves at its EOF (or failure). One
   * such read runs at a time (a later call gets the same promise).
   */
  #discardUntilEof(): Promise<"public"> {
    return this.#discarding ??= this.#discard();
  }

  /** {@linkcode #discardUntilEof}'s loop. */
  async #discard(): Promise<"public"> {
    this.#reader.takeBuffered();
    const buf = new Uint8Array(1024);
    try {
      while ((await this.#conn.read(buf)) !== null) {
        // Bytes after a last request are not processed (RFC 9112 §9.6).
      }
    } catch {
      // The connection was closed under us (the pump, the idle timer): that is an end too.
    }
    return "public";
  }

  /** Send the gathered request bytes now. */
  async #flush(): Promise<void> {
    await this.#out.flush().catch(() => {
      // Stream gone: the pump has ended or will.
    });
  }

  /** Send what is gathered and close the current stream's write side. */
  async #halfClose(): Promise<void> {
    const leg = this.#leg;
    if (!leg) return;
    await this.#flush();
    await leg.ts.stream.closeWrite().catch(() => {
      // Stream gone: the pump has ended or will.
    });
  }

  /**
   * Stop using the current leg: let its responses drain, then hand it to the idle pool when
   * it may go there (see `Leg.poolable`), else close its write side and let it end.
   */
  async #endLeg(): Promise<void> {
    const leg = this.#leg;
    if (!leg) return;
    this.#leg = undefined;
    leg.state = LegState.Finishing;
    await this.#out.flush().catch(() => {
      // Stream already gone: the pump ends on its own.
    });
    this.#out.target = undefined;
    if (leg.poolable) {
      leg.handBack = true;
      if (leg.pending.length === 0 && leg.idleRead) {
        // Every response is out and the pump waits for bytes nobody asked for: its read
        // goes to the pool with the stream.
        this.#legDone(leg, "proxied");
        this.#pool(leg, leg.idleRead);
        return;
      }
      // The pump pools it at the next response boundary, or closes it.
      await leg.pump;
      if ((leg.state as LegState) !== LegState.Pooled) leg.ts.release();
      return;
    }
    await leg.ts.stream.closeWrite().catch(() => {
      // Stream already gone: the pump ends on its own.
    });
    await leg.pump;
    leg.ts.release();
  }

  /** Hand `leg`'s stream (at a response boundary, `read` parked on it or not) to the pool. */
  #pool(leg: Leg, read: Promise<Uint8Array | null> | undefined): void {
    leg.state = LegState.Pooled;
    if (leg.watch) deadlines.delete(leg.watch);
    const client = leg.ts.client;
    if (!client) {
      read?.catch(() => {});
      leg.ts.release();
      return;
    }
    putIdleStream(
      client,
      leg.poolKey,
      leg.ts,
      read,
      leg.answered,
      this.#maxIdle,
      this.#opts.idleStreamMs ?? defaultIdleStreamMs,
    );
  }

  /**
   * Answer the public client ourselves with an error page; the connection ends after it,
   * lingering (see {@linkcode #endAfterAnswer}).
   */
  async #answer(
    status: number,
    host: string,
    outcome = String(status),
    headers: [string, string][] = [],
  ): Promise<void> {
    // No request read meanwhile goes anywhere.
    this.state = PublicConnState.Closing;
    this.#server.countRequest(host, outcome);
    const page = errorPage(status, host);
    await writeAll(
      this.#conn,
      simpleResponse(status, page, { contentType: "text/html; charset=utf-8", headers }),
    ).catch(() => {
      // The public client left: nothing to tell it.
    });
    this.#endAfterAnswer();
  }

  /**
   * After an answer of our own (an error): no more requests, the public side is half-closed
   * now (the answer, then our FIN), and closed at the latest `lingerMs` later. The
   * main loop alone reads: it drops whatever the client still sends until its EOF
   * ({@linkcode #lingerOut}), as nginx and haproxy do; a close with a pipelined request still
   * unread in the kernel's buffer would be a reset, which can destroy the answer before the
   * client read it (RFC 9112 §9.6).
   */
  #endAfterAnswer(): void {
    this.state = PublicConnState.Closing;
    if (this.#lingerTimer !== undefined) return;
    this.#lingerTimer = setTimeout(
      () => closeQuietly(this.#conn),
      this.#opts.lingerMs ?? defaultLingerMs,
    );
    this.#conn.closeWrite().catch(() => {
      // Closed already: nothing to linger on (the reads fail at once).
    });
  }

  /** The main loop's end after {@linkcode #endAfterAnswer}: drop reads until EOF (bounded). */
  async #lingerOut(): Promise<void> {
    if (this.#lingerTimer === undefined) return;
    await this.#discardUntilEof();
    clearTimeout(this.#lingerTimer);
  }

  /** The public connection ends now (the main loop sees the state, reads fail). */
  #close(): void {
    this.state = PublicConnState.Closing;
    closeQuietly(this.#conn);
  }

  /** Copy the response bytes of `leg` to the public side until its stream ends. */
  async #pump(leg: Leg): Promise<void> {
    const server = this.#server;
    // A reused stream's reply was read by its first pump (its requests are counted by #reuse).
    if (!leg.reused) {
      try {
        await leg.ts.reply(server.responseTimeoutMs);
      } catch (err) {
        leg.settle(false);
        leg.poolable = false;
        if (leg.state === LegState.Abandoned) return;
        const e = err as TunnelError;
        const status = e.reason === "timeout" ? 504 : 502;
        await this.#answer(status, leg.host); // the connection ends with it
        this.#legDone(leg, String(status), e.reason, e.message);
        return;
      }
      server.countRequest(leg.host, "proxied");
    }
    const watch = this.#watchFirstByte(leg);
    leg.watch = watch;
    let buf: ResponseBuffer | undefined;
    try {
      if (leg.upgrade) {
        buf = new ResponseBuffer();
        const src = await this.#answerToUpgrade(leg, leg.ts.body());
        while (true) {
          const b = buf.get();
          const n = await src.read(b);
          if (n === null) break;
          leg.responseBytes += n;
          this.#idle?.touch();
          await writeAll(this.#conn, b.subarray(0, n));
          buf.adapt(n);
        }
      } else if (leg.framed) {
        const end = await this.#copyParsed(leg);
        if (end === "left") return; // pooled, or stale (see #copyParsed)
        if (end === "opaque") await this.#copyOpaque(leg);
        else if (end !== "end") {
          // Its public connection is done with it, every response is out.
          this.#legDone(leg, "proxied");
          if (end === "boundary") this.#pool(leg, undefined);
          else leg.ts.release();
          return;
        }
        leg.poolable = false;
      } else await this.#copyOpaque(leg);
      if (leg.state === LegState.Open) {
        // The app closed its connection: so does the public one (after what was sent).
        this.state = PublicConnState.Closing;
        await this.#conn.closeWrite().catch(() => {
          // Already closed.
        });
      }
      this.#legDone(leg, "proxied");
    } catch (err) {
      leg.poolable = false;
      if (leg.state === LegState.Pooled) return; // its parked read failed: the pool's business
      if (
        leg.reused && leg.responseBytes === 0 && leg.state === LegState.Open && !this.#closing()
      ) {
        // A reused stream reset before its first response: the request goes again.
        leg.state = LegState.Stale;
        leg.settleFirst("stale");
        return;
      }
      let outcome = leg.timedOut ? "504" : "reset";
      if (leg.state === LegState.Open) {
        if (leg.responseBytes === 0) {
          // Nothing answered yet: the app's answer to an Upgrade request was not a usable
          // response head, or the stream broke before a response (its client went away
          // mid-request): a 502 rather than an empty reply, and the only answer (the 504 watch
          // must not fire while the 502 waits for the client to take it).
          deadlines.delete(watch);
          await this.#answer(502, leg.host); // the connection ends with it
          leg.ts.stream.reset();
          outcome = "502";
        } else this.#close(); // a response broke off: nothing to wait for
      }
      this.#legDone(leg, outcome, leg.timedOut ? "timeout" : "io", errorMessage(err));
    } finally {
      deadlines.delete(watch);
      buf?.release();
      leg.settle(false);
      leg.settleFirst("failed");
    }
  }

  /**
   * The usual copy (no access log, no response rewrites, no upgrade): the response bytes go
   * out as the mux stream holds them, one write per read and no copy of our own (what a
   * kept-alive small response costs the front: a read and a write).
   */
  async #copyOpaque(leg: Leg): Promise<void> {
    const ts = leg.ts, conn = this.#conn;
    for (let v = await ts.readView(); v !== null; v = await ts.readView()) {
      leg.responseBytes += v.length;
      this.#idle?.touch();
      const n = await conn.write(v);
      if (n < v.length) await writeAll(conn, v.subarray(n));
      ts.releaseView(v.length);
    }
  }

  /**
   * The access log's and the response rewrites' copy: each response head is read (see
   * {@linkcode #passHeads}), its body copied by its framing, then its request's line is
   * logged. Returns at the stream's end between responses, or after a response framed by the
   * close (copied to the stream's end). The usual response (a head written as a serialiser
   * writes one and a body of known length) that came whole in one of the mux stream's views
   * goes out from there, one write, no copy (as the opaque copy sends it), or with response
   * rewrites as one rewritten copy (`HostRewrite.responseBytes`: no parse). Any other is read from a reader
   * that copies from the views: a head that needs no change goes out as it came, and a
   * response's bytes are gathered until the stream must be read again (one that came whole in
   * one read goes straight from the reader's buffer).
   *
   * Returns "end" at the stream's end (or after a response framed by the close); once the
   * public connection is done with the leg (`handBack`) and every response is out, "boundary"
   * when the stream may go to the idle pool, else "unwanted"; "left" when the leg was pooled
   * while the copy waited, or a reused stream ended before its first response (Stale).
   * A response whose request lost its `close` option (`closeAfter`) gets `Connection: close`
   * (at byte level when it came whole in a view, else parsed). "opaque" at a boundary after
   * {@linkcode parsedResponsesBeforeOpaque} responses of a leg parsed only to be pooled: the
   * rest is copied opaque, never pooled.
   */
  async #copyParsed(leg: Leg): Promise<"end" | "boundary" | "unwanted" | "left" | "opaque"> {
    const ts = leg.ts, conn = this.#conn;
    const out = new WriteCoalescer();
    out.target = conn;
    /** The stream's current view and how much of it was used (null: none held). */
    let view: Uint8Array | null = null;
    let at = 0;
    const used = (n: number) => {
      at += n;
      if (at === view!.length) {
        ts.releaseView(view!.length);
        view = null;
      }
    };
    /** The slow path's source: the views' bytes, copied. */
    const from: Pick<Duplex, "read"> = {
      read: async (p) => {
        if (out.pending) await out.flush();
        if (view === null) {
          view = await ts.readView();
          at = 0;
          if (view === null) return null;
        }
        const n = Math.min(p.length, view.length - at);
        p.set(view.subarray(at, at + n));
        used(n);
        return n;
      },
    };
    /** The slow path's reader, made when a response first needs it (most never do). */
    let r: BufferedReader | undefined;
    const sink = (p: Uint8Array): Promise<void> => {
      leg.responseBytes += p.length;
      this.#idle?.touch();
      return out.add(p);
    };
    const rewrites = leg.rewrite?.rewritesResponse ?? false;
    /** Parsed only for the pool (no access log, no response rewrites). */
    const forPoolOnly = !rewrites && !this.#opts.accessLog;
    /** Responses copied by this call. */
    let copied = 0;
    /**
     * The stream ended (null read): "end", or for a reused stream with nothing answered yet
     * "left" (Stale: its request goes again on a fresh stream).
     */
    const ended = (): "end" | "left" => {
      if (
        leg.reused && leg.responseBytes === 0 && leg.state === LegState.Open && !this.#closing()
      ) {
        leg.state = LegState.Stale;
        leg.settleFirst("stale");
        return "left";
      }
      return "end";
    };
    /** The leg's own fields of its access lines, rendered once. */
    let tail: LogTail | undefined;
    /** The front response is out: its request's line (`outStart`: responseBytes before it). */
    const answered = (status: number, outStart: number) => {
      const req = leg.pending.shift();
      if (!this.#opts.accessLog) return;
      const next = leg.pending[0];
      tail ??= this.#log.tail({
        client: leg.client,
        cid: leg.ts.client?.id,
        remote: this.#peer.remote,
      });
      this.#log.info("access", {
        host: req?.host ?? leg.host,
        method: req?.method ?? "-",
        path: req?.path ?? "-",
        status,
        in: req ? (next?.inStart ?? leg.requestBytes) - req.inStart : 0,
        out: leg.responseBytes - outStart,
        ms: req ? Math.round(performance.now() - req.startedMs) : 0,
        rid: `${leg.ts.requestId}.${++leg.answered}`,
      }, tail);
    };
    try {
      while (true) {
        if (leg.handBack && leg.pending.length === 0) {
          // Its public connection is done with it and every response is out.
          return view === null && !r?.buffered && leg.poolable ? "boundary" : "unwanted";
        }
        if (
          forPoolOnly && copied >= parsedResponsesBeforeOpaque && leg.pending.length === 0 &&
          view === null && !r?.buffered
        ) {
          leg.framed = false;
          leg.poolable = false;
          return "opaque";
        }
        if (!r?.buffered) {
          // Between responses, nothing copied: take the next view, and send the responses
          // that lie whole in it from there (with response rewrites, or `Connection: close`
          // for a request that lost its own, a rewritten copy).
          if (view === null) {
            if (out.pending) {
              // What was gathered goes out before a read that may wait (then the checks
              // above again: the public connection may be done with the leg meanwhile).
              await out.flush();
              continue;
            }
            // With no request waiting, the read may go to the idle pool with the stream.
            const read = leg.firstRead ?? ts.readView();
            leg.firstRead = undefined;
            if (leg.poolable && leg.pending.length === 0) leg.idleRead = read;
            view = await read;
            if (leg.state === LegState.Pooled) {
              view = null; // the pool's now
              return "left";
            }
            leg.idleRead = undefined;
            at = 0;
            if (view === null) return ended();
          }
          const v = at === 0 ? view : view.subarray(at);
          const final = scannedFinal(scanResponseHead(v), leg.pending[0]?.method ?? "GET");
          if (final && this.#staleFirst(leg, final.status)) return "left";
          const framing = final?.framing;
          const closeAfter = leg.pending[0]?.closeAfter ?? false;
          const n = closeAfter && rewrites
            ? Infinity
            : framing?.kind === "none"
            ? final!.headBytes
            : framing?.kind === "length"
            ? final!.headBytes + framing.length
            : Infinity;
          if (n <= v.length) {
            // A response nobody asked for (or the app's close) ends the stream's reuse.
            if (!final!.persistent || leg.pending.length === 0) leg.poolable = false;
            if (out.pending) await out.flush();
            const outStart = leg.responseBytes;
            const whole = n === v.length ? v : v.subarray(0, n);
            const bytes = rewrites
              ? leg.rewrite!.responseBytes(whole, final!.headBytes)
              : closeAfter
              ? closingResponseBytes(whole, final!.headBytes)
              : whole;
            leg.responseBytes += bytes.length;
            this.#idle?.touch();
            const w = await conn.write(bytes);
            if (w < bytes.length) await writeAll(conn, bytes.subarray(w));
            used(n);
            answered(final!.status, outStart);
            copied++;
            continue;
          }
          // Not all there, or not the usual response: read as below, from this view on.
        }
        // Wait for the next response (or the stream's end), consuming nothing.
        r ??= new BufferedReader(from, publicReadBytes);
        if (r.buffered === 0 && !(await r.fill())) return ended();
        const outStart = leg.responseBytes;
        const method = leg.pending[0]?.method ?? "GET";
        const closeAfter = leg.pending[0]?.closeAfter ?? false;
        // The usual final head, as a serialiser writes it and all buffered: no promise.
        const { status, framing, headBytes, persistent, stale } =
          (rewrites || closeAfter ? undefined : scannedFinal(scanResponseHead(r.peek()), method)) ??
            await this.#passHeads(leg, r, sink, method, closeAfter);
        if (stale || (headBytes > 0 && this.#staleFirst(leg, status))) return "left";
        if (!persistent || leg.pending.length === 0) leg.poolable = false;
        const n = headBytes + (framing.kind === "length" ? framing.length : 0);
        const whole = framing.kind === "none" || framing.kind === "length";
        if (headBytes > 0 && whole && r.buffered >= n) {
          // All of a small response came in one read: it goes out as it came, in one write
          // straight from the reader's buffer (what is gathered first).
          if (out.pending) await out.flush();
          leg.responseBytes += n;
          this.#idle?.touch();
          await writeAll(conn, r.peek().subarray(0, n));
          r.skip(n);
        } else {
          if (headBytes > 0) await passOn(r, sink, headBytes);
          await copyBody(r, from, framing, sink);
        }
        // The response goes out before its line is logged, as when each piece was written
        // at once: a client gone in the middle of it gets no line.
        if (this.#opts.accessLog && out.pending) await out.flush();
        answered(status, outStart);
        copied++;
        if (framing.kind === "close") return "end";
      }
    } finally {
      // A view taken is counted as read, as it is when used up.
      if (view !== null) ts.releaseView(view.length);
      // What was gathered goes out even when the response broke off (as it went before):
      // a failure of that write is the public side's, which the pump's caller sees next.
      await out.flush().catch(() => {});
    }
  }

  /**
   * Pass on the interim (1xx) response heads at the front of `r`, and return the final head's
   * status and body framing (`method`: its request's). A head written as
   * `serializeResponseHead` writes one and all buffered is only scanned: the final one stays
   * in `r` (`headBytes` long) for the caller to pass on with its body, or when the leg rewrites
   * responses is rewritten at byte level and passed on (`headBytes` 0). Any other is parsed
   * (and rejected when bad), rewritten when the leg rewrites responses, and passed on
   * (`headBytes` 0).
   */
  async #passHeads(
    leg: Leg,
    r: BufferedReader,
    sink: (p: Uint8Array) => Promise<void>,
    method: string,
    closeAfter: boolean,
  ): Promise<FinalHead> {
    const rewrites = leg.rewrite?.rewritesResponse ?? false;
    while (true) {
      const scan = closeAfter ? undefined : scanResponseHead(r.peek());
      if (scan && scan.status < 200) {
        await passOn(r, sink, scan.length);
        continue;
      }
      const final = scannedFinal(scan, method);
      if (final && rewrites) {
        // A reused stream's first answer is decided before any byte of it goes out, as on the
        // other paths (no reused leg rewrites responses today: such a host's streams are never
        // pooled nor taken from the pool; this keeps it so if that changes).
        if (this.#staleFirst(leg, final.status)) {
          return { ...final, headBytes: 0, persistent: false, stale: true };
        }
        // Rewritten where it lies (no field list, no string), then passed on.
        const n = final.headBytes;
        await sink(leg.rewrite!.responseBytes(r.peek().subarray(0, n), n));
        r.skip(n);
        return { ...final, headBytes: 0 };
      }
      if (final) return final;
      const { head, raw } = takeBufferedResponseHead(r) ?? await readResponseHeadRaw(r);
      if (head.status < 200) {
        await sink(raw ?? serializeResponseHead(head));
        continue;
      }
      if (this.#staleFirst(leg, head.status)) {
        return {
          status: head.status,
          framing: { kind: "none" },
          headBytes: 0,
          persistent: false,
          stale: true,
        };
      }
      await sink(
        rewrites || closeAfter
          ? serializeResponseHead(rewritten(leg, head, closeAfter))
          : raw ?? serializeResponseHead(head),
      );
      return {
        status: head.status,
        framing: responseBodyFraming(head, method),
        headBytes: 0,
        persistent: responsePersistent(head),
      };
    }
  }

  /**
   * A reused stream's first final response (`status`, nothing of it sent yet) decides its
   * `first` (see #reuse): true for a 408 as the first bytes after the pool, which the app
   * sent as it closed its idle connection while the request was on its way there (it never
   * processed it; as Chromium and Go's transport read a 408 on a reused connection): the
   * leg is Stale and the request goes again on a fresh stream, the 408 to nobody. Anything
   * else: "started". False once decided.
   */
  #staleFirst(leg: Leg, status: number): boolean {
    if (!leg.firstPending) return false;
    if (
      status === 408 && leg.responseBytes === 0 && leg.state === LegState.Open && !this.#closing()
    ) {
      leg.state = LegState.Stale;
      leg.settleFirst("stale");
      return true;
    }
    leg.settleFirst("started");
    return false;
  }

  /**
   * One log line and one duration per tunnel stream (a request, or a kept-alive run of
   * requests to one host): `end` is the outcome counted in warren_tunnel_requests_total.
   */
  #legDone(leg: Leg, end: string, failure?: string, error?: string): void {
    const seconds = (performance.now() - leg.startedMs) / 1000;
    tunnelRequestSeconds.observe({ outcome: end }, seconds);
    const fields = {
      remote: this.#peer.remote,
      host: leg.host,
      end,
      up: leg.requestBytes,
      down: leg.responseBytes,
      ms: Math.round(seconds * 1000),
    };
    if (failure === undefined) this.#log.info("request done", fields);
    else this.#log.info("request done", { ...fields, failure, error });
  }

  /**
   * The app's answer to an Upgrade request: interim heads and the final head are relayed;
   * `leg.switched` is decided by it. A 101 for a protocol the client did not offer is an
   * HttpError (answered 502). Returns the byte source after the head.
   */
  async #answerToUpgrade(leg: Leg, src: Duplex): Promise<Duplex> {
    const r = new BufferedReader(src, publicReadBytes);
    while (true) {
      const head = await readResponseHead(r);
      if (
        head.status === 101 && !upgradeAccepted(leg.upgrade!, headerTokens(head.headers, "upgrade"))
      ) {
        throw new HttpError("101 for a protocol the client did not ask for");
      }
      const final = head.status === 101 || head.status >= 200;
      const bytes = serializeResponseHead(final ? rewritten(leg, head) : head);
      // Counted before the write (which may wait for the client): the 504 watch must not
      // answer under a head already on its way.
      leg.responseBytes += bytes.length;
      this.#idle?.touch();
      await writeAll(this.#conn, bytes);
      if (head.status === 101) {
        leg.settle(true);
        break;
      }
      if (head.status >= 200) {
        leg.settle(false);
        break;
      }
    }
    return withPrefix(src, r.takeBuffered());
  }

  /**
   * 504 when no response byte came for responseTimeoutMs after the last request byte (a
   * long upload keeps re-arming it, like nginx's proxy_read_timeout).
   */
  #watchFirstByte(leg: Leg): Deadline {
    const timeoutMs = this.#server.responseTimeoutMs;
    const watch: Deadline = {
      due: deadlines.clockMs() + timeoutMs,
      fire: (nowMs) => {
        if (leg.responseBytes > 0 || leg.state === LegState.Abandoned) return;
        const later = (this.#idle?.lastMs ?? 0) + timeoutMs;
        if (later > nowMs) return later;
        // The app behind the client never answered: 504, and this connection ends (the app
        // may still answer late: nothing of it may follow on this connection). The 504 is the
        // only answer: the pump, woken by the reset, stays quiet (Abandoned), not a 502 too.
        this.state = PublicConnState.Closing;
        leg.state = LegState.Abandoned;
        leg.timedOut = true;
        // #answer does not reject (a gone client is its own business).
        void this.#answer(504, leg.host); // the connection ends with it
        leg.ts.stream.reset();
      },
    };
    deadlines.add(watch);
    return watch;
  }
}

/** A final response head: its status, its body's framing, and its bytes left in the reader. */
interface FinalHead {
  status: number;
  framing: BodyFraming;
  /** The head's length when it is still in the reader (scanned), else 0 (passed on). */
  headBytes: number;
  /** Whether the app keeps its connection after it (see `responsePersistent`). */
  persistent: boolean;
  /** A reused stream's stale first answer (see `#staleFirst`): not passed on. */
  stale?: boolean;
}

/**
 * The final head `scan` found (left in the reader), with its body framing for a request of
 * `method`. Undefined for no scan, an interim head, or a faulty framing (a bad
 * Content-Length): the parser's path passes such a head on and then rejects it.
 */
function scannedFinal(scan: ResponseHeadScan | undefined, method: string): FinalHead | undefined {
  if (!scan || scan.status < 200) return undefined;
  const { status, length } = scan;
  try {
    const framing = responseBodyFraming({ status, headers: scan.framingFields }, method);
    return { status, framing, headBytes: length, persistent: scan.persistent };
  } catch {
    return undefined; // The parser's path passes the head on and throws the same error.
  }
}

/**
 * The usual request head from its two pieces (`fields` and `forwarded`, see
 * `forwardHeadParts`) with `rewrite`'s request rules and, with `dropClose`, without its `close`
 * option, made at byte level; undefined when it cannot be (the caller serialises the fields).
 */
function partsHead(
  fields: Uint8Array,
  forwarded: Uint8Array,
  rewrite: HostRewrite | undefined,
  dropClose: boolean,
): Uint8Array | undefined {
  if (!rewrite) {
    return dropClose ? withoutCloseBytes(fields, forwarded) : joinParts([fields, forwarded]);
  }
  const kept = dropClose ? withoutCloseBytes(fields) : fields;
  return kept && rewrite.requestBytes(kept, forwarded);
}

/** Pass the next `n` bytes of `r` on to `sink` (they must be buffered). */
async function passOn(
  r: BufferedReader,
  sink: (p: Uint8Array) => Promise<void>,
  n: number,
): Promise<void> {
  await sink(r.peek().subarray(0, n));
  r.skip(n);
}

/**
 * A final response head with its leg's response rewrites applied, and with `close` as its
 * only connection option when the public connection ends after it.
 */
function rewritten(leg: Leg, head: ResponseHead, close = false): ResponseHead {
  const h = leg.rewrite?.rewritesResponse
    ? { ...head, headers: leg.rewrite.response(head.headers) }
    : head;
  if (!close) return h;
  const headers = h.headers.filter(([k]) => !fieldNameIs(k, "connection"));
  headers.push(["Connection", "close"]);
  return { ...h, headers };
}

/**
 * Serve one public connection (HTTP/1.x) of the standalone front. Never throws for
 * protocol errors: they are answered with 400/404/502/504 and a close.
 */
export async function handlePublicConn(
  server: TunnelServer,
  conn: Duplex,
  peer: PeerInfo,
  opts: HttpFrontOptions = {},
  ctx?: Pick<ConnContext, "handshakeDone" | "signal">,
): Promise<void> {
  await new PublicConn(server, conn, peer, opts, ctx).run();
}
