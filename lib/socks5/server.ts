/**
 * Server side of a SOCKS5 handshake (RFC 1928 + RFC 1929) up to, not including, the reply:
 * the caller dials the destination and then answers with `sendSocks5Reply`.
 * @module
 */

import {
  BufferedReader,
  type Duplex,
  type HostPort,
  ProtocolError,
  relayPool,
  UnexpectedEofError,
  writeAll,
  writeQuietly,
} from "../net/mod.ts";
import { abortable } from "./_abort.ts";
import { addressBytes, encodeAddress, isKnownAddrType, parseAddress, putIPv4 } from "./addr.ts";
import { readSocks4Request, sendSocks4Reply, Socks4Reply, socks4Version } from "./socks4.ts";
import {
  AddrType,
  authFailed,
  authSucceeded,
  authVersion,
  Command,
  Method,
  Reply,
  Socks5Error,
  socksVersion,
} from "./const.ts";

export { staticCredentials } from "../net/mod.ts";

/**
 * Bytes the handshake reader pulls per read; payload read past the request is handed back.
 * The buffer is borrowed from lib/net's relay pool (its smallest class) and given back after
 * a completed handshake: a fresh 4 KiB per connection was a measurable share of its cost.
 */
const handshakeChunkBytes = 4 * 1024;

/** The method selections (VER METHOD): written as they are, never modified. */
const methodReply: Record<number, Uint8Array> = {
  [Method.noAuth]: Uint8Array.of(socksVersion, Method.noAuth),
  [Method.userPass]: Uint8Array.of(socksVersion, Method.userPass),
};

const decoder = new TextDecoder();

/** Options of {@linkcode acceptSocks5}. */
export interface Socks5ServerOptions {
  /**
   * When set, only username/password (method 0x02) is offered and this decides; return true
   * to accept. Compare secrets in constant time (see `timingSafeEqual` in lib/net, or
   * `staticCredentials`). When unset, only "no authentication" (0x00) is offered.
   */
  authenticate?: (username: string, password: string) => boolean | Promise<boolean>;
  /**
   * With `authenticate` set, also accept clients that offer only "no authentication":
   * username/password is still chosen whenever the client offers it (so a username can
   * select something, as depot's exits do), 0x00 otherwise; a function decides per client
   * (depot: unless its default exit has a password). @default false
   */
  allowNoAuth?: boolean | (() => boolean);
  /**
   * Accept UDP ASSOCIATE (RFC 1928 §7) requests instead of refusing them with 0x07: they come
   * back with `udpAssociate` set, `dest` being where the client says it will send from
   * (0.0.0.0:0 when it does not know), and the caller answers with the relay's address.
   * @default false
   */
  udpAssociate?: boolean;
  /**
   * Abort the handshake: `conn` is closed and the call rejects with the signal's reason
   * (pass `serve()`'s `ctx.signal`).
   */
  signal?: AbortSignal;
}

/** A client's CONNECT request, accepted and waiting for the reply. */
export interface Socks5Request {
  /** Destination: host is an IPv4 / IPv6 literal (no brackets) or a domain name. */
  dest: HostPort;
  /** The username, when username/password authentication was used. */
  username?: string;
  /** Bytes the client sent after the request; forward them before anything else. */
  leftover: Uint8Array;
  /** A UDP ASSOCIATE (only with `udpAssociate` in the options); CONNECT otherwise. */
  udpAssociate?: boolean;
}

/**
 * Run the server side of the handshake on `conn`: greeting, method selection,
 * username/password sub-negotiation when `opts.authenticate` is set, then the request.
 *
 * Defined refusals are answered on the wire and then thrown as {@linkcode Socks5Error}:
 * no acceptable method (0xFF), wrong credentials (status 0x01), BIND / UDP ASSOCIATE /
 * unknown commands (reply 0x07). Garbage throws a `ProtocolError`, after an answer where
 * the protocol has one (bad request version: 0x01, unknown address type: 0x08, empty
 * domain, or one not UTF-8 or holding a control character ("bad-domain"): 0x01). EOF mid-handshake is an `UnexpectedEofError` (a ProtocolError). The caller
 * closes `conn` in every error case; the handshake timeout is the caller's too
 * (`serve()`'s `handshakeTimeoutMs`).
 *
 * @example
 * ```ts
 * import { acceptSocks5, replyForReason, Reply, sendSocks5Reply, socks5Connect } from "./mod.ts";
 * import { classifyError, closeQuietly, dial, relay, serve, withPrefix } from "../net/mod.ts";
 * const server = serve(Deno.listen({ hostname: "127.0.0.1", port: 0 }), async (conn, ctx) => {
 *   const req = await acceptSocks5(conn);
 *   let out: Deno.TcpConn;
 *   try {
 *     out = await dial(req.dest.host, req.dest.port);
 *   } catch (e) {
 *     await sendSocks5Reply(conn, replyForReason(classifyError(e)));
 *     return;
 *   }
 *   await sendSocks5Reply(conn, Reply.succeeded, out.localAddr);
 *   ctx.handshakeDone();
 *   await relay(withPrefix(conn, req.leftover), out);
 * });
 * // A client asking for a port nobody listens on gets "connection refused" (0x05).
 * const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * closed.close();
 * const c = await dial("127.0.0.1", server.addr.port);
 * const failed = await socks5Connect(c, { host: "127.0.0.1", port: closed.addr.port }).catch((e) => e);
 * console.assert(failed.reason === "refused", String(failed));
 * closeQuietly(c);
 * await server.stop();
 * ```
 */
