/**
 * The chaining Dialer (`--forward socks5://[user:pass@]host:port`): every outgoing
 * connection is a CONNECT through an upstream SOCKS5 proxy. Failures keep their typed
 * reason (the upstream's reply code mapped back by lib/socks5), so a refused destination
 * behind the upstream still reaches our client as "refused".
 * @module
 */

import type { HostPort } from "../net/addr.ts";
import { closeQuietly, PrefixedDuplex } from "../net/duplex.ts";
import { classifyError, errorMessage, NetError } from "../net/errors.ts";
import { socks5Connect } from "../socks5/mod.ts";
import type { Dialer } from "./dialer.ts";
import type { Credentials } from "./url.ts";

/** Options of {@linkcode socks5ChainDialer}. */
export interface ChainDialerOptions {
  /** The upstream SOCKS5 proxy. */
  upstream: HostPort;
  /** Credentials for the upstream (RFC 1929). */
  auth?: Credentials;
  /** How the upstream itself is reached. */
  via: Dialer;
}

/**
 * A Dialer that reaches every destination through an upstream SOCKS5 proxy. Host names are
 * passed to the upstream unresolved (like `socks5h`). The returned conn's `localAddr` is the
 * bound address the upstream reported.
 *
 * @example
 * ```ts
 * import { directDialer, serveProxy, socks5ChainDialer, socks5Proxy } from "./mod.ts";
 * // An upstream SOCKS5 proxy (here another warren one on loopback) that every dial goes through.
 * const upstream = serveProxy(Deno.listen({ hostname: "127.0.0.1", port: 0 }), socks5Proxy(), {
 *   dialer: directDialer(),
 * });
 * const d = socks5ChainDialer({
 *   upstream: { host: "127.0.0.1", port: upstream.addr.port },
 *   via: directDialer(),
 * });
 * const target = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const reached = target.accept();
 * const conn = await d({ host: "127.0.0.1", port: target.addr.port }, AbortSignal.timeout(10_000));
 * (await reached).close();
 * conn.close();
 * target.close();
 * await upstream.stop();
 * ```
 */
export function socks5ChainDialer(opts: ChainDialerOptions): Dialer {
  return async (dest, signal) => {
    const up = await opts.via(opts.upstream, signal);
    const onAbort = () => closeQuietly(up);
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      const res = await socks5Connect(up, dest, {
        username: opts.auth?.username,
        password: opts.auth?.password,
      });
      const bound: Deno.NetAddr = {
        transport: "tcp",
        hostname: res.bound.host,
        port: res.bound.port,
      };
      // A fresh object (never the TcpConn itself) carries the upstream's bound address.
      return Object.assign(new PrefixedDuplex(up, res.leftover), { localAddr: bound });
    } catch (err) {
      closeQuietly(up);
      if (signal.aborted) throw new NetError("aborted", "dial aborted", { cause: err });
      if (err instanceof NetError) throw err;
      // The upstream itself failed (auth refused, garbage): the destination was not reached.
      throw new NetError(
        classifyError(err),
        `via upstream ${opts.upstream.host}:${opts.upstream.port}: ${errorMessage(err)}`,
        { cause: err },
      );
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
  };
}
