/**
 * The depot server's SOCKS5 front: method selection that lets one port serve clients with
 * and without a username (the username picks the exit): lib/socks5's handshake with
 * `allowNoAuth` decided per client.
 * @module
 */

import type { Duplex } from "../net/mod.ts";
import { acceptSocks5, type Socks5Request } from "../socks5/mod.ts";

/** Options of {@linkcode acceptDepotSocks}. */
export interface DepotSocksOptions {
  /** Whether a client without username (the default exit) must authenticate anyway. */
  defaultNeedsPassword(): boolean;
  /** Decide a username/password pair (username "" = default exit). */
  authenticate(username: string, password: string): boolean | Promise<boolean>;
  /** Accept UDP ASSOCIATE (returned with `udpAssociate` set) instead of answering 0x07. */
  udpAssociate?: boolean;
}

/**
 * Accept a SOCKS5 handshake choosing the method per client: username/password (0x02)
 * whenever the client offers it, so its username can pick an exit; otherwise "no
 * authentication" (0x00) for the default exit, unless that exit has a password, in which
 * case the client is answered 0xFF (no acceptable method).
 */
export function acceptDepotSocks(conn: Duplex, opts: DepotSocksOptions): Promise<Socks5Request> {
  return acceptSocks5(conn, {
    udpAssociate: opts.udpAssociate,
    authenticate: opts.authenticate,
    allowNoAuth: () => !opts.defaultNeedsPassword(),
  });
}
