/**
 * The inspector's state and actions: a bounded ring of recent exchanges, a tap per relayed
 * connection (see capture.ts), their JSON views, and replaying a request against the local
 * app (the replay is recorded like any exchange, marked with the id it replays).
 * @module
 */

import { closeQuietly, dial, errorMessage, parseHostPort, writeAll } from "../net/mod.ts";
import {
  fieldNameIs,
  getHeader,
  type HeaderFields,
  headerTokens,
  serializeRequestHead,
} from "../http/mod.ts";
import { HttpTap } from "./capture.ts";
import {
  type CapturedBody,
  defaultInspectBodyBytes,
  defaultInspectMaxRequests,
  type Exchange,
  ExchangeRing,
} from "./record.ts";

/** A replay waits this long for the local app's whole answer. */
export const replayTimeoutMs = 20_000;

/** Options of {@linkcode Inspector}. */
export interface InspectorOptions {
  /** Exchanges kept. @default 100 */
  maxRequests?: number;
  /** Bytes kept of each body. @default 16 KiB */
  bodyBytes?: number;
}

/** Why a replay was not made. */
export type ReplayFailure = "unknown-request" | "body-truncated" | "dial-failed";

/** A replay that could not be made, and why. */
export class ReplayError extends Error {
  /** Error class name. */
  override name = "ReplayError";
  /** A failure of kind `reason`. */
  constructor(readonly reason: ReplayFailure, message: string) {
    super(message);
  }
}

/** One exchange in the list (no bodies). */
export interface ExchangeSummary {
  id: number;
  replayOf?: number;
  startedAt: string;
  method: string;
  path: string;
  host?: string;
  status?: number;
  durationMs?: number;
  state: Exchange["state"];
  requestBytes: number;
  responseBytes: number;
}

/** How a body is shown: text as text, binary and compressed bodies as base64 and marked. */
export interface BodyView {
  bytes: number;
  keptBytes: number;
  truncated: boolean;
  kind: "empty" | "text" | "binary" | "compressed";
  /** The content coding of a compressed body (`gzip`, `br` ...). */
  encoding?: string;
  text?: string;
  base64?: string;
}

/** One exchange in full. */
export interface ExchangeDetail extends ExchangeSummary {
  dest: string;
  reason?: string;
  requestHeaders: HeaderFields;
  responseHeaders?: HeaderFields;
  requestBody: BodyView;
  responseBody: BodyView;
}

/** Recent HTTP exchanges through the tunnel, bounded; taps, views and replay. */
export class Inspector {
  /** The exchanges kept. */
  readonly ring: ExchangeRing;
  /** Bytes kept of each body. */
  readonly bodyBytes: number;

  /** An inspector keeping `opts.maxRequests` exchanges of `opts.bodyBytes` per body. */
  constructor(opts: InspectorOptions = {}) {
    this.ring = new ExchangeRing(opts.maxRequests ?? defaultInspectMaxRequests);
    this.bodyBytes = opts.bodyBytes ?? defaultInspectBodyBytes;
    if (!(this.bodyBytes >= 0)) throw new RangeError("bodyBytes must not be negative");
  }

  /** An observer for one relayed connection to `dest` (lib/tunnel's `tap` option). */
  tap = (dest: string): HttpTap =>
    new HttpTap({ ring: this.ring, dest, bodyBytes: this.bodyBytes });

  /** Kept exchanges, newest first. */
  list(): ExchangeSummary[] {
    return this.ring.list().map(summary);
  }

  /** Exchange `id` in full, if still kept. */
  detail(id: number): ExchangeDetail | undefined {
    const x = this.ring.get(id);
    if (!x) return undefined;
    return {
      ...summary(x),
      dest: x.dest,
      reason: x.reason,
      requestHeaders: x.requestHeaders,
      responseHeaders: x.responseHeaders,
      requestBody: bodyView(x.requestBody, x.requestHeaders),
      responseBody: bodyView(x.responseBody, x.responseHeaders ?? []),
    };
  }

