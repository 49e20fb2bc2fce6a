/**
 * `serveProxy(listener, type, opts)`: the shared half of every proxy -- accept (lib/net
 * `serve`: limit, handshake timer, graceful stop), run the type's handshake, dial through
 * the configured Dialer with the dest side moving CONNECTING -> CONNECTED, answer, relay,
 * and log one line per connection with its end reason.
 * @module
 */

import type { AuthFailureLimiter } from "../net/ratelimit.ts";
import { type Logger, silentLogger } from "../log.ts";
import type { HostPort } from "../net/addr.ts";
import { closeQuietly, type Duplex, withPrefix, writeAll } from "../net/duplex.ts";
import { BufferedReader } from "../net/reader.ts";
import { encodeProxyHeader, readProxyHeader } from "../proxyproto/mod.ts";
import { describeEndpoint } from "./state.ts";
import { classifyError, errorMessage, isDisconnect, NetError } from "../net/errors.ts";
import { relay } from "../net/relay.ts";
import type { Abortable } from "../net/abort.ts";
import { type ConnContext, defaultHandshakeTimeoutMs, serve, type Server } from "../net/serve.ts";
import { ConnectionTable, ProxyConnection, type ProxyConnectionRecord } from "./connection.ts";
import type { DialedConn, Dialer } from "./dialer.ts";
import type {
  Authenticator,
  ProxyRequest,
  ProxyType,
  ProxyTypeContext,
  SessionContext,
} from "./proxy_type.ts";

/** Bytes read per call while looking for a PROXY header (what follows it is handed on). */
const proxyHeaderChunkBytes = 512;

/** Default idle timeout of a relayed connection: 5 minutes without a byte either way. */
export const defaultIdleTimeoutMs = 300_000;

/** Observers of connection life, for metrics. */
export interface ProxyHooks {
  /** A client was accepted and admitted. */
  onOpen?(c: ProxyConnection): void;
  /** A connection closed (also called for connections refused by the limit). */
  onClose?(rec: ProxyConnectionRecord): void;
}

/** Options of {@linkcode serveProxy}. */
export interface ProxyServerOptions {
  /** How destinations are reached. */
  dialer: Dialer;
  /** Connections at once; shared across listeners when `table` is shared. @default 1024 */
  maxConns?: number;
  /** Live-connection table (pass one to several listeners for a global limit). */
  table?: ConnectionTable;
  /** Close a relay after this long without traffic; 0 = never. @default 300000 */
  idleTimeoutMs?: number;
  /** Time a client has for its handshake; 0 = off. @default 10000 */
  handshakeTimeoutMs?: number;
  /** Time live connections get after stop() before they are cut. @default 5000 */
  drainTimeoutMs?: number;
  /** Credentials check, set when the listener URL carried user:pass. */
  authenticate?: Authenticator;
  /** Limits failed credential checks per client address (refused without checking). */
  authLimiter?: AuthFailureLimiter;
  /**
   * Expect a PROXY protocol header (v1 or v2) first, and take the client's address from it,
   * from peers (IP text) this accepts; any other peer is refused (closed, logged), since it
   * could claim any address.
   */
  acceptProxyProtocol?: (peerIp: string) => boolean;
  /**
   * Send a PROXY header of this version to every destination before the client's bytes
   * (address types: static, SOCKS): the client's address (from an accepted header, else the
   * peer's) and the address it connected to.
   */
  sendProxyProtocol?: 1 | 2;
  log?: Logger;
  hooks?: ProxyHooks;
}

/** A running proxy listener. */
export interface ProxyServer {
  readonly scheme: string;
  readonly addr: Deno.NetAddr;
  /** The accept loop underneath (its stats count accepts, rejects, handshake timeouts). */
  readonly server: Server;
  readonly table: ConnectionTable;
  /** Stop accepting, let live connections finish up to `drainMs`, then cut the rest. */
  stop(drainMs?: number): Promise<void>;
  readonly finished: Promise<void>;
}

/** What a client's PROXY header claims, and the client's stream after the header. */
interface ClaimedEnds {
  client: Duplex;
  from?: HostPort;
  to?: HostPort;
}

/** Reason carried by an error, if it has one. */
function reasonOf(err: unknown): string | undefined {
  const r = (err as { reason?: unknown } | null)?.reason;
  return typeof r === "string" ? r : undefined;
}

