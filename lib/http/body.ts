/**
 * HTTP/1.1 message bodies: how one is delimited (RFC 9112 §6) and streaming copies of it --
 * never buffered whole, correct on any split, the chunked framing kept or decoded.
 * @module
 */

import { type BufferedReader, concatBytes, type Duplex, relayPool } from "../net/mod.ts";
import {
  decodeLatin1,
  encodeLatin1,
  fieldNameIs,
  type HeaderFields,
  headerTokens,
  HttpError,
  parseFieldLines,
  type RequestHead,
  type ResponseHead,
  trimOws,
} from "./head.ts";
import { ChunkedScanner, maxChunkLineBytes, maxTrailerBytes } from "./chunked.ts";

/** Starting size of a body copy buffer from the relay pool; it grows while reads fill it. */
const bodyCopyBytes = 64 * 1024;

/** How a message body is delimited. */
export type BodyFraming =
  /** No body at all. */
  | { kind: "none" }
  /** Exactly `length` bytes (Content-Length). */
  | { kind: "length"; length: number }
  /** Transfer-Encoding: chunked, up to the zero chunk and trailers. */
  | { kind: "chunked" }
  /** Until the sender closes (responses only). */
  | { kind: "close" };

/**
 * Where body bytes go; must not keep `p` after it resolves (the buffer is reused). `room`: the
 * bytes in front of `p` in its buffer that the sink may overwrite until it resolves (a copy
 * given headroom reads into its buffer past that many bytes, so a framing writer can put its
 * header there and send header and payload in one write); 0 when there are none.
 */
export type Sink = (p: Uint8Array, room?: number) => Promise<void>;

/** Names of fields a relay drops from a chunked body's trailers (any case). */
export interface FieldFilter {
  has(name: string): boolean;
}

const CR = 0x0d;
const LF = 0x0a;

/** Content-Length, validated: digits only, repeated values must agree. */
function contentLength(headers: HeaderFields): number | undefined {
  let len: number | undefined;
  for (const [k, v] of headers) {
    if (!fieldNameIs(k, "content-length")) continue;
    for (const part of v.split(",")) {
      const t = trimOws(part);
      if (!/^\d{1,15}$/.test(t)) throw new HttpError(`bad Content-Length ${JSON.stringify(v)}`);
      const n = Number(t);
      if (len !== undefined && len !== n) throw new HttpError("conflicting Content-Length values");
      len = n;
    }
  }
  return len;
}

/**
 * How a request's body is framed. Rejects (HttpError "bad-request") what a proxy must not
 * guess at: Content-Length together with Transfer-Encoding (request smuggling), a final
 * transfer coding other than chunked, Transfer-Encoding in an HTTP/1.0 request, malformed
 * or conflicting lengths.
 */
export function requestBodyFraming(head: RequestHead): BodyFraming {
  const te = headerTokens(head.headers, "transfer-encoding");
  const len = contentLength(head.headers);
  if (te.length > 0) {
    if (len !== undefined) throw new HttpError("both Content-Length and Transfer-Encoding");
    // RFC 9112 §6.1: HTTP/1.0 has no transfer codings; a receiver must treat the framing
    // as faulty. Passed on as is, the next hop could read the body another way.
    if (head.version === "HTTP/1.0") throw new HttpError("Transfer-Encoding in HTTP/1.0");
    if (te[te.length - 1] !== "chunked") throw new HttpError("request body is not chunked");
    return { kind: "chunked" };
  }
  return len ? { kind: "length", length: len } : { kind: "none" };
}

/**
 * How a response's body is framed, given the method of the request it answers: none for
 * HEAD, 1xx, 204 and 304 (and a 2xx to CONNECT); chunked when that is the final coding;
 * Content-Length; otherwise until the server closes.
 */
