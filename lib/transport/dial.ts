/**
 * `dialTransport(endpoint)`: one call for every carrier. TCP (lib/net `dial`), TLS (with a
 * client certificate and a bound local address when asked), then, for WebSocket, the
 * upgrade; the answer is always a plain {@linkcode Duplex}.
 * @module
 */

import { closeQuietly, type Duplex, withPrefix } from "../net/duplex.ts";
import { dial, resolveHost } from "../net/dial.ts";
import { dialFrom } from "../net/node_socket.ts";
import { joinHostPort } from "../net/addr.ts";
import { errorMessage, NetError } from "../net/errors.ts";
import {
  connectTls,
  defaultTlsHandshakeTimeoutMs,
  type TlsClientConfig,
  tlsConnectError,
  TlsError,
} from "./tls.ts";
import { type Endpoint, isTlsKind, isWebSocketKind } from "./endpoint.ts";
import { upgradeClient } from "./upgrade.ts";
import { dialViaProxy, type EgressProxy } from "./proxy.ts";

/** Options of {@linkcode dialTransport} and {@linkcode dialTls}. */
export interface TransportDialOptions {
  /** Time for the connect, the TLS handshake and the upgrade answer. @default 10000 */
  timeoutMs?: number;
  /** Abort the attempt. */
  signal?: AbortSignal;
  /** Trust and identity for tls/wss (the system roots and no client certificate if absent). */
  tls?: TlsClientConfig;
  /** Local address to bind (selects the interface or link). */
  localAddress?: string;
  /** Which address family to try first. @default "ipv6" */
  prefer?: "ipv6" | "ipv4";
  /** Extra fields of the WebSocket upgrade request. */
  headers?: Record<string, string>;
  /**
   * Leave through an HTTP CONNECT or SOCKS5 proxy (see `proxyFor`: `--proxy`, `HTTPS_PROXY`,
   * `ALL_PROXY`, `NO_PROXY`). Not with `localAddress`, nor with a TLS client certificate.
   */
  proxy?: EgressProxy;
}

/** TCP to `host:port`, through `opts.proxy` when set (then the proxied stream), or directly. */
async function dialTcp(host: string, port: number, opts: TransportDialOptions): Promise<Duplex> {
  if (!opts.proxy) {
    return opts.localAddress
      ? await dialFrom(host, port, opts.localAddress, opts)
      : await dial(host, port, opts);
  }
  if (opts.localAddress !== undefined) {
    throw new NetError("other", `a local address and a proxy exclude each other`);
  }
  const { conn, leftover } = await dialViaProxy(opts.proxy, { host, port }, opts);
  return leftover.length > 0 ? withPrefix(conn, leftover) : conn;
}

/**
 * The TcpConn TLS starts on: direct, or the proxy's connection once it said yes (it must not
 * have sent anything past its answer: the TLS server speaks only after our hello).
 */
async function dialTcpForTls(
  host: string,
  port: number,
  opts: TransportDialOptions,
): Promise<Deno.TcpConn> {
  if (!opts.proxy) return await dial(host, port, opts);
  const { conn, leftover } = await dialViaProxy(opts.proxy, { host, port }, opts);
  if (leftover.length > 0) {
    closeQuietly(conn);
    throw new NetError("other", `proxy ${opts.proxy.display} sent data before the TLS handshake`);
  }
  return conn;
}

/**
 * Connect to `ep` and return the byte stream, whatever carries it.
 *
 * Rejects with a NetError (TCP: refused, unreachable, timeout, aborted), a TlsError (the
 * handshake failed: `reason` says why) or an UpgradeError (the WebSocket upgrade was
 * refused, `status` says how); a read error while waiting for the upgrade answer (the peer
 * hung up) rejects as it is.
 *
 * @example
 * ```ts
 * import { dialTransport, parseEndpoint } from "./mod.ts";
 * // tcp://, tls://, ws:// or wss:// (TLS ones take { tls: { caFile, serverName, ... } }).
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const accepted = listener.accept();
 * const conn = await dialTransport(parseEndpoint(`tcp://127.0.0.1:${listener.addr.port}`), {
 *   timeoutMs: 5_000,
 * });
 * (await accepted).close();
 * conn.close();
 * listener.close();
 * ```
 */
