/**
 * WebSocket pass-through for the embeddable (fetch handler) front. A fetch handler cannot
 * hijack the public connection, but it can accept a WebSocket itself. So the app's opening
 * handshake runs first, over a tunnel stream (its status and chosen subprotocol must be
 * known before the public 101 is sent); then the public request is upgraded with that
 * subprotocol and messages are bridged both ways: text stays text, binary stays binary,
 * Close codes and reasons are forwarded, each side's pings are answered on that side.
 *
 * Unlike the standalone front (which relays the upgraded bytes untouched), this front is
 * a WebSocket endpoint on both sides: frames are re-framed, extensions (permessage-deflate)
 * are not offered to the app, and a message is held whole while it passes (bounded by
 * `maxMessageBytes`).
 * @module
 */

import { BufferedReader, errorMessage, ProtocolError, sleep } from "../net/mod.ts";
import {
  getHeader,
  headerHasToken,
  headerTokens,
  readResponseHead,
  type ResponseHead,
  serializeRequestHead,
} from "../http/mod.ts";
import type { ClientConn } from "./client_conn.ts";
import type { TunnelServer } from "./server.ts";
import { TunnelError, type TunnelStream } from "./tunnel_stream.ts";
import {
  isSendableCloseCode,
  newWebSocketKey,
  webSocketAccept,
  WsConn,
} from "../transport/websocket.ts";

/** Limits of a bridged WebSocket. */
export interface WebSocketLimits {
  /** Largest message passed either way; a bigger one closes with 1009. @default 16 MiB */
  maxMessageBytes?: number;
  /**
   * Stop reading the tunnel while the public socket's `bufferedAmount` is above this.
   * @default 1 MiB
   */
  sendHighWaterBytes?: number;
  /**
   * Public-side bytes waiting for the tunnel stream (a WebSocket object cannot be paused):
   * above this (and more than one message) both sides are closed (1013 to the public
   * client). @default 32 MiB
   */
  maxQueuedBytes?: number;
  /** After sending a Close to one side, wait this long for its answer. @default 5000 */
  closeTimeoutMs?: number;
}

const defaults: Required<WebSocketLimits> = {
  maxMessageBytes: 16 * 1024 * 1024,
  sendHighWaterBytes: 1024 * 1024,
  maxQueuedBytes: 32 * 1024 * 1024,
  closeTimeoutMs: 5_000,
};

/** The public side must finish its upgrade within this long (else the app is told 1001). */
const publicOpenTimeoutMs = 30_000;
/** How often a paused tunnel reader re-checks the public socket's `bufferedAmount`. */
const drainPollMs = 2;
/** Largest Close reason in bytes (125-byte control payload minus the code). */
const maxCloseReasonBytes = 123;

/** Request headers replaced by our own handshake with the app. */
const ownHandshakeHeaders = new Set([
  "sec-websocket-key",
  "sec-websocket-version",
  "sec-websocket-extensions",
  "sec-websocket-accept",
]);

/** Where and what to open for one public WebSocket request. */
export interface WebSocketTarget {
  server: TunnelServer;
  client: ClientConn;
  /** The routed virtual host. */
  host: string;
  localPort: string;
  /** Request target (path and query). */
  target: string;
  /** End-to-end request headers, X-Forwarded-* included, hop-by-hop ones removed. */
  headers: [string, string][];
}

/** Result of the app's opening handshake. */
export type AppHandshake =
  | { kind: "accepted"; head: ResponseHead; protocol: string; conn: WsConn; ts: TunnelStream }
  | { kind: "refused"; head: ResponseHead; reader: BufferedReader; ts: TunnelStream }
  | { kind: "failed"; status: 502 | 504; why: string };

/**
 * Open a tunnel stream and do the client side of the opening handshake with the app: the
 * public request's headers with our own Sec-WebSocket-Key, the answer's
 * Sec-WebSocket-Accept checked. A non-101 answer is `refused` (its head read, body not).
 */