export function responseBodyFraming(
  head: Pick<ResponseHead, "status" | "headers">,
  requestMethod: string,
): BodyFraming {
  const s = head.status;
  if (requestMethod === "HEAD" || s < 200 || s === 204 || s === 304) return { kind: "none" };
  if (requestMethod === "CONNECT" && s < 300) return { kind: "none" };
  const te = headerTokens(head.headers, "transfer-encoding");
  if (te.length > 0) {
    return te[te.length - 1] === "chunked" ? { kind: "chunked" } : { kind: "close" };
  }
  const len = contentLength(head.headers);
  if (len !== undefined) return len > 0 ? { kind: "length", length: len } : { kind: "none" };
  return { kind: "close" };
}

/**
 * Whether a connection may carry another request after the response `head` (RFC 9112 §9.3):
 * HTTP/1.1 without a `close` connection option, or HTTP/1.0 with `keep-alive` and without
 * `close`. A proxy that keeps its upstream connections asks this before it reuses one.
 */
export function responsePersistent(head: Pick<ResponseHead, "version" | "headers">): boolean {
  const options = headerTokens(head.headers, "connection");
  if (options.includes("close")) return false;
  return head.version === "HTTP/1.1" || options.includes("keep-alive");
}

/**
 * A copy buffer: the caller's fixed one, or one borrowed from the relay pool that grows
 * while reads fill it and shrinks when they stop (as `relay` does: fewer, larger reads are
 * what make a Deno copy loop fast). A borrowed one can keep `room` bytes free in front of
 * where reads go (`buf` starts after them; see {@linkcode Sink}).
 */
