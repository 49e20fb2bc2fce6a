/**
 * `serveTunnel(listener, server)`: the standalone front's accept loop (lib/net serve) with
 * each connection handled by the HTTP/1 fast path.
 * @module
 */

import { serve, type ServeOptions, type Server } from "../net/mod.ts";
import { handlePublicConn, type HttpFrontOptions } from "./front_http.ts";
import type { TunnelServer } from "./server.ts";

/** Options of {@linkcode serveTunnel}. */
export interface ServeTunnelOptions extends HttpFrontOptions, Omit<ServeOptions, "log"> {}

/**
 * Accept public connections (and clients on the control path) on `listener`: TCP, or TLS
 * for an https:// front and wss:// clients — `Deno.listenTls`, or lib/net `listenTls` (its
 * connections are handshaken already; with a client CA they are `node:tls` sockets whose
 * client certificate was verified).
 *
 * @example
 * ```ts ignore
 * const server = new TunnelServer();
 * await server.addHost("app.example.com", identifier);
 * const front = serveTunnel(Deno.listen({ port: 8080 }), server);
 * ```
 */
export function serveTunnel(
  listener:
    | Deno.Listener<Deno.TcpConn>
    | Deno.Listener<Deno.TlsConn>
    | Deno.Listener<Deno.Conn, Deno.NetAddr>,
  server: TunnelServer,
  opts: ServeTunnelOptions = {},
): Server {
  const port = (listener.addr as Deno.NetAddr).port;
  const front: HttpFrontOptions = {
    publicPort: port,
    ...opts,
    headTimeoutMs: opts.headTimeoutMs ?? opts.handshakeTimeoutMs,
  };
  return serve(listener as Deno.Listener<Deno.Conn>, async (conn, ctx) => {
    const addr = conn.remoteAddr as Deno.NetAddr;
    await handlePublicConn(server, conn, { ip: addr.hostname, remote: ctx.remote }, {
      ...front,
      log: front.log ?? ctx.log,
    }, ctx);
  }, {
    maxConns: opts.maxConns ?? 4096,
    handshakeTimeoutMs: opts.handshakeTimeoutMs ?? 30_000,
    drainTimeoutMs: opts.drainTimeoutMs,
    signal: opts.signal,
    log: opts.log,
  });
}