export async function appHandshake(t: WebSocketTarget): Promise<AppHandshake> {
  const { server, host } = t;
  const key = newWebSocketKey();
  const headers: [string, string][] = t.headers.filter(([k]) =>
    !ownHandshakeHeaders.has(k.toLowerCase())
  );
  headers.push(
    ["Upgrade", "websocket"],
    ["Connection", "Upgrade"],
    ["Sec-WebSocket-Version", "13"],
    ["Sec-WebSocket-Key", key],
  );
  const offered = headerTokens(headers, "sec-websocket-protocol");
  const headBytes = serializeRequestHead({
    method: "GET",
    target: t.target,
    version: "HTTP/1.1",
    headers,
  });
  let ts: TunnelStream;
  try {
    ts = await server.openStream(t.client, host, "http", t.localPort, headBytes);
  } catch (err) {
    return { kind: "failed", status: 502, why: errorMessage(err) };
  }
  try {
    await ts.reply(server.responseTimeoutMs);
  } catch (err) {
    ts.release();
    const timeout = err instanceof TunnelError && err.reason === "timeout";
    return { kind: "failed", status: timeout ? 504 : 502, why: errorMessage(err) };
  }
  const src = ts.body();
  const reader = new BufferedReader(src);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    ts.stream.reset();
  }, server.responseTimeoutMs);
  let head: ResponseHead;
  try {
    do head = await readResponseHead(reader); while (head.status < 200 && head.status !== 101);
  } catch (err) {
    ts.release();
    return { kind: "failed", status: timedOut ? 504 : 502, why: errorMessage(err) };
  } finally {
    clearTimeout(timer);
  }
  if (head.status !== 101) return { kind: "refused", head, reader, ts };
  const h = (n: string) => getHeader(head.headers, n);
  const protocol = h("sec-websocket-protocol") ?? "";
  const accept = await webSocketAccept(key);
  const why = !headerHasToken(head.headers, "upgrade", "websocket")
    ? "101 without Upgrade: websocket"
    : h("sec-websocket-accept") !== accept
    ? "wrong Sec-WebSocket-Accept"
    : h("sec-websocket-extensions") !== undefined
    ? "an extension nobody offered"
    : protocol !== "" && !offered.includes(protocol)
    ? "a subprotocol the client did not offer"
    : null;
  if (why) {
    ts.release();
    return { kind: "failed", status: 502, why: `bad 101 from the app: ${why}` };
  }
  const conn = new WsConn(src, { role: "client", prefix: reader.takeBuffered() });
  return { kind: "accepted", head, protocol, conn, ts };
}

/** `reason` cut to what a Close frame can carry (whole UTF-8 characters). */
function closeReason(reason: string): string {
  const b = new TextEncoder().encode(reason);
  if (b.length <= maxCloseReasonBytes) return reason;
  return new TextDecoder().decode(b.subarray(0, maxCloseReasonBytes)).replace(/\uFFFD+$/, "");
}

/**
 * Bridge the public `socket` (from `Deno.upgradeWebSocket`) and the app's connection until
 * both sides closed; releases the tunnel stream at the end. Never rejects.
 */