export function acceptSocks5(
  conn: Duplex,
  opts: Socks5ServerOptions = {},
): Promise<Socks5Request> {
  return abortable(conn, opts.signal, () => accept(conn, opts, false));
}

/** A request accepted by {@linkcode acceptSocks}: SOCKS5, or SOCKS4/4a (no username then). */
export interface SocksRequest extends Socks5Request {
  /** The protocol the client spoke: answer with `sendSocks5Reply` or `sendSocks4Reply`. */
  version: 4 | 5;
  /** SOCKS4 only: the destination came as a SOCKS4a host name. */
  socks4a?: boolean;
}

/**
 * Like {@linkcode acceptSocks5}, but a first byte 0x04 is a SOCKS4/4a request on the same
 * port (the version byte decides). SOCKS4 carries a user id but no password, so with
 * `opts.authenticate` set a SOCKS4 request is refused: reply 0x5B, then a
 * `Socks5Error("auth-required")`. Otherwise SOCKS4 refusals are 0x5B (see
 * `readSocks4Request`); SOCKS5 ones are `acceptSocks5`'s.
 *
 * @example
 * ```ts
 * import { acceptSocks, Reply, sendSocks4Reply, sendSocks5Reply, Socks4Reply } from "./mod.ts";
 * const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const c = await Deno.connect({ hostname: "127.0.0.1", port: l.addr.port });
 * // What `curl --socks4a` sends for example.org:80: VN CD PORT, DSTIP 0.0.0.1, no user id, the name.
 * const name = new TextEncoder().encode("example.org");
 * await c.write(Uint8Array.of(4, 1, 0, 80, 0, 0, 0, 1, 0, ...name, 0));
 * const s = await l.accept();
 * const req = await acceptSocks(s);
 * if (req.version === 4) await sendSocks4Reply(s, Socks4Reply.granted);
 * else await sendSocks5Reply(s, Reply.succeeded);
 * console.assert(req.version === 4 && req.socks4a && req.dest.host === "example.org");
 * s.close();
 * c.close();
 * l.close();
 * ```
 */
export function acceptSocks(conn: Duplex, opts: Socks5ServerOptions = {}): Promise<SocksRequest> {
  return abortable(conn, opts.signal, () => accept(conn, opts, true));
}

/**
 * The handshake of both entries (`socks4`: a first byte 0x04 is SOCKS4/4a) in one async frame:
 * each read is one read of `conn` into the reader's room, awaited here (no `fill()` frame), and
 * every field is parsed from its buffer, awaiting only for bytes not there yet (a client's
 * greeting and request each come in one segment). A promise per field, then a helper frame
 * per read, were measurable shares of a connection.
 */
