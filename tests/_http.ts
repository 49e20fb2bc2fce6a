/** Helpers for the HTTP tests: an HTTP proxy built on lib/http, served on a free port. */

import { dial, serve, type Server } from "../lib/net/mod.ts";
import { handleHttpProxy, type HttpExchange, type HttpProxyOptions } from "../lib/http/mod.ts";

/** An HTTP proxy on 127.0.0.1:0 dialling directly; every exchange is recorded. */
export function startHttpProxy(
  opts: Partial<HttpProxyOptions> = {},
): Server & { exchanges: HttpExchange[] } {
  const exchanges: HttpExchange[] = [];
  const server = serve(Deno.listen({ hostname: "127.0.0.1", port: 0 }), (conn, ctx) =>
    handleHttpProxy(conn, {
      connect: (dest) => dial(dest.host, dest.port, { timeoutMs: 5000, prefer: "ipv4" }),
      handshakeDone: ctx.handshakeDone,
      signal: ctx.signal,
      onExchange: (e) => exchanges.push(e),
      ...opts,
    }), { handshakeTimeoutMs: 10_000 });
  return Object.assign(server, { exchanges });
}
