/**
 * The HTTP proxy protocol as library code: serve one client connection of an HTTP proxy --
 * `CONNECT host:port` tunnels and absolute-URI forward requests with keep-alive -- dialling
 * every destination through a caller-supplied `connect`, so the service decides how
 * (direct, IPv6 first, an upstream SOCKS5 proxy, a seaprox link).
 * @module
 */

import type { Logger } from "../log.ts";
import type { Abortable, Duplex, HostPort, NetFailureReason, RelayStats } from "../net/mod.ts";
import type { HeadLimits } from "./head.ts";
import { HttpProxyConn } from "./proxy_conn.ts";

export {
  defaultProxyHeadTimeoutMs,
  defaultProxyIdleTimeoutMs,
  HttpProxyConn,
  HttpProxyState,
  statusForFailure,
} from "./proxy_conn.ts";

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
   * When set, every request must carry `Proxy-Authorization: Basic ...` accepted by this
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
  /**
   * Whether the client connection and what `connect` returns have TCP_NODELAY already
   * (`serve()` and `dial()` set it): the proxy then makes no setsockopt call of its own, one
   * per socket. Otherwise it turns Nagle off itself. @default false
   */
  socketsNoDelay?: boolean;
  /** Limits on request and response heads. @default 64 KiB, 100 fields */
  limits?: HeadLimits;
  /** Abort: the connection (and any upstream) is closed and the call resolves. */
  signal?: Abortable;
  /**
   * Called once the first request head was read and authorised (stop a handshake timer). With
   * it, the caller's handshake timer is the only watch over the first head; without, the idle
   * timeout runs from the start.
   */
  handshakeDone?: () => void;
  /**
   * Live counters of every byte to and from destinations (aToB: client to destination),
   * updated as they move, for a caller that shows a connection's traffic while it lasts.
   */
  stats?: RelayStats;
  /** Called after each request with what happened (status, bytes, failure reason). */
  onExchange?: (e: HttpExchange) => void;
  log?: Logger;
}

/** One request served by the proxy, as reported to `onExchange`. */
export interface HttpExchange {
  /** Request method (`CONNECT`, `GET` ...); empty when the head itself was bad. */
  method: string;
  /** Destination, once known. */
  dest?: HostPort;
  /** Status sent to the client (200 for an established tunnel); 0 if none could be sent. */
  status: number;
  /**
   * Why it failed: a dial failure reason, or "auth", "bad-request", "upstream-protocol" ...;
   * "head-timeout": a kept-alive connection's next head did not complete within
   * `headTimeoutMs` (the connection was closed).
   */
  failure?:
    | NetFailureReason
    | "auth"
    | "bad-request"
    | "upstream-protocol"
    | "client-gone"
    | "head-timeout";
  /** Username when proxy authentication was used. */
  username?: string;
  /** Body (or tunnel) bytes client -> destination. */
  requestBytes: number;
  /** Body (or tunnel) bytes destination -> client. */
  responseBytes: number;
}

/**
 * Serve one client connection of an HTTP proxy until it is done, then close it.
 *
 * - `CONNECT host:port` -> `opts.connect(dest)` -> `200 Connection Established` -> raw relay
 *   (half-close kept; bytes the client sent early are forwarded).
 * - `GET http://host[:port]/path` (any method, absolute URI) -> the request is sent in origin
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
 * ```ts
 * import { handleHttpProxy, staticCredentials } from "./mod.ts";
 * import { dial, serve } from "../net/mod.ts";
 * const origin = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => new Response("ok"));
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const server = serve(listener, (conn, ctx) =>
 *   handleHttpProxy(conn, {
 *     connect: (dest) => dial(dest.host, dest.port, { timeoutMs: 10_000 }),
 *     authenticate: staticCredentials("user", "pass"),
 *     handshakeDone: ctx.handshakeDone,
 *     signal: ctx.signal,
 *   }));
 * const client = Deno.createHttpClient({
 *   proxy: { url: `http://127.0.0.1:${listener.addr.port}`, basicAuth: { username: "user", password: "pass" } },
 * });
 * const res = await fetch(`http://127.0.0.1:${origin.addr.port}/`, { client });
 * console.assert((await res.text()) === "ok");
 * client.close();
 * await server.stop();
 * await origin.shutdown();
 * ```
 */
export function handleHttpProxy(conn: Duplex, opts: HttpProxyOptions): Promise<void> {
  return new HttpProxyConn(conn, opts).run();
}
