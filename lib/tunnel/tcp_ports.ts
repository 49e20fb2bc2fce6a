/**
 * Public TCP ports of a tunnel server: the listeners that relay each public connection over a
 * tunnel stream (port ownership is port_tunnels.ts, shared with UDP).
 * @module
 */

import type { Logger } from "../log.ts";
import {
  errorMessage,
  formatAddr,
  relay,
  serve,
  type Server,
  sharedPortOptions,
} from "../net/mod.ts";
import { encodeProxyHeader } from "../proxyproto/mod.ts";
import type { ClientConn } from "./client_conn.ts";
import { TunnelError, type TunnelStream } from "./tunnel_stream.ts";
import {
  type PortClients,
  type PortListener,
  type PortStreamOpener,
  type PortTunnelFailure,
  type PortTunnelInfo,
  PortTunnels,
  type PortTunnelSpec,
} from "./port_tunnels.ts";

/** A TCP tunnel defined on the server side (admin API `POST /tcp`, `--tcp`). */
export type TcpTunnelSpecServer = PortTunnelSpec;
/** A TCP tunnel as the admin API lists it (no secret). */
export type TcpTunnelInfo = PortTunnelInfo;
/** Why a server-defined TCP tunnel cannot be added. */
export type TcpTunnelFailure = PortTunnelFailure;

/** What the TCP ports need of the server core. */
export type TcpStreamOpener = PortStreamOpener;

/** Options of {@linkcode TcpPorts}. */
export interface TcpPortsOptions {
  /** Public TCP ports clients may ask for (inclusive range); none when absent. */
  range?: { min: number; max: number };
  /** Address public TCP tunnels bind. */
  hostname: string;
  /**
   * Send a PROXY header of this version (the public client and the port it reached) as the
   * first bytes of every TCP tunnel connection, so the app behind the client learns who
   * connected (nginx `listen ... proxy_protocol`; frp's `proxy_protocol_version`).
   */
  sendProxyProtocol?: 1 | 2;
  /** Where listeners log. */
  log: Logger;
}

/** A bound public TCP port. */
class TcpListener implements PortListener {
  readonly addrText: string;
  constructor(readonly server: Server) {
    this.addrText = formatAddr(server.addr);
  }
  stop(): Promise<void> {
    return this.server.stop(0);
  }
}

/** The public TCP ports of one tunnel server: definitions, owners, listeners. */
export class TcpPorts extends PortTunnels<TcpListener> {
  /** Ports relayed through `core`'s tunnel streams. */
  constructor(core: TcpStreamOpener, readonly opts: TcpPortsOptions) {
    super("tcp", core, opts.range, opts.log);
  }

  protected held(client: ClientConn): Map<number, PortListener> {
    return client.tcp;
  }

  protected probe(port: number): Promise<void> {
    try {
      Deno.listen({ hostname: this.opts.hostname, port }).close();
      return Promise.resolve();
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /**
   * Bind `publicPort` for `client` and relay each connection over a tunnel stream. With
   * `serverLocalPort` (a server-defined tunnel) the client is asked for that local port.
   */
  protected bind(
    clients: PortClients,
    publicPort: number,
    serverLocalPort: string | undefined,
    _log: Logger,
  ): Promise<TcpListener> {
    let listener: Deno.TcpListener;
    try {
      // A server-defined port is every cluster instance's, and so is in a cluster a port a
      // client asked for: --workers share it. A lone server's client port is its holder's
      // alone (the kernel refuses it to another worker).
      const shared = serverLocalPort === undefined && !this.core.clustered
        ? {}
        : sharedPortOptions();
      listener = Deno.listen({ hostname: this.opts.hostname, port: publicPort, ...shared });
    } catch (err) {
      return Promise.reject(err);
    }
    const host = `tcp:${publicPort}`;
    const localPort = serverLocalPort ?? String(publicPort);
    const serverTcpPort = serverLocalPort === undefined ? undefined : publicPort;
    const core = this.core;
    const srv = serve(listener, async (conn, ctx) => {
      ctx.handshakeDone();
      const startedMs = performance.now();
      // One line per connection, as the HTTP front writes per request.
      const done = (end: string, up = 0, down = 0, failure?: string, error?: string) =>
        ctx.log.info("connection closed", {
          remote: ctx.remote,
          end,
          up,
          down,
          ms: Math.round(performance.now() - startedMs),
          failure,
          error,
        });
      let ts: TunnelStream;
      const { remoteAddr: from, localAddr: to } = conn;
      // The header rides in the stream's SYN with the request: no extra round trip.
      const header = this.opts.sendProxyProtocol &&
        encodeProxyHeader(
          this.opts.sendProxyProtocol,
          { host: from.hostname, port: from.port },
          { host: to.hostname, port: to.port },
        );
      const client = await clients.pick();
      if (!client) {
        core.countRequest(host, "502");
        done("502", 0, 0, "no-client", "no instance holds a ready client for this port");
        return;
      }
      try {
        ts = await core.openStream(
          client,
          host,
          "tcp",
          localPort,
          header || undefined,
          serverTcpPort,
          clients.members,
        );
      } catch (err) {
        core.countRequest(host, "502");
        done("502", 0, 0, err instanceof TunnelError ? err.reason : "error", errorMessage(err));
        return;
      }
      try {
        await ts.reply(core.responseTimeoutMs);
      } catch (err) {
        ts.release();
        const outcome = err instanceof TunnelError && err.reason === "timeout" ? "504" : "502";
        core.countRequest(host, outcome);
        done(outcome, 0, 0, err instanceof TunnelError ? err.reason : "error", errorMessage(err));
        return;
      }
      core.countRequest(host, "proxied");
      try {
        const r = await relay(conn, ts.body(), { signal: ctx.signal });
        done(r.end, r.aToB, r.bToA);
      } finally {
        ts.release();
      }
    }, {
      log: this.opts.log.child({ tcp: publicPort }),
      handshakeTimeoutMs: 0,
      // TCP_NODELAY per connection (a setsockopt, ~0.5 us), not once on the listener: this
      // listener opens at every client's connect, and serve()'s once-per-listener way loads
      // libc and looks through up to 256 descriptors (2-4 ms) on the event loop each time.
      acceptedNoDelay: false,
      name: `tcp-${publicPort}`,
    });
    return Promise.resolve(new TcpListener(srv));
  }
}
