/**
 * A passive HTTP/1 observer of one relayed connection: it is shown every piece of bytes the
 * relay moves (`up`: toward the local app, `down`: back), finds the request and response
 * heads and the bodies' framing, and records each exchange in an {@linkcode ExchangeRing},
 * copying at most the body cap per body. It never changes, holds back or waits on the bytes:
 * each call is synchronous and copies only what it keeps. What it cannot follow (a head over
 * the limit, framing it does not understand, an upgraded connection) it stops observing and
 * lets pass.
 * @module
 */

import {
  type BodyFraming,
  ChunkedScanner,
  decodeLatin1,
  defaultMaxHeadBytes,
  type HeaderFields,
  requestBodyFraming,
  responseBodyFraming,
} from "../http/mod.ts";
import { type CapturedBody, emptyBody, type Exchange, type ExchangeRing } from "./record.ts";

const CRLFCRLF = [0x0d, 0x0a, 0x0d, 0x0a];
/** A head longer than this is not followed (the bytes still pass). */
const maxHeadBytes = defaultMaxHeadBytes;

/** Index just past the first CRLFCRLF in `b` at or after `from`, or -1. */
function headEnd(b: Uint8Array, from: number): number {
  for (let i = Math.max(0, from); i + 3 < b.length; i++) {
    if (b[i] === 0x0d && b[i + 1] === 0x0a && b[i + 2] === 0x0d && b[i + 3] === 0x0a) {
      return i + CRLFCRLF.length;
    }
  }
  return -1;
}

/** A head's start line and fields, leniently (the relay, not us, decides what is valid). */
function parseHead(raw: Uint8Array): { start: string[]; headers: HeaderFields } | undefined {
  const lines = decodeLatin1(raw).split("\r\n");
  const start = lines[0].split(" ");
  if (start.length < 2) return undefined;
  const headers: HeaderFields = [];
  for (const l of lines.slice(1)) {
    if (l === "") continue;
    const c = l.indexOf(":");
    if (c <= 0) return undefined;
    headers.push([l.slice(0, c), l.slice(c + 1).trim()]);
  }
  return { start, headers };
}

/** Add `p` to `body`, keeping at most `cap` bytes. */
function capture(body: CapturedBody, p: Uint8Array, cap: number): void {
  body.bytes += p.length;
  const room = cap - body.kept.length;
  if (room <= 0) {
    if (p.length > 0) body.truncated = true;
    return;
  }
  const take = Math.min(room, p.length);
  const kept = new Uint8Array(body.kept.length + take);
  kept.set(body.kept);
  kept.set(p.subarray(0, take), body.kept.length);
  body.kept = kept;
  if (take < p.length) body.truncated = true;
}

/** One direction's parser: a head, then a body by its framing, then the next head. */
class MessageScanner {
  /** The head being gathered: `#head[0, #headLen)`. */
  #head: Uint8Array = new Uint8Array(0);
  #headLen = 0;
  #framing: BodyFraming | undefined;
  #left = 0;
  #chunked: ChunkedScanner | undefined;
  /** Stopped observing this direction (bytes still pass). */
  opaque = false;

  constructor(
    readonly onHead: (raw: Uint8Array) => BodyFraming | undefined,
    readonly onBody: (p: Uint8Array) => void,
    readonly onEnd: () => void,
  ) {}

  /** Whether the body in progress ends with the connection. */
  get untilClose(): boolean {
    return this.#framing?.kind === "close";
  }

