/**
 * The `http` proxy type: CONNECT tunnels and absolute-URI forward requests (keep-alive,
 * Basic proxy auth, 407/502/504/400) served by lib/http's `handleHttpProxy`; every
 * destination is dialled through the shared, tracked `ctx.connect`.
 * @module
 */

import { handleHttpProxy } from "../http/mod.ts";
import type { SessionProxyType } from "./proxy_type.ts";

/**
 * An HTTP proxy type. One client connection may carry several forward requests; the
 * connection's dest side describes the latest destination, its failure the first one.
 */
export function httpProxy(): SessionProxyType {
  return {
    kind: "session",
    scheme: "http",
    session: (conn, ctx) =>
      handleHttpProxy(conn, {
        connect: ctx.connect,
        // Counted by lib/http (a tunnel's relay counts itself; no wrapper per destination).
        stats: ctx.conn.stats,
        // serve() accepted the client with TCP_NODELAY, and dial() sets it on destinations.
        socketsNoDelay: true,
        authenticate: ctx.authenticate,
        idleTimeoutMs: ctx.idleTimeoutMs,
        headTimeoutMs: ctx.headTimeoutMs,
        // No AbortSignal per connection.
        signal: ctx.abort,
        handshakeDone: ctx.handshakeDone,
        log: ctx.log,
        onExchange: (e) => {
          if (e.username) ctx.conn.username = e.username;
          if (e.failure === "auth") ctx.conn.fail("auth-failed", "auth");
          else if (e.failure === "bad-request") ctx.conn.fail("handshake-failed", "bad-request");
          else if (e.failure === "head-timeout") ctx.conn.fail("handshake-timeout");
          else if (e.failure === "upstream-protocol") {
            ctx.conn.fail("error", "upstream-protocol");
          }
          // Dial failures were recorded by ctx.connect; "client-gone" is an ordinary end.
        },
      }),
  };
}
