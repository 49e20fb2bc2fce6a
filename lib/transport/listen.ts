/**
 * The server side of every carrier: `listenTransport(endpoint)` binds TCP or TLS, and
 * `serveTransport` runs lib/net's accept loop with the carrier's own handshake (the
 * WebSocket upgrade) in front of the handler, so the handler sees one plain Duplex.
 * @module
 */

import { closeQuietly, type Duplex } from "../net/duplex.ts";
import { errorMessage } from "../net/errors.ts";
import { type ConnContext, serve, type ServeOptions, type Server } from "../net/serve.ts";
import { listenTls, type TlsListenOptions, type TlsServerConfig } from "./tls.ts";
import { type Endpoint, isTlsKind, isWebSocketKind, type TransportKind } from "./endpoint.ts";
import { upgradeServer } from "./upgrade.ts";

/** Handles one accepted stream; it is closed when the handler settles. */
export type StreamHandler = (conn: Duplex, ctx: ConnContext) => Promise<void>;

/** Options of {@linkcode listenTransport}. */
export interface TransportListenOptions extends TlsListenOptions {
  /** Certificate and key for tls/wss (and a client CA for mutual TLS). */
  tls?: TlsServerConfig;
}

/** A bound transport: the TCP/TLS listener and the handshake each connection goes through. */
export interface TransportListener {
  readonly kind: TransportKind;
  readonly addr: Deno.NetAddr;
  /** The TCP or TLS listener (its connections still need {@linkcode accept}). */
  readonly listener: Deno.Listener<Deno.Conn, Deno.NetAddr>;
  /** Finish the carrier's handshake on an accepted connection (tcp/tls: the conn itself). */
  accept(conn: Duplex): Promise<Duplex>;
  /** Stop listening. */
  close(): void;
}

/**
 * The handshake an accepted connection of `kind` goes through before it carries the stream:
 * none for tcp/tls, the WebSocket upgrade (on `path`, any when absent) for ws/wss, keeping
 * half-close (both ends of a lib/transport WebSocket are WsConns).
 */
export function acceptFor(kind: TransportKind, path?: string): (conn: Duplex) => Promise<Duplex> {
  if (!isWebSocketKind(kind)) return (conn) => Promise.resolve(conn);
  return (conn) => upgradeServer(conn, { path, halfClose: true });
}

/**
 * Bind `ep` (TLS when its kind is tls/wss: `opts.tls` is then required).
 * Rejects like `Deno.listen` (`Deno.errors.AddrInUse` for a busy port).
 */
export async function listenTransport(
  ep: Endpoint,
  opts: TransportListenOptions = {},
): Promise<TransportListener> {
  const at = { hostname: ep.host, port: ep.port };
  let listener: Deno.Listener<Deno.Conn, Deno.NetAddr>;
  if (isTlsKind(ep.kind)) {
    if (!opts.tls) throw new TypeError(`${ep.kind} listener needs a certificate (opts.tls)`);
    listener = await listenTls(at, opts.tls, opts);
  } else {
    listener = Deno.listen(at);
  }
  return {
    kind: ep.kind,
    addr: listener.addr,
    listener,
    accept: acceptFor(ep.kind, isWebSocketKind(ep.kind) && ep.path !== "/" ? ep.path : undefined),
    close: () => closeQuietly(listener),
  };
}

/**
 * Wrap `handler` so every connection first goes through `accept` (the carrier's handshake,
 * under serve()'s handshake timer); a failed handshake is logged and closes the connection.
 */
export function withAccept(
  accept: (conn: Duplex) => Promise<Duplex>,
  handler: StreamHandler,
): StreamHandler {
  return async (conn, ctx) => {
    let stream: Duplex;
    try {
      stream = await accept(conn);
    } catch (err) {
      ctx.log.warn("transport handshake failed", { remote: ctx.remote, error: errorMessage(err) });
      return;
    }
    try {
      await handler(stream, ctx);
    } finally {
      if (stream !== conn) closeQuietly(stream);
    }
  };
}

/**
 * `handler` behind the server side of carrier `kind` on an already accepted TCP or TLS
 * connection: `handler` itself for tcp/tls (nothing added to the plain path), the WebSocket
 * upgrade first for ws/wss. For services that bind their listeners themselves.
 */
export function withTransport(
  kind: TransportKind,
  handler: StreamHandler,
  path?: string,
): StreamHandler {
  return isWebSocketKind(kind) ? withAccept(acceptFor(kind, path), handler) : handler;
}

/**
 * Accept connections of `l` (lib/net `serve`: limits, handshake timer, drain) and hand each
 * stream to `handler` after the carrier's handshake.
 */
export function serveTransport(
  l: TransportListener,
  handler: StreamHandler,
  opts: ServeOptions = {},
): Server {
  const ws = isWebSocketKind(l.kind);
  return serve(l.listener, ws ? withAccept(l.accept, handler) : handler, opts);
}