/** Map a handshake error to an end reason. */
function handshakeEnd(
  err: unknown,
  ctx: ConnContext,
): "handshake-timeout" | "aborted" | "auth-failed" | "handshake-failed" | "closed" {
  if (ctx.aborted) {
    const r = ctx.reason as { name?: string } | undefined;
    return r?.name === "TimeoutError" ? "handshake-timeout" : "aborted";
  }
  const reason = reasonOf(err);
  if (reason === "auth" || reason === "auth-failed" || reason === "auth-required") {
    return "auth-failed";
  }
  if (reason === "eof" || reason === "closed" || err instanceof Deno.errors.UnexpectedEof) {
    return "closed";
  }
  return "handshake-failed";
}

/**
 * Serve proxy `type` on `listener`.
 *
 * Every connection: admitted against the table's limit (else closed, end "limit"), its
 * handshake run under the handshake timer, its destination dialled through `dialer`
 * (dest side CONNECTING -> CONNECTED; the typed failure is answered and recorded), then
 * relayed with the idle timeout; one log line at close.
 *
 * @example
 * ```ts
 * import { directDialer, serveProxy, socks5Proxy } from "./mod.ts";
 * const p = serveProxy(Deno.listen({ hostname: "127.0.0.1", port: 0 }), socks5Proxy(), {
 *   dialer: directDialer(),
 * });
 * console.log(p.addr.port);
 * await p.stop();
 * ```
 */
