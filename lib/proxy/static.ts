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
 * ```ts ignore
 * serveProxy(Deno.listen({ port: 9000 }), staticProxy({ host: "example.org", port: 80 }), {
 *   dialer: directDialer(),
 * });
 * ```
 */
export function staticProxy(to: HostPort): AddressProxyType {
  return {
    kind: "address",
    scheme: "static",
    handshake: (conn) =>
      Promise.resolve({
        dest: to,
        source: conn,
        reply: () => Promise.resolve(),
      }),
  };
}