class CopyBuffer {
  #fixed: boolean;
  /** The pooled buffer (or the given one); `buf` is its part reads go into. */
  #whole: Uint8Array;
  buf: Uint8Array;
  /** Free bytes in front of `buf` (0 with a given buffer). */
  readonly room: number;
  constructor(given: Uint8Array | undefined, room: number) {
    this.#fixed = given !== undefined;
    this.room = given ? 0 : room;
    this.#whole = given ?? relayPool.acquire(bodyCopyBytes);
    this.buf = this.room > 0 ? this.#whole.subarray(this.room) : this.#whole;
  }
  /** Adapt the size after a read of `n` bytes into the whole of `buf`. */
  adapt(n: number): void {
    if (this.#fixed) return;
    const room = this.room;
    const cur = this.#whole.length;
    const want = n === cur - room ? cur * 4 : n < cur / 4 ? n * 2 : cur;
    if (relayPool.classFor(want) === cur) return;
    const next = relayPool.acquire(want);
    if (next.length !== cur) {
      relayPool.release(this.#whole);
      this.#whole = next;
      this.buf = room > 0 ? next.subarray(room) : next;
    } else {
      relayPool.release(next);
    }
  }
  release(): void {
    if (!this.#fixed) relayPool.release(this.#whole);
  }
}

/** Run `fn` with a copy buffer (`room`: see CopyBuffer), returned to the pool afterwards. */
async function withBuffer<T>(
  given: Uint8Array | undefined,
  fn: (b: CopyBuffer) => Promise<T>,
  room = 0,
): Promise<T> {
  const b = new CopyBuffer(given, room);
  try {
    return await fn(b);
  } finally {
    b.release();
  }
}

/**
 * Copy exactly `n` bytes to `sink`: first what `r` has buffered, then straight from `src`
 * (the reader's source) into `buf`. Rejects with HttpError "eof" if `src` ends first.
 * `room`: headroom for the sink in front of what is read into a pooled buffer (see
 * {@linkcode Sink}).
 */
export async function copyExact(
  r: BufferedReader,
  src: Pick<Duplex, "read">,
  n: number,
  sink: Sink,
  buf?: Uint8Array,
  room = 0,
): Promise<void> {
  let left = n;
  if (r.buffered > 0 && left > 0) {
    const piece = await r.readExact(Math.min(r.buffered, left));
    await sink(piece, 0);
    left -= piece.length;
  }
  if (left === 0) return;
  await withBuffer(buf, async (cb) => {
    while (left > 0) {
      const b = cb.buf;
      const whole = b.length <= left;
      const got = await src.read(whole ? b : b.subarray(0, left));
      if (got === null) throw new HttpError("connection closed inside the body", "eof");
      await sink(b.subarray(0, got), cb.room);
      left -= got;
      if (whole) cb.adapt(got);
    }
  }, room);
}

/** Copy everything until `src` ends (a close-delimited body); `room` as in copyExact. */
export async function copyUntilEof(
  r: BufferedReader,
  src: Pick<Duplex, "read">,
  sink: Sink,
  buf?: Uint8Array,
  room = 0,
): Promise<void> {
  if (r.buffered > 0) await sink(r.takeBuffered(), 0);
  await withBuffer(buf, async (cb) => {
    while (true) {
      const got = await src.read(cb.buf);
      if (got === null) return;
      await sink(cb.buf.subarray(0, got), cb.room);
      cb.adapt(got);
    }
  }, room);
}

async function readBodyLine(r: BufferedReader, maxBytes: number): Promise<Uint8Array> {
  try {
    return await r.readLine(maxBytes);
  } catch (err) {
    if (err instanceof HttpError) throw err;
    if (err instanceof Error && "reason" in err && err.reason === "eof") {
      throw new HttpError("connection closed inside a chunked body", "eof");
    }
    throw new HttpError("chunk line too long");
  }
}

/**
 * Copy a chunked body up to and including its trailers. With `raw` the framing is copied
 * too, byte for byte (what a proxy relays: each read goes to `sink` whole, checked by
 * {@linkcode ChunkedScanner}, so lines must end in CRLF); without, only the data reaches
 * `sink` (a decoder, which also takes bare LF line ends). Bytes read past the body's end go
 * back into `r`. Rejects with HttpError on a bad size line, a missing CRLF after chunk
 * data, oversize trailers, or EOF ("eof").
 */
export async function copyChunked(
  r: BufferedReader,
  src: Pick<Duplex, "read">,
  sink: Sink,
  raw: boolean,
  buf?: Uint8Array,
): Promise<void> {
  if (raw) return await relayChunked(r, src, sink, buf);
  await withBuffer(buf, async (cb) => {
    while (true) {
      const line = await readBodyLine(r, maxChunkLineBytes);
      const sizeText = decodeLatin1(line).split(";")[0].replace(/[ \t]+$/, "");
      if (!/^[0-9a-fA-F]{1,12}$/.test(sizeText)) {
        throw new HttpError(`bad chunk size line ${JSON.stringify(sizeText.slice(0, 20))}`);
      }
      const size = parseInt(sizeText, 16);
      if (size === 0) break;
      await copyExact(r, src, size, sink, cb.buf);
      const end = await readBodyLine(r, 1); // 1: room for the CR of the CRLF
      if (end.length !== 0) throw new HttpError("chunk data longer than its size");
    }
    // Trailer fields, then the empty line that ends the message.
    let trailerBytes = 0;
    while (true) {
      const t = await readBodyLine(r, maxTrailerBytes);
      trailerBytes += t.length + 2;
      if (trailerBytes > maxTrailerBytes) throw new HttpError("trailers too large");
      if (t.length === 0) return;
    }
  });
}

/**
 * The raw copy: every read forwarded whole once the scanner has passed it (`room`: headroom
 * for the sink in front of each read, see {@linkcode Sink}).
 */
async function relayChunked(
  r: BufferedReader,
  src: Pick<Duplex, "read">,
  sink: Sink,
  buf?: Uint8Array,
  dropTrailers?: FieldFilter,
  room = 0,
): Promise<void> {
  const relay = new ChunkedRelay(sink, dropTrailers);
  const ahead = r.takeBuffered();
  const used = await relay.feed(ahead, 0);
  if (relay.done) return r.unread(ahead.subarray(used));
  await withBuffer(buf, async (cb) => {
    while (true) {
      const b = cb.buf;
      const got = await src.read(b);
      if (got === null) throw new HttpError("connection closed inside a chunked body", "eof");
      // The sink writes only in front of and inside the body's part: the rest stays intact.
      const n = await relay.feed(b.subarray(0, got), cb.room);
      if (relay.done) return r.unread(b.subarray(n, got));
      cb.adapt(got);
    }
  }, room);
}

/**
 * Chunked bytes to `sink` as they came, checked by a {@linkcode ChunkedScanner}; with
 * `dropTrailers`, a trailer section with fields is held (at most `maxTrailerBytes`) and goes
 * out without the fields it names. A body without trailer fields whose end arrives in one
 * read is relayed in one piece, as without a filter.
 */
class ChunkedRelay {
  readonly #scanner = new ChunkedScanner();
  readonly #sink: Sink;
  readonly #drop: FieldFilter | undefined;
  /** The trailer section read so far, once the last chunk went out (filtering only). */
  #trailers: Uint8Array[] | undefined;

  constructor(sink: Sink, drop: FieldFilter | undefined) {
    this.#sink = sink;
    this.#drop = drop;
  }

  /** Whether the body (with its trailers) has ended. */
  get done(): boolean {
    return this.#scanner.done;
  }

  /**
   * Take the next piece read (`room`: free bytes in front of it, for the sink); resolves how
   * many of its bytes belong to the body.
   */
  async feed(p: Uint8Array, room: number): Promise<number> {
    const s = this.#scanner;
    if (this.#trailers) return await this.#collect(p);
    let n = this.#drop ? s.scanToTrailers(p) : s.scan(p);
    if (this.#drop && s.atTrailers) {
      // The empty line right behind the last chunk: no fields to filter.
      if (p[n] === CR && p[n + 1] === LF) n += s.scan(p.subarray(n));
      else this.#trailers = [];
    }
    if (n > 0) await this.#sink(p.subarray(0, n), room);
    return this.#trailers ? n + await this.#collect(p.subarray(n)) : n;
  }

  async #collect(p: Uint8Array): Promise<number> {
    const n = this.#scanner.scan(p);
    this.#trailers!.push(p.slice(0, n));
    if (this.done) {
      await this.#sink(withoutFields(concatBytes(...this.#trailers!), this.#drop!), 0);
    }
    return n;
  }
}

/**
 * A trailer section (field lines, then the empty line; every line ends in CRLF, as the
 * scanner checked) without the fields `drop` names; as it came when it names none. Its lines
 * are checked like a head's fields (HttpError "bad-request").
 */
function withoutFields(section: Uint8Array, drop: FieldFilter): Uint8Array {
  const fields = parseFieldLines(decodeLatin1(section).split("\r\n"));
  const kept = fields.filter(([k]) => !drop.has(k));
  if (kept.length === fields.length) return section;
  return encodeLatin1(kept.map(([k, v]) => `${k}: ${v}\r\n`).join("") + "\r\n");
}

/**
 * Copy a body of the given framing to `sink`, chunked framing kept (what a proxy relays).
 * `dropTrailers`: fields a chunked body's trailers lose on the way (RFC 9110 §7.6.1: the
 * hop-by-hop ones and those the head's `Connection` names). `room`: bytes kept free in front
 * of each read into a pooled buffer, which the sink may overwrite (see {@linkcode Sink}: a
 * mux stream's frame header, so header and payload leave in one write).
 */
export async function copyBody(
  r: BufferedReader,
  src: Pick<Duplex, "read">,
  framing: BodyFraming,
  sink: Sink,
  buf?: Uint8Array,
  dropTrailers?: FieldFilter,
  room = 0,
): Promise<void> {
  switch (framing.kind) {
    case "none":
      return;
    case "length":
      return await copyExact(r, src, framing.length, sink, buf, room);
    case "chunked":
      return await relayChunked(r, src, sink, buf, dropTrailers, room);
    case "close":
      return await copyUntilEof(r, src, sink, buf, room);
  }
}