export function serveProxy(
  listener: Deno.TcpListener,
  type: ProxyType,
  opts: ProxyServerOptions,
): ProxyServer {
  const log = opts.log ?? silentLogger;
  const table = opts.table ?? new ConnectionTable(opts.maxConns ?? 1024);
  const idleTimeoutMs = opts.idleTimeoutMs ?? defaultIdleTimeoutMs;

  /** Record a failed dial on `conn`; the error as a typed `NetError`. */
  const dialFailed = (conn: ProxyConnection, err: unknown): NetError => {
    const reason = classifyError(err);
    conn.fail("dial-failed", reason, errorMessage(err));
    return err instanceof NetError ? err : new NetError(reason, errorMessage(err), { cause: err });
  };

  /** A session type's dial: the dest side CONNECTING -> CONNECTED, a failure recorded. */
  const dialTracked = async (
    conn: ProxyConnection,
    dest: HostPort,
    signal: Abortable,
  ): Promise<DialedConn> => {
    conn.connecting(dest);
    try {
      const out = await opts.dialer(dest, signal);
      conn.connected(out.remoteAddr);
      return out;
    } catch (err) {
      throw dialFailed(conn, err);
    }
  };

  const listenerName = String(log.field("listener") ?? type.scheme);

  /**
   * A new client's record, admitted against the table; undefined when it was refused (then
   * closed, recorded and counted already).
   */
  const admit = (sock: Deno.TcpConn, ctx: ConnContext): ProxyConnection | undefined => {
    const conn = new ProxyConnection(table.nextId(), type.scheme, sock.remoteAddr);
    conn.listener = listenerName;
    conn.shed = sock;
    const refused = table.admit(conn);
    if (refused) {
      conn.fail("limit", refused === "source-limit" ? "source-limit" : undefined);
      closeQuietly(sock);
      opts.hooks?.onClose?.(conn.close(log, "done", ctx));
      return undefined;
    }
    opts.hooks?.onOpen?.(conn);
    return conn;
  };

  /** The end of every admitted connection: both sockets closed, the record logged once. */
  const finish = (
    conn: ProxyConnection,
    sock: Deno.TcpConn,
    dest: DialedConn | undefined,
    ctx: ConnContext,
  ): void => {
    closeQuietly(dest);
    closeQuietly(sock);
    table.delete(conn);
    // The connection's logger only when a line is written (ctx.log makes it).
    opts.hooks?.onClose?.(
      conn.close(log, conn.dest.state === "idle" ? "closed" : "done", ctx),
    );
  };

  /**
   * The client's PROXY header when the listener takes one: what it claims, and the client's
   * stream after it; undefined when the peer may not send one or the header failed (recorded).
   */
  const proxyHeader = async (
    accept: (peerIp: string) => boolean,
    conn: ProxyConnection,
    sock: Deno.TcpConn,
    ctx: ConnContext,
  ): Promise<ClaimedEnds | undefined> => {
    const remote = sock.remoteAddr;
    if (!accept(remote.hostname)) {
      conn.fail(
        "handshake-failed",
        "untrusted-proxy-header",
        `${remote.hostname} is not a trusted balancer: PROXY headers are taken only from ` +
          `--proxy-protocol-from sources`,
      );
      return undefined;
    }
    try {
      const r = new BufferedReader(sock, proxyHeaderChunkBytes);
      const header = await readProxyHeader(r);
      if (header.source) conn.source.description = describeEndpoint(header.source);
      return { client: withPrefix(sock, r.takeBuffered()), from: header.source, to: header.dest };
    } catch (err) {
      conn.fail(handshakeEnd(err, ctx), reasonOf(err), errorMessage(err));
      return undefined;
    }
  };

  /** `opts.authenticate` for the client at `host`, through the limiter. */
  const authFor = (host: string, ctx: ConnContext): Authenticator | undefined =>
    opts.authenticate && limitedAuth(opts.authenticate, opts.authLimiter, host, ctx.signal);

  /**
   * A session type's connection (HTTP): the type drives the client and dials through
   * `connect`. A handler of its own, as the address one below: each async frame holds only
   * its own kind's locals (the one handler for both was ~730 B per connection, promoted with
   * every connection that outlived a scavenge).
   */
  const sessionHandler = async (sock: Deno.TcpConn, ctx: ConnContext): Promise<void> => {
    if (type.kind !== "session") return;
    const conn = admit(sock, ctx);
    if (!conn) return;
    try {
      let client: Duplex = sock;
      let from: HostPort | undefined;
      if (opts.acceptProxyProtocol) {
        const claimed = await proxyHeader(opts.acceptProxyProtocol, conn, sock, ctx);
        if (!claimed) return;
        client = claimed.client;
        from = claimed.from;
      }
      const authenticate = authFor(from?.host ?? sock.remoteAddr.hostname, ctx);
      const sctx: SessionContext = new SessionTypeContext(conn, ctx, sock, authenticate, {
        idleTimeoutMs,
        headTimeoutMs: opts.handshakeTimeoutMs ?? defaultHandshakeTimeoutMs,
        // The type counts the bytes into conn.stats (lib/http: the tunnel's relay itself).
        connect: (d) => {
          ctx.handshakeDone();
          return dialTracked(conn, d, ctx);
        },
      });
      try {
        await type.session(client, sctx);
      } catch (err) {
        if (conn.end === undefined) {
          const end = handshakeEnd(err, ctx);
          conn.fail(
            end === "closed" && conn.dest.state === "connected" ? "error" : end,
            reasonOf(err),
            errorMessage(err),
          );
        }
      }
      if (ctx.aborted && conn.end === undefined) {
        conn.fail(handshakeEnd(undefined, ctx));
      }
    } finally {
      finish(conn, sock, undefined, ctx);
    }
  };

  /** An address type's connection (static, SOCKS5, redir): handshake, dial, reply, relay. */
  const addressHandler = async (sock: Deno.TcpConn, ctx: ConnContext): Promise<void> => {
    if (type.kind !== "address") return;
    const conn = admit(sock, ctx);
    if (!conn) return;
    let dest: DialedConn | undefined;
    try {
      let client: Duplex = sock;
      // The client's address as a PROXY header claims it (else the peer's), made when needed.
      let from: HostPort | undefined;
      let to: HostPort | undefined;
      if (opts.acceptProxyProtocol) {
        const claimed = await proxyHeader(opts.acceptProxyProtocol, conn, sock, ctx);
        if (!claimed) return;
        ({ client, from, to } = claimed);
      }
      let req: ProxyRequest;
      if (type.fixedDest) {
        // Nothing to ask the client (static): no type context, promise or await for it.
        req = { dest: type.fixedDest, source: client };
      } else {
        try {
          const authenticate = authFor(from?.host ?? sock.remoteAddr.hostname, ctx);
          req = await type.handshake(client, new TypeContext(conn, ctx, sock, authenticate));
        } catch (err) {
          conn.fail(handshakeEnd(err, ctx), reasonOf(err), errorMessage(err));
          return;
        }
      }
      ctx.handshakeDone();
      if (req.serve) {
        conn.connecting(req.dest);
        conn.connected();
        const r = await req.serve({ signal: ctx.signal, idleTimeoutMs });
        conn.fail(r.end, r.failure, r.message);
        return;
      }
      // The dial in this frame (not through dialTracked's): one async frame less per connection.
      conn.connecting(req.dest);
      try {
        // The context itself as the abort (no AbortSignal per connection), here and below.
        dest = await opts.dialer(req.dest, ctx);
      } catch (err) {
        const failed = dialFailed(conn, err);
        await req.reply?.({ ok: false, reason: failed.reason });
        return;
      }
      conn.connected(dest.remoteAddr);
      if (opts.sendProxyProtocol) {
        try {
          const remote = sock.remoteAddr, here = sock.localAddr;
          from ??= { host: remote.hostname, port: remote.port };
          to ??= { host: here.hostname, port: here.port };
          await writeAll(dest, encodeProxyHeader(opts.sendProxyProtocol, from, to));
        } catch (err) {
          conn.fail(
            "error",
            reasonOf(err) ?? "io",
            `PROXY header to the backend: ${errorMessage(err)}`,
          );
          await req.reply?.({ ok: false, reason: "other" });
          return;
        }
      }
      if (req.reply) {
        const local = dest.localAddr;
        await req.reply({
          ok: true,
          bound: local && "hostname" in local
            ? { host: local.hostname, port: local.port }
            : undefined,
        });
      }
      const res = await relay(req.source, dest, {
        idleTimeoutMs,
        signal: ctx,
        stats: conn.stats,
      });
      const vanished = res.end === "error" && isDisconnect(res.error);
      const failure = res.error && !vanished ? reasonOf(res.error) ?? "io" : undefined;
      conn.fail(vanished ? "reset" : res.end, failure, res.error?.message);
      dest = undefined; // relay closed it
    } finally {
      finish(conn, sock, dest, ctx);
    }
  };

  // Nothing to time before the dial when the type reads nothing (and no PROXY header comes).
  const instant = type.kind === "address" && type.instant === true && !opts.acceptProxyProtocol;
  const server = serve(listener, type.kind === "session" ? sessionHandler : addressHandler, {
    // The table enforces the limit (shared across listeners, counted in the hooks) and sheds
    // for it; serve()'s own per-listener limit is left out of the way.
    maxConns: Number.MAX_SAFE_INTEGER,
    shedIdleMs: Infinity,
    handshakeTimeoutMs: instant ? 0 : opts.handshakeTimeoutMs,
    drainTimeoutMs: opts.drainTimeoutMs,
    log,
  });
  return {
    scheme: type.scheme,
    addr: server.addr,
    server,
    table,
    stop: (drainMs) => server.stop(drainMs),
    finished: server.finished,
  };
}