async function accept(
  conn: Duplex,
  opts: Socks5ServerOptions,
  socks4: boolean,
): Promise<SocksRequest> {
  const buf = relayPool.acquire(handshakeChunkBytes);
  // Given back however the handshake ends: each read on it is awaited in this frame, so none
  // is pending once it returns or throws, and what it hands on (leftover) is a copy. One kept
  // after a failure stayed counted in the pool's budget for good: after 16,384 failed
  // handshakes no relay could grow its buffer past the smallest class.
  try {
    const r = new BufferedReader(conn, buf);
    if (!r.filled(await conn.read(r.room()))) throw new UnexpectedEofError();
    // Every field below is read with `at` (no view per field), each once buffered.
    const ver = r.at(0)!;
    r.skip(1);
    if (socks4 && ver === socks4Version) return await acceptSocks4(conn, r, opts);
    // Greeting: VER NMETHODS METHODS...
    if (ver !== socksVersion) {
      // No reply is defined for a wrong greeting version (it may not even be SOCKS): close.
      throw new ProtocolError(`not SOCKS5: version byte 0x${hex(ver)}`, "bad-version");
    }
    while (r.buffered < 1) if (!r.filled(await conn.read(r.room()))) throw new UnexpectedEofError();
    const nMethods = r.at(0)!;
    while (r.buffered < 1 + nMethods) {
      if (!r.filled(await conn.read(r.room()))) throw new UnexpectedEofError();
    }
    let wanted: number = opts.authenticate ? Method.userPass : Method.noAuth;
    if (opts.authenticate && !offers(r, nMethods, wanted)) {
      const noAuth = opts.allowNoAuth;
      if (noAuth === true || (typeof noAuth === "function" && noAuth())) wanted = Method.noAuth;
    }
    if (!offers(r, nMethods, wanted)) {
      const offered = [...r.peek().subarray(1, 1 + nMethods)].map(hex).join(",");
      r.skip(1 + nMethods);
      await writeAll(conn, new Uint8Array([socksVersion, Method.noAcceptable]));
      throw new Socks5Error("no-acceptable-method", `no acceptable method among [${offered}]`);
    }
    r.skip(1 + nMethods);
    const selected = methodReply[wanted];
    const wrote = await conn.write(selected); // one write takes 2 bytes whole
    if (wrote < selected.length) await writeAll(conn, selected.subarray(wrote));

    let username: string | undefined;
    if (wanted === Method.userPass && opts.authenticate) {
      username = await acceptUserPass(conn, r, opts.authenticate);
    }

    // Request: VER CMD RSV ATYP DST.ADDR DST.PORT
    while (r.buffered < 4) if (!r.filled(await conn.read(r.room()))) throw new UnexpectedEofError();
    const reqVer = r.at(0)!;
    if (reqVer !== socksVersion) {
      await sendSocks5Reply(conn, Reply.generalFailure);
      throw new ProtocolError(`bad request version 0x${hex(reqVer)}`, "bad-version");
    }
    const cmd = r.at(1)!, atyp = r.at(3)!;
    // RSV (head[2]) must be 0 by the RFC; clients that set it are tolerated, as most servers do.
    if (!isKnownAddrType(atyp)) {
      await sendSocks5Reply(conn, Reply.addressTypeNotSupported);
      throw new ProtocolError(`unknown address type 0x${hex(atyp)}`, "bad-address-type");
    }
    while (r.buffered < 5) if (!r.filled(await conn.read(r.room()))) throw new UnexpectedEofError();
    const first = r.at(4)!;
    if (atyp === AddrType.domain && first === 0) {
      // Answered at once, without waiting for a port that may never come.
      await sendSocks5Reply(conn, Reply.generalFailure);
      throw new ProtocolError("empty domain name", "empty-domain");
    }
    const size = 4 + addressBytes(atyp, first);
    while (r.buffered < size) {
      if (!r.filled(await conn.read(r.room()))) throw new UnexpectedEofError();
    }
    let dest: HostPort;
    try {
      dest = parseAddress(r.peek().subarray(4, size), atyp);
    } catch (err) {
      // A name that is not UTF-8 or holds a control character ("bad-domain"): a malformed
      // request like an empty name, answered the same (0x01), not 0x04 -- no host was tried.
      await sendSocks5Reply(conn, Reply.generalFailure);
      throw err;
    }
    r.skip(size);
    const udpAssociate = cmd === Command.udpAssociate && opts.udpAssociate === true;
    if (cmd !== Command.connect && !udpAssociate) {
      await sendSocks5Reply(conn, Reply.commandNotSupported);
      const name = cmd === Command.bind
        ? "BIND"
        : cmd === Command.udpAssociate
        ? "UDP ASSOCIATE"
        : `command 0x${hex(cmd)}`;
      throw new Socks5Error("command-not-supported", `${name} is not supported`);
    }
    const leftover = r.takeBuffered(); // a copy (or a shared empty array)
    return udpAssociate
      ? { version: 5, dest, username, leftover, udpAssociate }
      : { version: 5, dest, username, leftover };
  } finally {
    relayPool.release(buf);
  }
}

/** A SOCKS4/4a request after its version byte (see `acceptSocks`). */
async function acceptSocks4(
  conn: Duplex,
  r: BufferedReader,
  opts: Socks5ServerOptions,
): Promise<SocksRequest> {
  // Read the request first (with a password required too) so a refusal reaches a client that
  // is waiting for it.
  const req = await readSocks4Request(conn, r);
  if (opts.authenticate) {
    await sendSocks4Reply(conn, Socks4Reply.rejected);
    throw new Socks5Error(
      "auth-required",
      `SOCKS4 request for ${req.dest.host}:${req.dest.port} refused: ` +
        `this listener requires a password, which SOCKS4 cannot carry (use SOCKS5)`,
    );
  }
  return { version: 4, socks4a: req.socks4a, dest: req.dest, leftover: r.takeBuffered() };
}

