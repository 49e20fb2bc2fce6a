/**
 * The seed's `redir` proxy type: a transparent listener for connections an iptables/nftables
 * `REDIRECT` rule sent here. No handshake: the destination is where the client was going,
 * read from the kernel's NAT entry (lib/net `originalDestination`, SO_ORIGINAL_DST), then
 * dialled through the shared Dialer like any other listener's (ACL, `--forward`/`--via`
 * chains, limits apply). A client that connected to the listener directly is closed
 * (`handshake-failed`, failure `not-redirected`) instead of being relayed to itself.
 * @module
 */

import { originalDestination } from "../net/original_dst.ts";
import type { AddressProxyType, ProxyRequest } from "./proxy_type.ts";

/**
 * A proxy type relaying each connection to its original (pre-REDIRECT) destination. Needs
 * Linux and `--allow-ffi` (lib/net `originalDstUnavailable`, checked when seaprox binds the
 * listener); a failure rejects with lib/net `OriginalDstError` (its `reason` is logged).
 */
export function redirProxy(): AddressProxyType {
  return {
    kind: "address",
    instant: true,
    scheme: "redir",
    handshake: (conn, ctx) =>
      // The executor's throw (OriginalDstError) becomes the rejection.
      new Promise<ProxyRequest>((resolve) =>
        resolve({ dest: originalDestination(ctx.socket.conn), source: conn })
      ),
  };
}