export function dialTransport(ep: Endpoint, opts: TransportDialOptions = {}): Promise<Duplex> {
  // Plain TCP straight to the peer (depot's tunnel spares, one per connection): lib/net's dial
  // without two async frames around it.
  if (
    !isTlsKind(ep.kind) && !isWebSocketKind(ep.kind) && !opts.proxy &&
    opts.localAddress === undefined
  ) {
    return dial(ep.host, ep.port, opts);
  }
  return dialLayered(ep, opts);
}

/** {@linkcode dialTransport} with TLS, a WebSocket upgrade, a proxy or a local address. */
async function dialLayered(ep: Endpoint, opts: TransportDialOptions): Promise<Duplex> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const started = Date.now();
  const conn = isTlsKind(ep.kind)
    ? await dialTls(ep.host, ep.port, opts.tls ?? {}, opts)
    : await dialTcp(ep.host, ep.port, opts);
  if (!isWebSocketKind(ep.kind)) return conn;
  const left = Math.max(1, timeoutMs - (Date.now() - started));
  const cut = () => closeQuietly(conn);
  const timer = setTimeout(cut, left);
  opts.signal?.addEventListener("abort", cut, { once: true });
  try {
    return await upgradeClient(conn, {
      path: ep.path,
      host: joinHostPort(ep.host, ep.port),
      headers: opts.headers,
      halfClose: true,
    });
  } catch (err) {
    closeQuietly(conn);
    if (opts.signal?.aborted) throw new NetError("aborted", "dial aborted", { cause: err });
    if (Date.now() - started >= timeoutMs) {
      throw new NetError("timeout", `websocket upgrade timed out after ${timeoutMs} ms`);
    }
    throw err;
  } finally {
    clearTimeout(timer);
    opts.signal?.removeEventListener("abort", cut);
  }
}

/**
 * TLS to `host:port`. Without a client certificate or local address: lib/net `dial` (every
 * address, TCP_NODELAY) then `Deno.startTls`, verifying `cfg.serverName ?? host`. With one:
 * lib/transport `connectTls` (`Deno.startTls` cannot present a client certificate), trying
 * each resolved address.
 *
 * Rejects with NetError (TCP) or TlsError (handshake: unknown CA, name, certificate ...).
 */
export async function dialTls(
  host: string,
  port: number,
  cfg: TlsClientConfig,
  opts: TransportDialOptions = {},
): Promise<Deno.Conn> {
  const timeoutMs = opts.timeoutMs ?? defaultTlsHandshakeTimeoutMs;
  const name = cfg.serverName ?? host;
  const target = joinHostPort(host, port);
  if (opts.proxy && (cfg.cert || opts.localAddress !== undefined)) {
    // Both need node:tls over its own socket; never fall back to a direct dial silently.
    const what = cfg.cert ? "a client certificate" : "a local address";
    throw new NetError("other", `tls ${target}: ${what} through a proxy is not supported`);
  }
  if (!cfg.cert && opts.localAddress === undefined) {
    const tcp = await dialTcpForTls(host, port, opts);
    let conn: Deno.TlsConn | undefined;
    const cut = () => closeQuietly(conn ?? tcp);
    const timer = setTimeout(cut, timeoutMs);
    opts.signal?.addEventListener("abort", cut, { once: true });
    try {
      conn = await Deno.startTls(tcp, { hostname: name, caCerts: cfg.ca ? [cfg.ca] : [] });
      await conn.handshake();
      return conn;
    } catch (err) {
      closeQuietly(conn ?? tcp);
      if (opts.signal?.aborted) throw new NetError("aborted", `tls ${target} aborted`);
      throw tlsConnectError(err, target, name);
    } finally {
      clearTimeout(timer);
      opts.signal?.removeEventListener("abort", cut);
    }
  }
  const addrs = await resolveHost(host, opts.prefer);
  const named = { ...cfg, serverName: name };
  let last: unknown;
  for (const addr of addrs) {
    try {
      return await connectTls(addr, port, named, opts);
    } catch (err) {
      if (err instanceof TlsError || opts.signal?.aborted) throw err;
      last = err;
    }
  }
  throw last instanceof NetError
    ? last
    : new NetError("other", `tls connect ${target}: ${errorMessage(last)}`, { cause: last });
}
