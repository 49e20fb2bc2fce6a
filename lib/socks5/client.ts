/**
 * Client side of SOCKS5: greeting, optional username/password, CONNECT, reply.
 * Used by depot, by seaprox's upstream chaining and by tests.
 * @module
 */

import { BufferedReader, type Duplex, type HostPort, ProtocolError, writeAll } from "../net/mod.ts";
import { abortable } from "./_abort.ts";
import { encodeAddress, isKnownAddrType, readAddress } from "./addr.ts";
import {
  authSucceeded,
  authVersion,
  Command,
  maxFieldBytes,
  Method,
  Reply,
  Socks5Error,
  Socks5ReplyError,
  socksVersion,
} from "./const.ts";
import { reasonForReply, replyName } from "./reply.ts";

const encoder = new TextEncoder();
/** The greetings (VER NMETHODS METHODS), written as they are, never modified. */
const greetNoAuth = Uint8Array.of(socksVersion, 1, Method.noAuth);
const greetUserPass = Uint8Array.of(socksVersion, 2, Method.noAuth, Method.userPass);

/** Options of {@linkcode socks5Connect}. */
export interface Socks5ClientOptions {
  /** Username for RFC 1929 authentication; when set, method 0x02 is offered too. */
  username?: string;
  /** Password for RFC 1929 authentication. @default "" */
  password?: string;
  /** Abort: `conn` is closed and the call rejects with the signal's reason. */
  signal?: AbortSignal;
}

/** Outcome of a successful {@linkcode socks5Connect}. */
export interface Socks5ConnectResult {
  /** The address the server bound for the outgoing connection, as it reported it. */
  bound: HostPort;
  /** Bytes read past the reply (the destination spoke first); deliver them before the rest. */
  leftover: Uint8Array;
}

/**
 * Ask the SOCKS5 server at the other end of `conn` to CONNECT to `dest`.
 *
 * Offers "no authentication" and, when `opts.username` is given, username/password.
 * Throws {@linkcode Socks5ReplyError} (a NetError with `.reply` and `.reason`) when the
 * server answers with a failure reply, {@linkcode Socks5Error} when no method was acceptable
 * or authentication failed, a `ProtocolError` on anything malformed. The caller owns `conn`
 * and closes it on error.
 *
 * @example
 * ```ts
 * import { socks5Connect } from "./mod.ts";
 * import { closeQuietly, dial, withPrefix } from "../net/mod.ts";
 * // A one-connection SOCKS5 proxy for the example: accept no-auth, reply "succeeded".
 * const proxy = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const serving = (async () => {
 *   const p = await proxy.accept();
 *   const buf = new Uint8Array(64);
 *   await p.read(buf); // greeting: 05 01 00
 *   await p.write(new Uint8Array([5, 0])); // no authentication
 *   await p.read(buf); // CONNECT request
 *   await p.write(new Uint8Array([5, 0, 0, 1, 127, 0, 0, 1, 0x1f, 0x90])); // bound 127.0.0.1:8080
 *   p.close();
 * })();
 * const conn = await dial("127.0.0.1", proxy.addr.port);
 * const { bound, leftover } = await socks5Connect(conn, { host: "example.org", port: 80 });
 * const stream = withPrefix(conn, leftover); // bytes the proxy sent past its reply come first
 * console.log(bound); // { host: "127.0.0.1", port: 8080 }
 * closeQuietly(stream);
 * await serving;
 * proxy.close();
 * ```
 */
export function socks5Connect(
  conn: Duplex,
  dest: HostPort,
  opts: Socks5ClientOptions = {},
): Promise<Socks5ConnectResult> {
  return abortable(conn, opts.signal, () => request(conn, Command.connect, dest, opts));
}

/**
 * Ask the SOCKS5 server at the other end of `conn` for a UDP relay (UDP ASSOCIATE, RFC 1928
 * §7), saying we will send from `from` (0.0.0.0:0: not known yet). `bound` is the relay's
 * address as the server reported it (0.0.0.0 or :: means the server's own address). The
 * association lasts as long as `conn`. Errors as {@linkcode socks5Connect}'s; a server without
 * UDP answers reply 0x07 (command not supported).
 */
export function socks5UdpAssociate(
  conn: Duplex,
  opts: Socks5ClientOptions & { from?: HostPort } = {},
): Promise<Socks5ConnectResult> {
  const from = opts.from ?? { host: "0.0.0.0", port: 0 };
  return abortable(conn, opts.signal, () => request(conn, Command.udpAssociate, from, opts));
}

async function request(
  conn: Duplex,
  command: number,
  dest: HostPort,
  opts: Socks5ClientOptions,
): Promise<Socks5ConnectResult> {
  // VER CMD RSV, then the address: validates dest before anything is sent.
  const req = encodeAddress(dest, 3);
  req[0] = socksVersion;
  req[1] = command;
  req[2] = 0x00;
  const useAuth = opts.username !== undefined;
  const r = new BufferedReader(conn, 512);

  await writeAll(conn, useAuth ? greetUserPass : greetNoAuth);
  // Two bytes (a view: read before the next read of `r`).
  const choice = await r.readExact(2, false);
  const ver = choice[0], method = choice[1];
  if (ver !== socksVersion) {
    throw new ProtocolError(`not a SOCKS5 server: version 0x${hex(ver)}`, "bad-version");
  }
  if (method === Method.noAcceptable) {
    throw new Socks5Error("no-acceptable-method", "server accepted none of our methods");
  }
  if (method === Method.userPass && useAuth) {
    const user = encoder.encode(opts.username ?? "");
    const pass = encoder.encode(opts.password ?? "");
    if (user.length > maxFieldBytes || pass.length > maxFieldBytes) {
      throw new Socks5Error("bad-argument", "username and password must be at most 255 bytes");
    }
    const msg = new Uint8Array(3 + user.length + pass.length);
    msg.set([authVersion, user.length, ...user, pass.length, ...pass]);
    await writeAll(conn, msg);
    const status = await r.readExact(2);
    if (status[0] !== authVersion) {
      throw new ProtocolError(`bad auth answer version 0x${hex(status[0])}`, "bad-version");
    }
    if (status[1] !== authSucceeded) {
      throw new Socks5Error("auth-failed", "server rejected our username/password");
    }
  } else if (method !== Method.noAuth) {
    throw new ProtocolError(`server chose a method we did not offer: 0x${hex(method)}`);
  }

  await writeAll(conn, req);

  // Reply: VER REP RSV ATYP BND.ADDR BND.PORT (a view, its fields taken before the next read)
  const head = await r.readExact(4, false);
  const replyVer = head[0], rep = head[1], atyp = head[3];
  if (replyVer !== socksVersion) {
    throw new ProtocolError(`bad reply version 0x${hex(replyVer)}`, "bad-version");
  }
  if (rep !== Reply.succeeded) {
    // The rest of a failure reply carries nothing useful and some servers close before it.
    throw new Socks5ReplyError(
      rep,
      reasonForReply(rep),
      `SOCKS5 server refused ${command === Command.connect ? "CONNECT" : "UDP ASSOCIATE"} ` +
        `${dest.host}:${dest.port}: ${replyName(rep)}`,
    );
  }
  if (!isKnownAddrType(atyp)) {
    throw new ProtocolError(`unknown bound address type 0x${hex(atyp)}`, "bad-address-type");
  }
  const bound = await readAddress(r, atyp);
  return { bound, leftover: r.takeBuffered() };
}

function hex(b: number): string {
  return b.toString(16).padStart(2, "0");
}
