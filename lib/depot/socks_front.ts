/**
 * The depot server's SOCKS5 front: method selection that lets one port serve clients with
 * and without a username (the username picks the exit), on top of lib/socks5's handshake.
 * @module
 */

import { BufferedReader, concatBytes, type Duplex, ProtocolError, withPrefix } from "../net/mod.ts";
import { acceptSocks5, Method, type Socks5Request } from "../socks5/mod.ts";

/** SOCKS protocol version byte. */
const socksVersion = 0x05;

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
 *
 * lib/socks5's `acceptSocks5` offers exactly one method per call, so the greeting is read
 * here and replayed to it (via `withPrefix`) with the chosen method alone.
 */
export async function acceptDepotSocks(
  conn: Duplex,
  opts: DepotSocksOptions,
): Promise<Socks5Request> {
  const r = new BufferedReader(conn, 512);
  const ver = await r.readByte();
  if (ver !== socksVersion) {
    throw new ProtocolError(`not SOCKS5: version byte 0x${ver.toString(16)}`, "bad-version");
  }
  const methods = await r.readExact(await r.readByte());
  let greeting: Uint8Array;
  let useAuth: boolean;
  if (methods.includes(Method.userPass)) {
    greeting = new Uint8Array([socksVersion, 1, Method.userPass]);
    useAuth = true;
  } else if (methods.includes(Method.noAuth) && !opts.defaultNeedsPassword()) {
    greeting = new Uint8Array([socksVersion, 1, Method.noAuth]);
    useAuth = false;
  } else {
    // Replay what the client offered: acceptSocks5 answers 0xFF since 0x02 is not in it.
    greeting = new Uint8Array([socksVersion, methods.length, ...methods]);
    useAuth = true;
  }
  const replay = withPrefix(conn, concatBytes(greeting, r.takeBuffered()));
  return await acceptSocks5(replay, {
    udpAssociate: opts.udpAssociate,
    ...(useAuth ? { authenticate: opts.authenticate } : {}),
  });
}
