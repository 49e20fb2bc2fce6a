/** Helpers for the SOCKS5 tests: wire messages and a tiny SOCKS5 server built on lib/socks5. */

import {
  BufferedReader,
  classifyError,
  closeQuietly,
  dial,
  relay,
  serve,
  type Server,
  withPrefix,
} from "../lib/net/mod.ts";
import {
  acceptSocks5,
  Reply,
  replyForReason,
  sendSocks5Reply,
  type Socks5ServerOptions,
} from "../lib/socks5/mod.ts";
import { concatBytes } from "../lib/net/bytes.ts";

export const enc = new TextEncoder();
export const dec = new TextDecoder();

/** Concatenate byte arrays. */
export function concat(...parts: (Uint8Array | number[])[]): Uint8Array {
  return concatBytes(...parts.map((p) => (p instanceof Uint8Array ? p : new Uint8Array(p))));
}

/** A username/password sub-negotiation message. */
export function userPassMsg(user: string, pass: string): Uint8Array {
  const u = enc.encode(user), p = enc.encode(pass);
  return concat([1, u.length], u, [p.length], p);
}

/** A tiny SOCKS5 server: acceptSocks5 + dial + sendSocks5Reply + relay. */
export function startSocksServer(opts: Socks5ServerOptions = {}): Server {
  return serve(Deno.listen({ hostname: "127.0.0.1", port: 0 }), async (conn, ctx) => {
    const req = await acceptSocks5(conn, opts);
    let out: Deno.TcpConn;
    try {
      out = await dial(req.dest.host, req.dest.port, { timeoutMs: 5000, prefer: "ipv4" });
    } catch (e) {
      await sendSocks5Reply(conn, replyForReason(classifyError(e)));
      return;
    }
    try {
      await sendSocks5Reply(conn, Reply.succeeded, out.localAddr);
    } catch (e) {
      closeQuietly(out);
      throw e;
    }
    ctx.handshakeDone();
    await relay(withPrefix(conn, req.leftover), out);
  }, { handshakeTimeoutMs: 5000 });
}

/**
 * A raw SOCKS5 UDP ASSOCIATE on `port` (no authentication, or username/password with `auth`),
 * saying the client sends from `fromPort` (0: not known yet): the control connection, the
 * reply code and the relay address.
 */
export async function socks5Associate(
  port: number,
  fromPort = 0,
  auth?: { user: string; pass: string },
): Promise<{
  control: Deno.TcpConn;
  reply: number;
  relay: { host: string; port: number };
}> {
  const control = await dial("127.0.0.1", port);
  const r = new BufferedReader(control, 64);
  await control.write(Uint8Array.of(5, 1, auth ? 2 : 0));
  const method = await r.readExact(2);
  if (method[1] !== (auth ? 2 : 0)) throw new Error(`SOCKS5 method 0x${method[1].toString(16)}`);
  if (auth) {
    await control.write(userPassMsg(auth.user, auth.pass));
    const status = await r.readExact(2);
    if (status[1] !== 0) throw new Error(`SOCKS5 authentication refused (${status[1]})`);
  }
  await control.write(Uint8Array.of(5, 3, 0, 1, 0, 0, 0, 0, fromPort >> 8, fromPort & 0xff));
  const head = await r.readExact(4);
  const rest = await r.readExact(head[3] === 1 ? 6 : 18);
  const relayPort = (rest[rest.length - 2] << 8) | rest[rest.length - 1];
  return { control, reply: head[1], relay: { host: "127.0.0.1", port: relayPort } };
}
