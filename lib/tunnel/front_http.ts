/**
 * The standalone front end (fast path): our own HTTP/1 listener. It parses each request
 * head, routes by Host, writes the head (with X-Forwarded-*) and the body onto a tunnel
 * stream, and copies the response bytes back untouched. It also takes the control path's
 * WebSocket upgrade itself, so the same client works against this front and the Hono one.
 *
 * Keep-alive: one tunnel stream per public connection and virtual host. Every request head
 * on the connection is parsed (so each gets X-Forwarded-* and its Host is checked); while
 * the Host stays the same, requests follow on the same stream (the client's connection to
 * the local app stays alive too). When a later request names another Host, the stream's
 * write side is closed, the previous responses drain, and a new stream to the new host's
 * client carries the request: responses can never cross hosts or requests.
 * @module
 */

import {
  BufferedReader,
  closeQuietly,
  type ConnContext,
  type Duplex,
  errorMessage,
  withPrefix,
  writeAll,
} from "../net/mod.ts";
import { peerCommonName } from "../transport/mod.ts";
import { type Logger, silentLogger } from "../log.ts";
import {
  copyBody,
  fieldNameIs,
  getHeader,
  headerHasToken,
  HttpError,
  readRequestHeadWithin,
  requestBodyFraming,
  type RequestHead,
  serializeRequestHead,
  simpleResponse,
  statusForHttpError,
} from "../http/mod.ts";
import { controlPath, identifierHeader, rawUpgradeToken } from "./protocol.ts";
import { hostPort, normalizeHost } from "./registry.ts";
import type { TunnelServer } from "./server.ts";
import type { TunnelError, TunnelStream } from "./tunnel_stream.ts";
import { checkUpgradeRequest, switchingProtocolsResponse, WsConn } from "../transport/websocket.ts";

const rawSwitchResponse = new TextEncoder().encode(
  `HTTP/1.1 101 Switching Protocols\r\nUpgrade: ${rawUpgradeToken}\r\nConnection: Upgrade\r\n\r\n`,
);

/** Default close of a public connection with no bytes moving either way. */
export const defaultPublicIdleTimeoutMs = 300_000;
/** Default time a keep-alive request head may take once its first byte arrived. */
export const defaultHeadTimeoutMs = 30_000;
/** Bytes per read when copying responses (downloads dominate bulk traffic). */
const responseBufferBytes = 256 * 1024;

/** Options of {@linkcode handlePublicConn}. */
export interface HttpFrontOptions {
  /** The port this listener is reached on: a Host header naming it counts as "no port". */
  publicPort?: number;
  /** Value of X-Forwarded-Proto. @default "http" */
  proto?: "http" | "https";
  /** Keep incoming X-Forwarded-* (a trusted proxy in front) and append to them. @default false */
  trustForwarded?: boolean;
  /** Close a public connection idle this long. @default 300000 */
  idleTimeoutMs?: number;
  /**
   * Once the first byte of a keep-alive connection's next request head has arrived, the
   * whole head must follow within this long, else the connection is closed (a slowloris
   * after the first request, which `serve()`'s handshake timeout covers); 0 = off.
   * @default 30000
   */
  headTimeoutMs?: number;
  /** Where events are logged. @default silent */
  log?: Logger;
}