/**
 * What a proxy type is given for one client: its logger and socket view made when first read
 * (getters on the prototype: an object literal with getters cost 4-5 µs to build, per
 * connection, and most connections never read either).
 */
class TypeContext implements ProxyTypeContext {
  readonly abort: Abortable;
  readonly #ctx: ConnContext;
  readonly #sock: Deno.TcpConn;
  #socket: ProxyTypeContext["socket"] | undefined;

  constructor(
    readonly conn: ProxyConnection,
    ctx: ConnContext,
    sock: Deno.TcpConn,
    readonly authenticate: Authenticator | undefined,
  ) {
    this.#ctx = ctx;
    this.abort = ctx;
    this.#sock = sock;
  }

  /** Made when first read (a SOCKS5 UDP association's): most types never read it. */
  get signal(): AbortSignal {
    return this.#ctx.signal;
  }

  get log(): Logger {
    return this.#ctx.log;
  }

  get socket(): ProxyTypeContext["socket"] {
    const sock = this.#sock, local = sock.localAddr, remote = sock.remoteAddr;
    return this.#socket ??= {
      local: { host: local.hostname, port: local.port },
      remote: { host: remote.hostname, port: remote.port },
      conn: sock,
    };
  }
}

/** A session type's context: {@linkcode TypeContext} and the session's own parts. */
class SessionTypeContext extends TypeContext implements SessionContext {
  readonly idleTimeoutMs: number;
  readonly headTimeoutMs: number;
  readonly handshakeDone: () => void;
  readonly connect: SessionContext["connect"];

  constructor(
    conn: ProxyConnection,
    ctx: ConnContext,
    sock: Deno.TcpConn,
    authenticate: Authenticator | undefined,
    session: Pick<SessionContext, "idleTimeoutMs" | "headTimeoutMs" | "connect">,
  ) {
    super(conn, ctx, sock, authenticate);
    this.idleTimeoutMs = session.idleTimeoutMs;
    this.headTimeoutMs = session.headTimeoutMs;
    this.handshakeDone = ctx.handshakeDone;
    this.connect = session.connect;
  }
}

/** `auth` for one client at `remote` through the limiter: right passes, wrong ones late. */
function limitedAuth(
  auth: Authenticator,
  limiter: AuthFailureLimiter | undefined,
  remote: string,
  signal: AbortSignal,
): Authenticator {
  if (!limiter) return auth;
  // Keyed by the claimed user too: guessing one user's password does not slow another's.
  return async (username, password) =>
    (await limiter.verify(remote, () => auth(username, password), { user: username, signal })) ===
      "ok";
}