/** RFC 1929: VER ULEN UNAME PLEN PASSWD -> VER STATUS. Returns the username on success. */
async function acceptUserPass(
  conn: Duplex,
  r: BufferedReader,
  authenticate: NonNullable<Socks5ServerOptions["authenticate"]>,
): Promise<string> {
  const ver = await r.readByte();
  if (ver !== authVersion) {
    await writeAll(conn, new Uint8Array([authVersion, authFailed]));
    throw new ProtocolError(`bad auth sub-negotiation version 0x${hex(ver)}`, "bad-version");
  }
  const username = decoder.decode(await r.readExact(await r.readByte()));
  const password = decoder.decode(await r.readExact(await r.readByte()));
  let ok = false;
  try {
    ok = (await authenticate(username, password)) === true;
  } finally {
    // A throwing authenticator still owes the client an answer; it is a refusal.
    if (!ok) await writeQuietly(conn, new Uint8Array([authVersion, authFailed]));
  }
  if (!ok) throw new Socks5Error("auth-failed", `authentication failed for user ${username}`);
  await writeAll(conn, new Uint8Array([authVersion, authSucceeded]));
  return username;
}

/**
 * Send the reply to an accepted request: `reply` (a {@linkcode Reply} code) and the bound
 * address. On success pass the real local address of the outgoing connection (a
 * `Deno.NetAddr` works as is); on failure leave it out and 0.0.0.0:0 is sent.
 */
export function sendSocks5Reply(
  conn: Pick<Duplex, "write">,
  reply: number,
  bound?: HostPort | Deno.NetAddr,
): Promise<void> {
  let out: Uint8Array;
  try {
    out = replyBytes(reply, bound);
  } catch (err) {
    return Promise.reject(err);
  }
  // No frame of its own: the write's (one write takes a reply whole).
  return writeOnce(conn, out);
}

/** Bytes of the shared array IPv4 replies are cut from (see `replyView`). */
const replySlabBytes = 4096;
let replySlab = new Uint8Array(0);
let replySlabUsed = 0;

/**
 * `n` bytes of their own for one reply: a view cut from a shared array, each part handed out
 * once (it is never written again, so a write still using it is safe). A typed array with its
 * own backing store per reply cost ~0.5 µs in Deno, a view ~0.04; the array goes to the GC
 * with its last view.
 */
function replyView(n: number): Uint8Array {
  if (replySlabUsed + n > replySlab.length) {
    replySlab = new Uint8Array(replySlabBytes);
    replySlabUsed = 0;
  }
  return replySlab.subarray(replySlabUsed, replySlabUsed += n);
}

/** The bytes of a SOCKS5 reply (see `sendSocks5Reply`). */
function replyBytes(reply: number, bound: HostPort | Deno.NetAddr | undefined): Uint8Array {
  const host = !bound ? "0.0.0.0" : "hostname" in bound ? bound.hostname : bound.host;
  const port = bound ? bound.port : 0;
  if (Number.isInteger(port) && port >= 0 && port <= 65535) {
    // The common answer (an IPv4 bound address): written straight into its bytes.
    const out = replyView(10);
    if (putIPv4(host, out, 4)) {
      out[0] = socksVersion;
      out[1] = reply;
      out[2] = 0;
      out[3] = AddrType.ipv4;
      out[8] = port >> 8;
      out[9] = port & 0xff;
      return out;
    }
  }
  const addr = encodeAddress({ host, port });
  const out = new Uint8Array(3 + addr.length);
  out.set([socksVersion, reply, 0x00]);
  out.set(addr, 3);
  return out;
}

/** Write `p` in one call if the connection takes it whole (it does for a reply), else all of it. */
async function writeOnce(conn: Pick<Duplex, "write">, p: Uint8Array): Promise<void> {
  const n = await conn.write(p);
  if (n < p.length) await writeAll(conn, p.subarray(n));
}

/** Whether the greeting buffered in `r` (NMETHODS first) offers `method`. */
function offers(r: BufferedReader, nMethods: number, method: number): boolean {
  for (let i = 1; i <= nMethods; i++) if (r.at(i) === method) return true;
  return false;
}

function hex(b: number): string {
  return b.toString(16).padStart(2, "0");
}