  feed(p: Uint8Array): void {
    let i = 0;
    while (i < p.length && !this.opaque) {
      if (this.#framing === undefined) {
        const before = this.#headLen;
        const take = Math.min(p.length - i, maxHeadBytes + 4 - before);
        this.#appendHead(p.subarray(i, i + take));
        const head = this.#head.subarray(0, this.#headLen);
        const end = headEnd(head, before - 3);
        if (end < 0) {
          i += take;
          if (head.length > maxHeadBytes) this.opaque = true;
          continue;
        }
        i += end - before;
        this.#headLen = 0;
        const framing = this.onHead(head.subarray(0, end));
        if (this.#head.length > 4096) this.#head = new Uint8Array(0); // a big head's buffer goes
        if (!framing) {
          this.opaque = true;
          return;
        }
        this.#begin(framing);
        continue;
      }
      i += this.#body(p.subarray(i));
    }
  }

  /** Add `p` to the head being gathered; the buffer doubles, so a head read byte by byte costs linear time. */
  #appendHead(p: Uint8Array): void {
    if (this.#headLen + p.length > this.#head.length) {
      const grown = new Uint8Array(Math.max(256, 2 * (this.#headLen + p.length)));
      grown.set(this.#head.subarray(0, this.#headLen));
      this.#head = grown;
    }
    this.#head.set(p, this.#headLen);
    this.#headLen += p.length;
  }

  #begin(framing: BodyFraming): void {
    this.#framing = framing;
    if (framing.kind === "length") this.#left = framing.length;
    if (framing.kind === "chunked") this.#chunked = new ChunkedScanner();
    if (framing.kind === "none" || (framing.kind === "length" && framing.length === 0)) {
      this.#finish();
    }
  }

  /** Body bytes of `p`; returns how many belong to this message. */
  #body(p: Uint8Array): number {
    const f = this.#framing!;
    let n = p.length;
    if (f.kind === "length") n = Math.min(this.#left, p.length);
    if (f.kind === "chunked") {
      try {
        n = this.#chunked!.scan(p);
      } catch {
        // Framing the relay passes on as is but we cannot follow: stop observing.
        this.opaque = true;
        return p.length;
      }
    }
    this.onBody(p.subarray(0, n));
    if (f.kind === "length") this.#left -= n;
    if (
      (f.kind === "length" && this.#left === 0) || (f.kind === "chunked" && this.#chunked!.done)
    ) {
      this.#finish();
    }
    return n;
  }

  #finish(): void {
    this.#framing = undefined;
    this.#chunked = undefined;
    this.onEnd();
  }
}

/** Options of {@linkcode HttpTap}. */
export interface HttpTapOptions {
  /** Where exchanges are recorded. */
  ring: ExchangeRing;
  /** The local app's address (`host:port`), kept for replays. */
  dest: string;
  /** Bytes kept per body. */
  bodyBytes: number;
  /** Marks every exchange seen as a replay of this one. */
  replayOf?: number;
}

/**
 * Observe one connection between the tunnel and the local app: call `up()` with every piece
 * read from the tunnel, `down()` with every piece read from the app, `end()` when the relay
 * is over. Synchronous and non-throwing; never alters `p` or keeps it past the call.
 */
export class HttpTap {
  readonly #o: HttpTapOptions;
  /** Requests sent, waiting for their response (in order: HTTP/1 answers in order). */
  readonly #waiting: Exchange[] = [];
  /** The request whose body is passing up. */
  #sending: Exchange | undefined;
  /** The exchange whose response is passing down. */
  #answering: Exchange | undefined;
  readonly #up: MessageScanner;
  readonly #down: MessageScanner;
  /** The last request seen (a replay returns it). */
  lastRequest: Exchange | undefined;

  /** A tap recording into `opts.ring`. */
  constructor(opts: HttpTapOptions) {
    this.#o = opts;
    this.#up = new MessageScanner(
      (raw) => this.#request(raw),
      (p) => this.#sending && this.#capture(this.#sending.requestBody, p),
      () => this.#sending = undefined,
    );
    this.#down = new MessageScanner(
      (raw) => this.#response(raw),
      (p) => this.#answering && this.#capture(this.#answering.responseBody, p),
      () => this.#answered(),
    );
  }

  /** Bytes on their way to the local app. */
  up(p: Uint8Array): void {
    this.#up.feed(p);
  }

  /** Bytes on their way back from the local app. */
  down(p: Uint8Array): void {
    this.#down.feed(p);
  }

  /**
   * The relay ended: a response delimited by the close is complete, anything else still
   * waiting was cut short.
   */
  end(): void {
    if (this.#down.untilClose && !this.#down.opaque) this.#answered();
    for (const x of [...this.#waiting, ...(this.#answering ? [this.#answering] : [])]) {
      if (x.state !== "pending") continue;
      x.state = "aborted";
      x.durationMs = performance.now() - x.startedMs;
    }
    this.#waiting.length = 0;
    this.#answering = undefined;
    this.#o.ring.touch();
  }

  #capture(body: CapturedBody, p: Uint8Array): void {
    capture(body, p, this.#o.bodyBytes);
    this.#o.ring.touch();
  }

  #request(raw: Uint8Array): BodyFraming | undefined {
    const h = parseHead(raw);
    if (!h || !/^HTTP\/1\.[01]$/.test(h.start[2] ?? "")) return undefined;
    // Unanswered requests are held here beyond the ring: as many as it keeps, then no more.
    if (this.#waiting.length >= this.#o.ring.maxRequests) return undefined;
    const [method, path, version] = h.start as [string, string, "HTTP/1.1" | "HTTP/1.0"];
    let framing: BodyFraming;
    try {
      framing = requestBodyFraming({ method, target: path, version, headers: h.headers });
    } catch {
      return undefined; // The relay passes it on; we cannot tell where it ends.
    }
    const x = this.#o.ring.add({
      replayOf: this.#o.replayOf,
      dest: this.#o.dest,
      startedAt: Date.now(),
      startedMs: performance.now(),
      method,
      path,
      requestHeaders: h.headers,
      requestBody: emptyBody(),
      responseBody: emptyBody(),
      state: "pending",
    });
    this.#sending = x;
    this.lastRequest = x;
    this.#waiting.push(x);
    return framing;
  }

  #response(raw: Uint8Array): BodyFraming | undefined {
    const h = parseHead(raw);
    const status = Number(h?.start[1]);
    if (!h || !/^HTTP\/1\.[01]$/.test(h.start[0]) || !(status >= 100 && status <= 999)) {
      return undefined;
    }
    const x = this.#waiting[0];
    if (!x) return undefined; // An answer to nothing we saw: stop here.
    if (status >= 100 && status < 200 && status !== 101) return { kind: "none" }; // interim
    this.#waiting.shift();
    this.#answering = x;
    x.status = status;
    x.reason = h.start.slice(2).join(" ");
    x.responseHeaders = h.headers;
    if (status === 101) {
      this.#up.opaque = true; // Both ways carry another protocol now.
      this.#answered();
      return undefined; // Opaque bytes from here on.
    }
    try {
      return responseBodyFraming({ status, headers: h.headers }, x.method);
    } catch {
      return undefined;
    }
  }

  #answered(): void {
    const x = this.#answering;
    if (!x || x.status === undefined || x.status < 200 && x.status !== 101) return;
    x.state = "done";
    x.durationMs = performance.now() - x.startedMs;
    this.#answering = undefined;
    this.#o.ring.touch();
  }
}