/** Who is on the other end of a public connection. */
export interface PeerInfo {
  /** Remote IP (no port). */
  ip: string;
  /** `ip:port`, for logs. */
  remote: string;
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** The short HTML page of an error the tunnel answers itself. */
export function errorPage(status: number, host: string): string {
  const h = escapeHtml(host || "(none)");
  const text: Record<number, string> = {
    400: "The request is malformed.",
    404: `No tunnel is registered for host <b>${h}</b>.`,
    502: `The tunnel client for <b>${h}</b> is not connected or cannot reach its local service.`,
    504: `The tunnel client for <b>${h}</b> did not answer in time.`,
  };
  return `<!doctype html><title>${status}</title><h1>${status}</h1><p>${
    text[status] ?? "Error."
  }</p>\n`;
}

/** The header list forwarded to the client: X-Forwarded-* added, Host kept. */
export function forwardHeaders(
  head: RequestHead,
  peer: PeerInfo,
  proto: string,
  trust: boolean,
): [string, string][] {
  const out: [string, string][] = [];
  let xff: string | undefined;
  let xfp: string | undefined;
  let xfh: string | undefined;
  let host = "";
  for (const [k, v] of head.headers) {
    if (fieldNameIs(k, "x-forwarded-for")) xff = xff ? `${xff}, ${v}` : v;
    else if (fieldNameIs(k, "x-forwarded-proto")) xfp ??= v;
    else if (fieldNameIs(k, "x-forwarded-host")) xfh ??= v;
    else {
      if (fieldNameIs(k, "host")) host = v;
      out.push([k, v]);
    }
  }
  out.push(["X-Forwarded-For", trust && xff ? `${xff}, ${peer.ip}` : peer.ip]);
  out.push(["X-Forwarded-Proto", trust && xfp ? xfp : proto]);
  out.push(["X-Forwarded-Host", trust && xfh ? xfh : host]);
  return out;
}

/** The ControlMsg localPort for a Host header: its port, unless it is our own public port. */
export function localPortOf(hostHeader: string, publicPort?: number): string {
  const p = hostPort(hostHeader);
  return p !== "" && publicPort !== undefined && Number(p) === publicPort ? "" : p;
}

/** Bytes bigger than this skip the coalescing buffer (after flushing it). */
const coalesceMaxCopyBytes = 16 * 1024;
/** Size of the coalescing buffer. */
const coalesceBufferBytes = 64 * 1024;

/**
 * Gathers small writes for the current tunnel stream; `flush()` sends them as one write.
 * Large writes go straight through (after what is gathered), so order is kept.
 */
class WriteCoalescer {
  target: Duplex | undefined;
  #buf = new Uint8Array(coalesceBufferBytes);
  #len = 0;

