/**
 * The `socks5` proxy type: lib/socks5's server handshake names the destination; after the
 * shared dial the client gets the reply (success with the real bound address, or the
 * failure's code from lib/socks5's one table: refused 0x05, unreachable 0x04 ...). SOCKS4/4a
 * clients on the same port get 0x5A or 0x5B.
 * @module
 */

import { type Duplex, withPrefix } from "../net/duplex.ts";
import { errorMessage, NetError } from "../net/errors.ts";
import {
  acceptSocks,
  Reply,
  replyForReason,
  sendSocks4Reply,
  sendSocks5Reply,
  Socks4Reply,
} from "../socks5/mod.ts";
import type { AddressProxyType, DialOutcome } from "./proxy_type.ts";
import {
  bindLocalAssociation,
  type LocalAssociation,
  type UdpAssociateOptions,
} from "./socks5_udp.ts";
import { UdpUnsupportedError } from "./udp_link.ts";

/**
 * A UDP ASSOCIATE the client was refused (reply sent): `reason` is the log line's `failure`
 * ("udp-unsupported" when a hop cannot carry UDP, the message naming it).
 */
export class UdpAssociateError extends Error {
  override name = "UdpAssociateError";
  constructor(readonly reason: string, message: string, options?: ErrorOptions) {
    super(message, options);
  }
}

/**
 * Answer a SOCKS5 or SOCKS4 client how its dial went, never rejecting: a client that left
 * before its answer is seen by the relay (or close) that follows. No frame of its own.
 */
function replyTo(conn: Duplex, version: 4 | 5, outcome: DialOutcome): Promise<void> {
  const bound = outcome.ok ? outcome.bound : undefined;
  const sent = version === 4
    // SOCKS4 has one failure code: the reason is in our log line, not on the wire.
    ? sendSocks4Reply(conn, outcome.ok ? Socks4Reply.granted : Socks4Reply.rejected, bound)
    : sendSocks5Reply(conn, outcome.ok ? Reply.succeeded : replyForReason(outcome.reason), bound);
  return sent.then(undefined, clientGone);
}

/** A reply that could not be written: the client left (see `replyTo`). */
function clientGone(): void {
  // Nothing to do: the relay (or close) that follows sees it, the log line says how it ended.
}

/**
 * A SOCKS5 (RFC 1928, CONNECT) proxy type; username/password (RFC 1929) when the listener
 * has an authenticator. SOCKS4 and SOCKS4a clients are served on the same listener (the
 * version byte decides; the connection's scheme becomes "socks4"/"socks4a"), through the same
 * dialer, ACL and limits, except on a listener with user:pass: SOCKS4 cannot carry a password,
 * so it is refused with reply 0x5B and logged as auth-failed ("auth-required").
 *
 * With `opts.udp`, UDP ASSOCIATE is served too (see socks5_udp.ts; the connection's scheme
 * becomes "socks5-udp"), its datagrams leaving through `opts.udp.open` (the chain's UDP
 * carriage) or from here; without it, it is refused with reply 0x07, as it is when the
 * carriage cannot be opened because a hop cannot carry UDP ({@linkcode UdpUnsupportedError}).
 */
export function socks5Proxy(opts: { udp?: UdpAssociateOptions } = {}): AddressProxyType {
  return {
    kind: "address",
    scheme: "socks5",
    handshake: async (conn, ctx) => {
      const req = await acceptSocks(conn, {
        authenticate: ctx.authenticate,
        udpAssociate: opts.udp !== undefined,
      });
      ctx.conn.username = req.username;
      if (req.udpAssociate && opts.udp) {
        ctx.conn.scheme = "socks5-udp";
        let assoc: LocalAssociation;
        try {
          assoc = await bindLocalAssociation(
            ctx.socket,
            req.dest,
            opts.udp,
            ctx.conn.stats,
            ctx.log,
            ctx.signal,
          );
        } catch (err) {
          const code = err instanceof UdpUnsupportedError
            ? Reply.commandNotSupported
            : err instanceof NetError
            ? replyForReason(err.reason)
            : Reply.generalFailure;
          await sendSocks5Reply(conn, code).catch(() => {
            // The client left before its answer; the bind failure is what gets logged.
          });
          throw new UdpAssociateError(
            err instanceof UdpUnsupportedError
              ? "udp-unsupported"
              : err instanceof NetError
              ? err.reason
              : "udp-bind",
            errorMessage(err),
            { cause: err },
          );
        }
        try {
          await sendSocks5Reply(conn, Reply.succeeded, assoc.addr);
        } catch (err) {
          assoc.close();
          throw err;
        }
        return {
          dest: assoc.addr,
          source: conn,
          reply: () => Promise.resolve(),
          serve: ({ signal, idleTimeoutMs }) => assoc.run(conn, signal, idleTimeoutMs),
        };
      }
      if (req.version === 4) ctx.conn.scheme = req.socks4a ? "socks4a" : "socks4";
      return {
        dest: req.dest,
        source: withPrefix(conn, req.leftover),
        reply: (outcome) => replyTo(conn, req.version, outcome),
      };
    },
  };
}
