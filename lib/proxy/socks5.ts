/**
 * The `socks5` proxy type: lib/socks5's server handshake names the destination; after the
 * shared dial the client gets the reply (success with the real bound address, or the
 * failure's code from lib/socks5's one table: refused 0x05, unreachable 0x04 …).
 * @module
 */

import { withPrefix } from "../net/duplex.ts";
import { acceptSocks5, Reply, replyForReason, sendSocks5Reply } from "../socks5/mod.ts";
import type { AddressProxyType } from "./proxy_type.ts";

/**
 * A SOCKS5 (RFC 1928, CONNECT) proxy type; username/password (RFC 1929) when the listener
 * has an authenticator.
 */
export function socks5Proxy(): AddressProxyType {
  return {
    kind: "address",
    scheme: "socks5",
    handshake: async (conn, ctx) => {
      const req = await acceptSocks5(conn, { authenticate: ctx.authenticate });
      ctx.conn.username = req.username;
      return {
        dest: req.dest,
        source: withPrefix(conn, req.leftover),
        reply: async (outcome) => {
          try {
            if (outcome.ok) await sendSocks5Reply(conn, Reply.succeeded, outcome.bound);
            else await sendSocks5Reply(conn, replyForReason(outcome.reason));
          } catch {
            // The client left before its answer; the relay (or close) that follows sees it.
          }
        },
      };
    },
  };
}
