/**
 * The HTTP/1.1 Upgrade handshake on an open connection, both sides: to WebSocket (then the
 * stream is framed by {@linkcode WsConn}) or to a raw protocol token such as `warren-mux`
 * (then the bytes after the 101 are the stream itself, no framing or masking cost).
 * @module
 */

import {
  BufferedReader,
  closeQuietly,
  type Duplex,
  errorMessage,
  withPrefix,
  writeAll,
  writeQuietly,
} from "../net/mod.ts";
import { getHeader, headerHasToken, readRequestHead, readResponseHead } from "../http/head.ts";
import {
  checkUpgradeRequest,
  newWebSocketKey,
  switchingProtocolsResponse,
  webSocketAccept,
  WsConn,
} from "./websocket.ts";

/** The Upgrade token of a WebSocket; any other token is a raw upgrade. */
export const webSocketProtocol = "websocket";

/** Why an upgrade failed: "refused" is a status other than 101, "protocol" a bad answer. */
export type UpgradeFailure = "refused" | "protocol";

/** A failed upgrade; `status` is the HTTP status the other side answered, if any. */
export class UpgradeError extends Error {
  /** Error class name. */
  override name = "UpgradeError";
  /** A failure of kind `reason`, with the peer's `status` when it answered one. */
  constructor(
    readonly reason: UpgradeFailure,
    message: string,
    readonly status?: number,
  ) {
    super(message);
  }
}

/** What {@linkcode upgradeClient} asks for. */
export interface UpgradeRequestOptions {
  /** Request target. @default "/" */
  path?: string;
  /** Host header value (`host[:port]`). */
  host: string;
  /** `websocket`, or a raw protocol token. @default "websocket" */
  protocol?: string;
  /** Extra header fields (a credential, a User-Agent). */
  headers?: Record<string, string>;
  /** WebSocket only: keep half-close (see `WsConnOptions.halfClose`). @default false */
  halfClose?: boolean;
}

/**
 * Ask the server at the other end of `conn` to switch protocols, and return the stream:
 * a client {@linkcode WsConn} for WebSocket, `conn` itself (with any bytes read past the
 * answer in front) for a raw token.
 *
 * Rejects with {@linkcode UpgradeError} for a status other than 101 or an answer that does
 * not switch to the protocol asked for (`conn` is closed then); read and write errors
 * (the peer hung up, a reset) reject as they are, and the caller closes `conn`.
 */
export async function upgradeClient(conn: Duplex, opts: UpgradeRequestOptions): Promise<Duplex> {
  const protocol = opts.protocol ?? webSocketProtocol;
  const ws = protocol === webSocketProtocol;
  const key = ws ? newWebSocketKey() : "";
  let req = `GET ${opts.path ?? "/"} HTTP/1.1\r\nHost: ${opts.host}\r\n` +
    `Upgrade: ${protocol}\r\nConnection: Upgrade\r\n`;
  if (ws) req += `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n`;
  for (const [k, v] of Object.entries(opts.headers ?? {})) req += `${k}: ${v}\r\n`;
  await writeAll(conn, new TextEncoder().encode(req + "\r\n"));
  const reader = new BufferedReader(conn);
  const head = await readResponseHead(reader);
  const fail = (reason: UpgradeFailure, message: string): never => {
    closeQuietly(conn);
    throw new UpgradeError(reason, message, head.status);
  };
  if (head.status !== 101) fail("refused", `server answered ${head.status} ${head.reason}`);
  if ((getHeader(head.headers, "upgrade") ?? "").toLowerCase() !== protocol) {
    fail("protocol", `server did not switch to ${protocol}`);
  }
  if (ws && getHeader(head.headers, "sec-websocket-accept") !== await webSocketAccept(key)) {
    fail("protocol", "bad Sec-WebSocket-Accept");
  }
  const rest = reader.takeBuffered();
  if (!ws) return withPrefix(conn, rest);
  return new WsConn(conn, { role: "client", prefix: rest, halfClose: opts.halfClose });
}

/** What {@linkcode upgradeServer} accepts. */
export interface UpgradeAcceptOptions {
  /** The only request target accepted (others get 404); any when absent. */
  path?: string;
  /** `websocket`, or a raw protocol token. @default "websocket" */
  protocol?: string;
  /** WebSocket only: keep half-close (see `WsConnOptions.halfClose`). @default false */
  halfClose?: boolean;
}

/**
 * Read one request on `conn` and switch it to `opts.protocol`: answer 101 and return the
 * stream (a server {@linkcode WsConn} for WebSocket, `conn` with the bytes read past the
 * head in front for a raw token). Anything else (not an upgrade to that protocol, another
 * path, a malformed head) is answered 400/404 and rejects with {@linkcode UpgradeError};
 * the caller closes `conn`. The caller's handshake timer bounds how long this waits.
 */
export async function upgradeServer(
  conn: Duplex,
  opts: UpgradeAcceptOptions = {},
): Promise<Duplex> {
  const protocol = opts.protocol ?? webSocketProtocol;
  const ws = protocol === webSocketProtocol;
  const reader = new BufferedReader(conn);
  const refuse = async (status: 400 | 404, why: string): Promise<never> => {
    const text = status === 404 ? "Not Found" : "Bad Request";
    const body = `${why}\n`;
    await writeQuietly(
      conn,
      new TextEncoder().encode(
        `HTTP/1.1 ${status} ${text}\r\nContent-Type: text/plain\r\n` +
          `Content-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`,
      ),
    );
    throw new UpgradeError("refused", why, status);
  };
  let head;
  try {
    head = await readRequestHead(reader, { maxHeadBytes: 16 * 1024 });
  } catch (err) {
    return await refuse(400, `malformed upgrade request: ${errorMessage(err)}`);
  }
  if (head === null) throw new UpgradeError("protocol", "connection closed before a request");
  const header = (name: string) => getHeader(head.headers, name);
  if (opts.path !== undefined && head.target !== opts.path) {
    return await refuse(404, `no upgrade at ${head.target}`);
  }
  if (ws) {
    const bad = checkUpgradeRequest(head.method, header);
    if (bad) return await refuse(400, bad);
    await writeAll(conn, await switchingProtocolsResponse(header("sec-websocket-key")!));
    return new WsConn(conn, {
      role: "server",
      prefix: reader.takeBuffered(),
      halfClose: opts.halfClose,
    });
  }
  if (
    head.method !== "GET" || !headerHasToken(head.headers, "upgrade", protocol) ||
    !headerHasToken(head.headers, "connection", "upgrade")
  ) {
    return await refuse(400, `not an upgrade to ${protocol}`);
  }
  await writeAll(
    conn,
    new TextEncoder().encode(
      `HTTP/1.1 101 Switching Protocols\r\nUpgrade: ${protocol}\r\nConnection: Upgrade\r\n\r\n`,
    ),
  );
  return withPrefix(conn, reader.takeBuffered());
}
