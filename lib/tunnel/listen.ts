/**
 * `serveTunnel(listener, server)`: the standalone front's accept loop (lib/net serve) with
 * each connection handled by the HTTP/1 fast path.
 * @module
 */

import {
  BufferedReader,
  type Duplex,
  errorMessage,
  joinHostPort,
  serve,
  type ServeOptions,
  type Server,
  withPrefix,
} from "../net/mod.ts";
import type { Logger } from "../log.ts";
import { readProxyHeader } from "../proxyproto/mod.ts";
import type { PeerInfo } from "./forward.ts";
import { handlePublicConn, type HttpFrontOptions } from "./front_http.ts";
import type { TunnelServer } from "./server.ts";

/** Options of {@linkcode serveTunnel}. */
export interface ServeTunnelOptions extends HttpFrontOptions, Omit<ServeOptions, "log"> {
  /**
   * Expect a PROXY protocol header (v1 or v2) on every connection (a plain-TCP listener
   * behind haproxy or a cloud balancer) and take the client's address from it (logs,
   * X-Forwarded-For), from peers (IP text) this accepts; others are closed and logged.
   */
  acceptProxyProtocol?: (peerIp: string) => boolean;
}

/** Bytes read per call while looking for a PROXY header (what follows is handed on). */
const proxyHeaderChunkBytes = 512;

/**
 * The connection past its PROXY header and the client it names (the peer itself for a
 * header without addresses), or undefined after logging why it was refused.
 */
async function acceptProxyHeader(
  conn: Deno.Conn,
  peer: PeerInfo,
  trusted: (ip: string) => boolean,
  log: Logger,
): Promise<{ conn: Duplex; peer: PeerInfo } | undefined> {
  if (!trusted(peer.ip)) {
    log.warn("PROXY header from an untrusted peer refused", { remote: peer.remote });
    return undefined;
  }
  const r = new BufferedReader(conn, proxyHeaderChunkBytes);
  try {
    const h = await readProxyHeader(r);
    const rest = withPrefix(conn, r.takeBuffered());
    if (!h.source) return { conn: rest, peer };
    return {
      conn: rest,
      peer: { ip: h.source.host, remote: joinHostPort(h.source.host, h.source.port) },
    };
  } catch (err) {
    log.warn("bad PROXY header", { remote: peer.remote, error: errorMessage(err) });
    return undefined;
  }
}

/**
 * Accept public connections (and clients on the control path) on `listener`: TCP, or TLS
 * for an https:// front and wss:// clients -- `Deno.listenTls`, or lib/net `listenTls` (its
 * connections are handshaken already; with a client CA they are `node:tls` sockets whose
 * client certificate was verified).
 *
 * @example
 * ```ts
 * import { serveTunnel, TunnelClient, TunnelServer } from "./mod.ts";
 * const app = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () =>
 *   new Response("from the app"));
 * const server = new TunnelServer();
 * const identifier = await server.addHost("app.example.com"); // a generated secret
 * const front = serveTunnel(Deno.listen({ hostname: "127.0.0.1", port: 0 }), server);
 *
 * // The client side (tunnel-client): serves the vhost from the local app.
 * const stop = new AbortController();
 * const connected = Promise.withResolvers<void>();
 * const client = new TunnelClient({
 *   server: `http://127.0.0.1:${front.addr.port}`,
 *   identifier,
 *   local: { host: "127.0.0.1", port: app.addr.port },
 *   signal: stop.signal,
 *   onConnected: () => connected.resolve(),
 * });
 * const running = client.run();
 * await connected.promise;
 *
 * // A public request for the vhost reaches the app through the tunnel.
 * const conn = await Deno.connect({ hostname: "127.0.0.1", port: front.addr.port });
 * await conn.write(
 *   new TextEncoder().encode("GET / HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n"),
 * );
 * const text = await new Response(conn.readable).text();
 * console.assert(text.endsWith("from the app"), text);
 * stop.abort();
 * await running;
 * await front.stop();
 * await server.close();
 * await app.shutdown();
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
    let peer: PeerInfo = { ip: addr.hostname, remote: ctx.remote };
    let stream: Duplex = conn;
    if (opts.acceptProxyProtocol) {
      const got = await acceptProxyHeader(conn, peer, opts.acceptProxyProtocol, ctx.log);
      if (!got) return;
      ({ conn: stream, peer } = got);
    }
    await handlePublicConn(server, stream, peer, { ...front, log: front.log ?? ctx.log }, ctx);
  }, {
    maxConns: opts.maxConns ?? 4096,
    handshakeTimeoutMs: opts.handshakeTimeoutMs ?? 30_000,
    drainTimeoutMs: opts.drainTimeoutMs,
    signal: opts.signal,
    name: "http",
    log: opts.log,
  });
}
