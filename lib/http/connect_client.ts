/**
 * The client side of an HTTP CONNECT tunnel (RFC 9110 §9.3.6): ask a proxy on an open
 * connection for `host:port`, read its answer, hand back the bytes read past it. Used by
 * seaprox chains and by clients that leave through an HTTP proxy.
 * @module
 */

import {
  BufferedReader,
  type Duplex,
  type HostPort,
  joinHostPort,
  NetError,
  type NetFailureReason,
  writeAll,
} from "../net/mod.ts";
import { encodeLatin1, readResponseHead } from "./head.ts";
import { basicCredentials } from "./response.ts";

/** Longest CONNECT answer head accepted (proxies send a few hundred bytes). */
const maxConnectHeadBytes = 16 * 1024;
/**
 * The answer's reader starts this small (it doubles for a longer head): a CONNECT answer is
 * ~40-200 bytes, and a 4 KiB buffer per chained connection was zeroed memory for nothing.
 */
const connectReaderBytes = 512;

/** Options of {@linkcode httpConnect}. */
export interface HttpConnectOptions {
  /** Proxy credentials, sent as `Proxy-Authorization: Basic ...` (never logged). */
  auth?: { username: string; password: string };
}

/** A CONNECT refused by the proxy: `status` as answered, `reason` as a dial failure. */
export class HttpConnectError extends NetError {
  override name = "HttpConnectError";
  constructor(readonly status: number, reason: NetFailureReason, message: string) {
    super(reason, message);
  }
}

/**
 * The dial failure a CONNECT status stands for. A proxy's 502/503 does not say whether the
 * destination refused or could not be reached; both read as "host-unreachable" (SOCKS5
 * reply 0x04, HTTP 502 again). 403 and 407 read as "not-allowed", 504 as "timeout".
 */
export function reasonForConnectStatus(status: number): NetFailureReason {
  if (status === 403 || status === 407) return "not-allowed";
  if (status === 504) return "timeout";
  if (status === 500 || status === 502 || status === 503) return "host-unreachable";
  return "other";
}

/**
 * Send `CONNECT host:port` on `conn` (already connected to the proxy) and read the answer.
 * Resolves with the bytes the proxy sent past its answer head (usually none) once a 2xx
 * arrived; the caller then owns a tunnel to `dest`. A non-2xx answer rejects with
 * {@linkcode HttpConnectError}; garbage with an `HttpError` (a `ProtocolError`). The caller
 * closes `conn` on failure and bounds the time (close `conn` to cut a stalled proxy).
 *
 * @example
 * ```ts
 * import { handleHttpProxy, httpConnect } from "./mod.ts";
 * import { dial, serve } from "../net/mod.ts";
 * const target = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const proxy = serve(Deno.listen({ hostname: "127.0.0.1", port: 0 }), (c, ctx) =>
 *   handleHttpProxy(c, {
 *     connect: (d) => dial(d.host, d.port),
 *     handshakeDone: ctx.handshakeDone,
 *     signal: ctx.signal,
 *   }));
 * const c = await dial("127.0.0.1", proxy.addr.port);
 * const reached = target.accept();
 * const { leftover } = await httpConnect(c, { host: "127.0.0.1", port: target.addr.port });
 * console.assert(leftover.length === 0);
 * (await reached).close();
 * c.close();
 * target.close();
 * await proxy.stop();
 * ```
 */
export async function httpConnect(
  conn: Duplex,
  dest: HostPort,
  opts: HttpConnectOptions = {},
): Promise<{ leftover: Uint8Array }> {
  const authority = joinHostPort(dest.host, dest.port);
  const auth = opts.auth
    ? `Proxy-Authorization: ${basicCredentials(opts.auth.username, opts.auth.password)}\r\n`
    : "";
  await writeAll(
    conn,
    encodeLatin1(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n${auth}\r\n`),
  );
  const r = new BufferedReader(conn, connectReaderBytes);
  const head = await readResponseHead(r, { maxHeadBytes: maxConnectHeadBytes });
  if (head.status < 200 || head.status > 299) {
    throw new HttpConnectError(
      head.status,
      reasonForConnectStatus(head.status),
      `CONNECT ${authority}: ${head.status} ${head.reason}`.trimEnd(),
    );
  }
  return { leftover: r.takeBuffered() };
}