  async add(p: Uint8Array): Promise<void> {
    if (!this.target) throw new Deno.errors.BrokenPipe("no tunnel stream");
    if (p.length > coalesceMaxCopyBytes) {
      await this.flush();
      await writeAll(this.target, p);
      return;
    }
    if (this.#len + p.length > this.#buf.length) await this.flush();
    this.#buf.set(p, this.#len);
    this.#len += p.length;
  }

  async flush(): Promise<void> {
    if (this.#len === 0 || !this.target) return;
    const n = this.#len;
    this.#len = 0;
    // writeAll resolves once the mux took the bytes, so the buffer is free again after it.
    await writeAll(this.target, this.#buf.subarray(0, n));
  }
}

interface Current {
  host: string;
  ts: TunnelStream;
  out: Duplex;
  pump: Promise<void>;
  /** Set when we end the stream ourselves to switch hosts: the public side stays open. */
  switching: boolean;
  /** Set by the pump when the public connection must end (error answered, origin closed). */
  closePublic: boolean;
  /** A response byte of this stream went out to the public client. */
  responded: boolean;
  /** We answer the public client ourselves (a bad request body): the pump stays quiet. */
  abandoned: boolean;
}

/**
 * Serve one public connection (HTTP/1.x) of the standalone front. Never throws for
 * protocol errors: they are answered with 400/404/502/504 and a close.
 */
export async function handlePublicConn(
  server: TunnelServer,
  conn: Duplex,
  peer: PeerInfo,
  opts: HttpFrontOptions = {},
  ctx?: Pick<ConnContext, "handshakeDone" | "signal">,
): Promise<void> {
  const log = opts.log ?? silentLogger;
  // Request bytes bound for the tunnel stream are gathered (chunk-size lines, small chunks,
  // pipelined heads) and flushed as one write just before a read that may block: fewer,
  // larger mux frames without holding back anything the app is waiting for.
  const out = new WriteCoalescer();
  const pub: Duplex = {
    read: async (p) => {
      await out.flush();
      return await conn.read(p);
    },
    write: (p) => conn.write(p),
    closeWrite: () => conn.closeWrite(),
    close: () => conn.close(),
  };
  const reader = new BufferedReader(pub);
  let current: Current | undefined;
  let lastActivity = Date.now();
  let first = true;
  const idleMs = opts.idleTimeoutMs ?? defaultPublicIdleTimeoutMs;
  const headTimeoutMs = opts.headTimeoutMs ?? defaultHeadTimeoutMs;
  const idle = setInterval(() => {
    if (Date.now() - lastActivity > idleMs) {
      log.debug("public connection idle, closing", { remote: peer.remote });
      closeQuietly(conn);
      if (current) current.ts.release();
    }
  }, Math.min(idleMs, 5_000));

  const answer = async (status: number, host: string, outcome = String(status)) => {
    server.countRequest(host, outcome);
    await writeAll(
      conn,
      simpleResponse(status, errorPage(status, host), { contentType: "text/html; charset=utf-8" }),
    ).catch(() => {
      // The public client left: nothing to tell it.
    });
  };

  /** Copy the response bytes of `cur` to the public side. */
  const pumpResponses = async (cur: Current): Promise<void> => {
    try {
      await cur.ts.reply(server.responseTimeoutMs);
    } catch (err) {
      if (cur.abandoned) return;
      const e = err as TunnelError;
      await answer(e.reason === "timeout" ? 504 : 502, cur.host);
      log.debug("tunnel stream failed", { host: cur.host, reason: e.reason, error: e.message });
      cur.closePublic = true;
      closeQuietly(conn);
      return;
    }
    server.countRequest(cur.host, "proxied");
    const src = cur.ts.body();
    cur.out = cur.ts.stream;
    // 504 when no response byte came for responseTimeoutMs after the last request byte (a
    // long upload keeps re-arming it, like nginx's proxy_read_timeout).
    let firstByteTimer: ReturnType<typeof setTimeout> | undefined;
    const arm = (ms: number) => {
      firstByteTimer = setTimeout(() => {
        if (cur.responded || cur.abandoned) return;
        const quietMs = Date.now() - lastActivity;
        if (quietMs < server.responseTimeoutMs) return arm(server.responseTimeoutMs - quietMs);
        // The app behind the client never answered: 504, and this connection ends.
        cur.closePublic = true;
        void answer(504, cur.host).finally(() => closeQuietly(conn));
        cur.ts.stream.reset();
      }, ms);
    };
    arm(server.responseTimeoutMs);
    const rbuf = new Uint8Array(responseBufferBytes);
    try {
      while (true) {
        const n = await src.read(rbuf);
        if (n === null) break;
        cur.responded = true;
        lastActivity = Date.now();
        await writeAll(conn, rbuf.subarray(0, n));
      }
      if (!cur.switching) {
        // The app closed its connection: so does the public one (after what was sent).
        cur.closePublic = true;
        await conn.closeWrite().catch(() => {
          // Already closed.
        });
      }
    } catch (err) {
      if (!cur.switching && !cur.abandoned) {
        cur.closePublic = true;
        closeQuietly(conn);
      }
      log.debug("response copy ended", { host: cur.host, error: errorMessage(err) });
    } finally {
      clearTimeout(firstByteTimer);
    }
  };

  const endCurrent = async () => {
    if (!current) return;
    const cur = current;
    current = undefined;
    cur.switching = true;
    await out.flush().catch(() => {
      // Stream already gone: the pump ends on its own.
    });
    out.target = undefined;
    await cur.ts.stream.closeWrite().catch(() => {
      // Stream already gone: the pump ends on its own.
    });
    await cur.pump;
    cur.ts.release();
  };

  try {
    while (true) {
      let head: RequestHead | null;
      try {
        // The first head is under serve()'s handshake timer; later ones wait without a
        // deadline for their first byte (the idle timer's business), then get headTimeoutMs.
        head = await readRequestHeadWithin(reader, first ? 0 : headTimeoutMs, () => {
          log.debug("request head too slow, closing", { remote: peer.remote });
          closeQuietly(conn);
        });
      } catch (err) {
        const status = err instanceof HttpError ? statusForHttpError(err) : undefined;
        if (status !== undefined) {
          await endCurrent();
          await answer(status, "");
          return;
        }
        break; // closed mid-head or reset: nothing to answer
      }
      if (head === null) break;
      lastActivity = Date.now();
      if (first) {
        first = false;
        ctx?.handshakeDone();
        if (head.target === controlPath || head.target.startsWith(controlPath + "?")) {
          // A client session: the mux heartbeat judges its liveness, not the public idle
          // timer (nothing touches lastActivity any more: it would cut every session
          // idleTimeoutMs after it connected).
          clearInterval(idle);
          await handleControl(server, conn, reader, head, peer, log);
          return;
        }
      }
      const hostHeader = getHeader(head.headers, "host");
      const vhost = hostHeader ? normalizeHost(hostHeader) : "";
      let framing;
      try {
        framing = requestBodyFraming(head);
        if (!vhost) throw new HttpError("missing or bad Host header");
        if (head.method === "CONNECT") throw new HttpError("CONNECT is not served here");
      } catch (err) {
        await endCurrent();
        await answer(400, vhost);
        log.debug("bad request", { remote: peer.remote, error: errorMessage(err) });
        return;
      }
      const upgrade = getHeader(head.headers, "upgrade") !== undefined &&
        headerHasToken(head.headers, "connection", "upgrade");
      const headBytes = serializeRequestHead({
        ...head,
        headers: forwardHeaders(head, peer, opts.proto ?? "http", opts.trustForwarded ?? false),
      });
      if (current && current.host === vhost && !current.closePublic) {
        await out.add(headBytes);
        server.countRequest(vhost, "proxied");
      } else {
        await endCurrent();
        const route = await server.route(vhost);
        if (!route.ok) {
          await answer(route.status, route.host);
          return;
        }
        let ts: TunnelStream;
        try {
          ts = await server.openStream(
            route.client,
            route.host,
            "http",
            localPortOf(hostHeader!, opts.publicPort),
            headBytes,
          );
        } catch (err) {
          await answer(502, route.host);
          log.debug("cannot open tunnel stream", { host: route.host, error: errorMessage(err) });
          return;
        }
        const cur: Current = {
          host: route.host,
          ts,
          out: ts.out,
          pump: Promise.resolve(),
          switching: false,
          closePublic: false,
          responded: false,
          abandoned: false,
        };
        cur.pump = pumpResponses(cur);
        current = cur;
        out.target = ts.out;
      }
      const cur = current!;
      const sink = async (p: Uint8Array) => {
        lastActivity = Date.now();
        await out.add(p);
      };
      if (upgrade) {
        // After an Upgrade (WebSocket …) the connection is opaque bytes both ways.
        await copyBody(reader, pub, { kind: "close" }, sink).catch((err) => {
          log.debug("upgraded copy ended", { error: errorMessage(err) });
        });
        await out.flush().catch(() => {
          // Stream gone.
        });
        await cur.ts.stream.closeWrite().catch(() => {
          // Stream gone.
        });
        await cur.pump;
        return;
      }
      try {
        await copyBody(reader, pub, framing, sink);
      } catch (err) {
        if (cur.closePublic) break;
        log.debug("request body copy failed", { host: cur.host, error: errorMessage(err) });
        const badBody = err instanceof HttpError && err.reason !== "eof";
        if (badBody && !cur.responded) {
          // Malformed body framing before anything was answered on this stream: the client
          // gets a 400 (the app's half-received request is reset), not a silent close.
          cur.abandoned = true;
          cur.ts.stream.reset();
          await cur.pump;
          if (!cur.responded) await answer(400, cur.host);
          break;
        }
        cur.ts.stream.reset();
        break;
      }
      if (cur.closePublic) break;
    }
    // The public side finished sending: let the responses drain.
    if (current) {
      const cur = current;
      await out.flush().catch(() => {
        // Stream gone: the pump has ended or will.
      });
      await cur.ts.stream.closeWrite().catch(() => {
        // Stream gone: the pump has ended or will.
      });
      await cur.pump;
    }
  } catch (err) {
    log.debug("public connection failed", { remote: peer.remote, error: errorMessage(err) });
  } finally {
    clearInterval(idle);
    if (current) current.ts.release();
  }
}

async function handleControl(
  server: TunnelServer,
  conn: Duplex,
  reader: BufferedReader,
  head: RequestHead,
  peer: PeerInfo,
  log: Logger,
): Promise<void> {
  const hdr = (n: string) => getHeader(head.headers, n);
  const raw = (hdr("upgrade") ?? "").toLowerCase() === rawUpgradeToken;
  const why = raw
    ? (head.method === "GET" && headerHasToken(head.headers, "connection", "upgrade")
      ? null
      : "bad raw upgrade")
    : checkUpgradeRequest(head.method, hdr);
  if (why) {
    await writeAll(conn, simpleResponse(400, `${why}\n`));
    return;
  }
  const auth = hdr("authorization");
  const identifier = hdr(identifierHeader) ??
    (auth?.toLowerCase().startsWith("bearer ") ? auth.slice(7).trim() : undefined);
  const result = await server.authenticate(identifier, peer.remote);
  if (result !== "ok") {
    log.warn("client refused", { remote: peer.remote, reason: result });
    const [status, text] = result === "unknown"
      ? [401, "unknown identifier\n"]
      : [409, "a client with this identifier is already connected\n"];
    await writeAll(conn, simpleResponse(status, text)).catch(() => {
      // Client left.
    });
    return;
  }
  if (raw) {
    // The mux session runs straight on the TCP connection: no WebSocket framing cost.
    await writeAll(conn, rawSwitchResponse);
    await server.attach(
      withPrefix(conn, reader.takeBuffered()),
      identifier!,
      peer.remote,
      peerCommonName(conn as Deno.Conn),
    );
    return;
  }
  await writeAll(conn, switchingProtocolsResponse(hdr("sec-websocket-key")!));
  const ws = new WsConn(conn, { role: "server", prefix: reader.takeBuffered() });
  await server.attach(ws, identifier!, peer.remote, peerCommonName(conn as Deno.Conn));
}
