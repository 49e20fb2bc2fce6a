/**
 * The seed's built-in `static` proxy type: every accepted connection goes to one fixed
 * destination. No handshake, no reply; a failed dial just closes the client.
 * @module
 */

import type { HostPort } from "../net/addr.ts";
import type { AddressProxyType } from "./proxy_type.ts";

/**
 * A proxy type that forwards every connection to `to`.
 *
 * @example
 * ```ts
 * import { directDialer, serveProxy, staticProxy } from "./mod.ts";
 * // Every connection to the listener is relayed to one fixed destination (here an HTTP origin).
 * const origin = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => new Response("hi"));
 * const p = serveProxy(
 *   Deno.listen({ hostname: "127.0.0.1", port: 0 }),
 *   staticProxy({ host: "127.0.0.1", port: origin.addr.port }),
 *   { dialer: directDialer() },
 * );
 * const res = await fetch(`http://127.0.0.1:${p.addr.port}/`, { headers: { connection: "close" } });
 * console.assert((await res.text()) === "hi");
 * await p.stop();
 * await origin.shutdown();
 * ```
 */
export function staticProxy(to: HostPort): AddressProxyType {
  return {
    kind: "address",
    instant: true,
    fixedDest: to,
    scheme: "static",
    handshake: (conn) => Promise.resolve({ dest: to, source: conn }),
  };
}