  /**
   * Send exchange `id`'s request again to the local app it went to (`Connection: close`),
   * recording it as a replay; resolves with the new exchange once answered (or cut short).
   * Only a request whose whole body was kept can be replayed.
   */
  async replay(id: number): Promise<ExchangeSummary> {
    const x = this.ring.get(id);
    if (!x) {
      throw new ReplayError(
        "unknown-request",
        `no request ${id} (kept: the last ${this.ring.maxRequests})`,
      );
    }
    if (x.requestBody.truncated) {
      throw new ReplayError(
        "body-truncated",
        `request ${id}'s body was ${x.requestBody.bytes} bytes, only ${this.bodyBytes} kept`,
      );
    }
    const head = serializeRequestHead({
      method: x.method,
      target: x.path,
      version: "HTTP/1.1",
      headers: [
        ...x.requestHeaders.filter(([k]) =>
          !fieldNameIs(k, "connection") && !fieldNameIs(k, "keep-alive")
        ),
        ["Connection", "close"],
      ],
    });
    const wire = new Uint8Array(head.length + x.requestBody.kept.length);
    wire.set(head);
    wire.set(x.requestBody.kept, head.length);
    const to = parseHostPort(x.dest);
    let conn: Deno.TcpConn;
    try {
      conn = await dial(to.host, to.port, { prefer: "ipv4" });
    } catch (err) {
      throw new ReplayError("dial-failed", `cannot reach ${x.dest}: ${errorMessage(err)}`);
    }
    const tap = new HttpTap({
      ring: this.ring,
      dest: x.dest,
      bodyBytes: this.bodyBytes,
      replayOf: id,
    });
    tap.up(wire);
    const timer = setTimeout(() => closeQuietly(conn), replayTimeoutMs);
    try {
      await writeAll(conn, wire);
      const buf = new Uint8Array(64 * 1024);
      let n;
      while ((n = await conn.read(buf)) !== null) tap.down(buf.subarray(0, n));
    } catch {
      // The app reset or the timer closed the connection: the exchange is recorded as cut
      // short (tap.end below), which is what the caller is shown.
    } finally {
      clearTimeout(timer);
      closeQuietly(conn);
      tap.end();
    }
    return summary(tap.lastRequest!);
  }
}

function summary(x: Exchange): ExchangeSummary {
  return {
    id: x.id,
    replayOf: x.replayOf,
    startedAt: new Date(x.startedAt).toISOString(),
    method: x.method,
    path: x.path,
    host: getHeader(x.requestHeaders, "host"),
    status: x.status,
    durationMs: x.durationMs === undefined ? undefined : Math.round(x.durationMs * 10) / 10,
    state: x.state,
    requestBytes: x.requestBody.bytes,
    responseBytes: x.responseBody.bytes,
  };
}

const textTypeRe =
  /^(text\/|application\/([\w.+-]*\+)?(json|xml|javascript|x-www-form-urlencoded|graphql|yaml)\b)/i;
const binaryTypeRe = /^(image|audio|video|font)\/|^application\/(octet-stream|pdf|zip|gzip|wasm)/i;
// deno-lint-ignore no-control-regex
const controlRe = /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]/;

/** A body for display: de-chunked, then text if it is text, else base64 marked as what it is. */
function bodyView(b: CapturedBody, headers: HeaderFields): BodyView {
  const chunked = headerTokens(headers, "transfer-encoding").includes("chunked");
  const data = chunked ? dechunk(b.kept) : b.kept;
  const view: BodyView = {
    bytes: b.bytes,
    keptBytes: b.kept.length,
    truncated: b.truncated,
    kind: "empty",
  };
  if (b.bytes === 0) return view;
  const coding = headerTokens(headers, "content-encoding").filter((c) => c !== "identity");
  if (coding.length > 0) {
    return { ...view, kind: "compressed", encoding: coding.join(", "), base64: base64(data) };
  }
  const type = getHeader(headers, "content-type") ?? "";
  if (!binaryTypeRe.test(type)) {
    try {
      const text = new TextDecoder("utf-8", { fatal: true }).decode(data, { stream: b.truncated });
      if (textTypeRe.test(type) || !controlRe.test(text)) return { ...view, kind: "text", text };
    } catch {
      // Not UTF-8: shown as binary below.
    }
  }
  return { ...view, kind: "binary", base64: base64(data) };
}

/** The data of a chunked body's first bytes (as far as they go; framing errors end it). */
export function dechunk(wire: Uint8Array): Uint8Array {
  const parts: Uint8Array[] = [];
  let i = 0;
  while (i < wire.length) {
    let eol = i;
    while (eol + 1 < wire.length && !(wire[eol] === 0x0d && wire[eol + 1] === 0x0a)) eol++;
    if (eol + 1 >= wire.length) break;
    const size = parseInt(new TextDecoder().decode(wire.subarray(i, eol)).split(";")[0], 16);
    if (!(size > 0)) break;
    const start = eol + 2;
    parts.push(wire.subarray(start, Math.min(start + size, wire.length)));
    i = start + size + 2;
  }
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

function base64(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < b.length; i += 8192) {
    s += String.fromCharCode(...b.subarray(i, i + 8192));
  }
  return btoa(s);
}
