/**
 * What a proxy type is: a small module that turns an accepted client into a destination
 * (its protocol handshake and reply), while dialling, limits, logging and the relay are
 * shared (lib/proxy/server.ts). The seed's "extension by wrapping".
 *
 * Two shapes:
 * - an *address* type (static, SOCKS5) does a handshake, names one destination and
 *   answers the client once the dial succeeded or failed; the shared code relays;
 * - a *session* type (the HTTP proxy, which may serve several forward requests on one
 *   keep-alive connection) drives the client itself and calls `ctx.connect()` for every
 *   destination it needs; dialling stays shared and tracked.
 * @module
 */

import type { Logger } from "../log.ts";
import type { HostPort } from "../net/addr.ts";
import type { Duplex } from "../net/duplex.ts";
import type { Abortable } from "../net/abort.ts";
import type { NetFailureReason } from "../net/errors.ts";
import type { ProxyConnection } from "./connection.ts";
import type { DialedConn } from "./dialer.ts";

/** Checks a client's credentials (constant time; never logs them). */
export type Authenticator = (username: string, password: string) => boolean | Promise<boolean>;

/** What every proxy type is given for one client. */
export interface ProxyTypeContext {
  /** The connection being served (for its id, username, failure record). */
  conn: ProxyConnection;
  /** Aborted on handshake timeout and on a hard server stop (made when first read). */
  signal: AbortSignal;
  /**
   * The same abort as `signal` without an AbortSignal made for it (serve()'s connection
   * context): what to hand lib/net's dial and relay and lib/http's proxy.
   */
  abort: Abortable;
  log: Logger;
  /** Set when the listener URL carried user:pass. */
  authenticate?: Authenticator;
  /**
   * The client's TCP connection as the kernel sees it (not a PROXY header's claim): where a
   * type that opens another socket for this client (UDP ASSOCIATE) binds and whom it admits.
   */
  socket: {
    local: HostPort;
    remote: HostPort;
    /**
     * The accepted socket itself, for what only the kernel knows about it (the redir type's
     * SO_ORIGINAL_DST). Read and write through the Duplex the type is given, never this.
     */
    conn: Deno.TcpConn;
  };
}

/** How a request that a type serves itself ended (see `ProxyRequest.serve`). */
export interface ServedEnd {
  end: "done" | "idle" | "aborted" | "error";
  failure?: string;
  message?: string;
}

/** How the dial for a {@linkcode ProxyRequest} turned out. */
export type DialOutcome =
  | { ok: true; bound?: HostPort }
  | { ok: false; reason: NetFailureReason };

/** The result of an address type's handshake. */
export interface ProxyRequest {
  dest: HostPort;
  /** The client side to relay: the accepted conn plus any bytes read past the handshake. */
  source: Duplex;
  /**
   * Answer the client (a SOCKS5 reply). Must not throw on a dead client. Absent: the protocol
   * has no answer (static, redir), and nothing is awaited for it.
   */
  reply?(outcome: DialOutcome): Promise<void>;
  /**
   * Set when the type already answered and serves the client itself instead of a dial and a
   * relay (SOCKS5 UDP ASSOCIATE, where `dest` is the UDP relay's address): runs until the
   * client is done, within the listener's idle timeout and `signal`.
   */
  serve?(ctx: { signal: AbortSignal; idleTimeoutMs: number }): Promise<ServedEnd>;
}

/** A proxy type that names one destination per connection; the relay is shared. */
export interface AddressProxyType {
  kind: "address";
  scheme: string;
  /**
   * The handshake reads nothing from the client and settles at once (static, redir): the
   * listener sets no handshake timer for it (one expecting a PROXY header still does).
   */
  instant?: boolean;
  /**
   * Every connection goes to this destination, the client relayed as it is (static): the
   * listener skips the handshake step (`handshake` gives the same for other callers).
   */
  fixedDest?: HostPort;
  /**
   * Run the protocol handshake. Rejects with an error carrying `reason` ("auth" for bad
   * credentials, anything else counts as a protocol failure) after answering the client
   * where the protocol has an answer.
   */
  handshake(conn: Duplex, ctx: ProxyTypeContext): Promise<ProxyRequest>;
}

/** Extra context of a session type. */
export interface SessionContext extends ProxyTypeContext {
  /**
   * Dial `dest` through the shared Dialer; tracked, failures typed (`NetError`). The type
   * counts the bytes it moves into `conn.stats` (the HTTP type's relay counts there itself).
   */
  connect(dest: HostPort): Promise<DialedConn>;
  /** Close a relayed connection after this long without traffic; 0 = never. */
  idleTimeoutMs: number;
  /**
   * Time each later request head on a kept-alive connection has to arrive whole, from its
   * first byte (the listener's handshake timeout; the first head is under serve()'s timer).
   */
  headTimeoutMs: number;
  /** Stop the handshake timer (called by `connect` as well). */
  handshakeDone(): void;
}

/** A proxy type that drives the whole client connection itself. */
export interface SessionProxyType {
  kind: "session";
  scheme: string;
  /** Serve `conn` until it is done; the connection is closed when this settles. */
  session(conn: Duplex, ctx: SessionContext): Promise<void>;
}

/** Any proxy type. */
export type ProxyType = AddressProxyType | SessionProxyType;