export async function bridgeWebSocket(
  server: TunnelServer,
  host: string,
  socket: WebSocket,
  app: { conn: WsConn; ts: TunnelStream },
  limits: WebSocketLimits = {},
): Promise<void> {
  const lim = { ...defaults, ...limits };
  const { conn, ts } = app;
  const log = server.log;
  const encoder = new TextEncoder();
  const decoder = new TextDecoder("utf-8", { fatal: true });
  socket.binaryType = "arraybuffer";
  let queued = 0;
  let appCloseSent = false;
  let closeTimer: ReturnType<typeof setTimeout> | undefined;
  let finished = false;
  /** Our Close to the app, once sent (awaited briefly before the stream is released). */
  let appClose: Promise<void> = Promise.resolve();

  const closePublic = (code: number | undefined, reason: string) => {
    if (socket.readyState === WebSocket.CLOSING || socket.readyState === WebSocket.CLOSED) return;
    try {
      if (code === undefined) socket.close();
      else socket.close(isSendableCloseCode(code) ? code : 1011, closeReason(reason));
    } catch {
      try {
        socket.close();
      } catch {
        // Already closing.
      }
    }
  };
  /** Send our Close to the app; its answer ends the read loop (or the timer does). */
  const closeApp = (code: number | undefined, reason: string) => {
    if (appCloseSent || finished) return;
    appCloseSent = true;
    appClose = conn.sendCloseFrame(code, closeReason(reason)).catch(() => {
      // The stream is gone: the read loop ends on its own.
    });
    closeTimer = setTimeout(() => ts.release(), lim.closeTimeoutMs);
  };
  const toApp = (type: "text" | "binary", data: Uint8Array) => {
    if (appCloseSent) return;
    if (data.length > lim.maxMessageBytes) {
      closePublic(1009, "message too big");
      closeApp(1001, "the public client sent a message too big");
      return;
    }
    if (queued > 0 && queued + data.length > lim.maxQueuedBytes) {
      log.debug("websocket backlog over the limit", { host, queued });
      closePublic(1013, "tunnel backlog");
      closeApp(1001, "the public client sent faster than the tunnel carries");
      return;
    }
    queued += data.length;
    conn.sendMessage(type, data).then(() => {
      queued -= data.length;
    }, () => {
      queued -= data.length;
      // The stream is gone: the read loop ends and closes the public side.
    });
  };
  // Listeners, not `socket.onmessage = ...`: a function literal assigned to a property is
  // made in V8's old generation and keeps this connection through scavenges
  // (tests/source_closure_test.ts).
  socket.addEventListener("message", (e: MessageEvent) => {
    const d = e.data;
    if (typeof d === "string") toApp("text", encoder.encode(d));
    else if (d instanceof ArrayBuffer) toApp("binary", new Uint8Array(d));
  });
  socket.addEventListener("close", (e: CloseEvent) => {
    // 1005: the client's Close had no code; 1006 (it vanished without a Close), 1015 and
    // anything else a Close frame cannot carry: "going away".
    const code = e.code === 1005 ? undefined : isSendableCloseCode(e.code) ? e.code : 1001;
    closeApp(code, e.reason);
  });
  socket.addEventListener("error", () => {
    // A close event follows.
  });

  let openTimer: ReturnType<typeof setTimeout> | undefined;
  const opened = socket.readyState === WebSocket.OPEN ||
    await new Promise<boolean>((resolve) => {
      socket.addEventListener("open", () => resolve(true), { once: true });
      socket.addEventListener("close", () => resolve(false), { once: true });
      openTimer = setTimeout(() => resolve(false), publicOpenTimeoutMs);
    });
  clearTimeout(openTimer);
  try {
    while (opened) {
      const m = await conn.readMessage(lim.maxMessageBytes);
      if (m === null) {
        closePublic(1001, "the app closed the connection");
        break;
      }
      if (m.type === "close") {
        appCloseSent = true; // readMessage answered it (or it answered ours)
        closePublic(m.code, m.reason);
        break;
      }
      // Public side closing: keep reading until the app answers our Close.
      if (socket.readyState !== WebSocket.OPEN) continue;
      socket.send(m.type === "text" ? decoder.decode(m.data) : m.data);
      while (
        socket.bufferedAmount > lim.sendHighWaterBytes && socket.readyState === WebSocket.OPEN
      ) {
        await sleep(drainPollMs);
      }
    }
    if (!opened) {
      closePublic(1001, "");
      closeApp(1001, "the public client went away");
    }
  } catch (err) {
    const tooBig = err instanceof ProtocolError && err.reason === "too-large";
    const codec = err instanceof ProtocolError && err.reason !== "eof";
    const badText = err instanceof TypeError;
    log.debug("websocket bridge ended", { host, error: errorMessage(err) });
    if (tooBig || codec || badText) {
      closeApp(tooBig ? 1009 : badText ? 1007 : 1002, tooBig ? "message too big" : "");
      closePublic(1011, tooBig ? "message from the app too big" : "bad frame from the app");
    } else {
      closePublic(1001, "tunnel closed");
    }
  } finally {
    finished = true;
    clearTimeout(closeTimer);
    // Let a Close we queued for the app go out before the stream goes (bounded wait).
    let waitTimer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([appClose, new Promise((r) => waitTimer = setTimeout(r, 1_000))]);
    clearTimeout(waitTimer);
    ts.release();
  }
}
