/**
 * HTTP/1.x message heads: read a request or response head from a `BufferedReader` with
 * limits on size and header count (correct on any split of the input), and write one back.
 * Header fields keep their order and spelling; bytes are treated as latin-1 so any octet
 * round-trips unchanged.
 * @module
 */

import { type BufferedReader, ProtocolError } from "../net/mod.ts";
import { decodeLatin1, defaultMaxHeadBytes, defaultMaxHeaders } from "./head_bytes.ts";
import { scanRequestHead } from "./head_scan.ts";

export { decodeLatin1, defaultMaxHeadBytes, defaultMaxHeaders };

/**
 * The hop-by-hop fields of RFC 9110 §7.6.1 (with the body framing's Transfer-Encoding): what a
 * gateway re-frames itself and so never passes on, and what a header rule may not touch.
 */
export const hopByHopFields: ReadonlySet<string> = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
]);
/** Empty lines tolerated before a request line (RFC 9112 §2.2 says ignore at least one). */
const maxLeadingEmptyLines = 4;

/**
 * Why an HTTP message was refused; each maps to the status a server answers with
 * (see {@linkcode statusForHttpError}).
 */
export type HttpErrorReason =
  /** Malformed syntax (400). */
  | "bad-request"
  /** Head over `maxHeadBytes` or more than `maxHeaders` fields (431). */
  | "head-too-large"
  /** Request line alone over the head limit (414). */
  | "uri-too-long"
  /** A well-formed HTTP version other than 1.0/1.1 (505). */
  | "version"
  /** The peer closed inside a head or body. */
  | "eof";

/** A malformed, oversize or truncated HTTP message. A `ProtocolError`, so generic code copes. */
export class HttpError extends ProtocolError {
  override name = "HttpError";
  declare readonly reason: HttpErrorReason;
  constructor(message: string, reason: HttpErrorReason = "bad-request") {
    super(message, reason);
  }
}

/** The status a server answers a failed request head with; `undefined` for EOF (just close). */
export function statusForHttpError(err: HttpError): number | undefined {
  switch (err.reason) {
    case "head-too-large":
      return 431;
    case "uri-too-long":
      return 414;
    case "version":
      return 505;
    case "eof":
      return undefined;
    default:
      return 400;
  }
}

/** Header fields in arrival order, names as sent: `[name, value]`. */
export type HeaderFields = [string, string][];

/** A parsed request head. */
export interface RequestHead {
  /** Method token as sent (case-sensitive: `GET`, `CONNECT` ...). */
  method: string;
  /** Request target as sent: origin form `/p?q`, absolute `http://h/p`, authority `h:443`, `*`. */
  target: string;
  version: "HTTP/1.1" | "HTTP/1.0";
  headers: HeaderFields;
}

/** A parsed response head. */
export interface ResponseHead {
  version: "HTTP/1.1" | "HTTP/1.0";
  status: number;
  /** Reason phrase (may be empty). */
  reason: string;
  headers: HeaderFields;
}

/** Limits of {@linkcode readRequestHead} and {@linkcode readResponseHead}. */
export interface HeadLimits {
  /** Start line + fields + CRLFs. @default 65536 */
  maxHeadBytes?: number;
  /** Header fields. @default 100 */
  maxHeaders?: number;
}

const tokenRe = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// deno-lint-ignore no-control-regex
const requestLineRe = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([^\x00-\x20\x7f]+) (HTTP\/\d\.\d)$/;
const statusLineRe = /^(HTTP\/1\.[01]) (\d{3})(?: ([^\r\n]*))?$/;
// deno-lint-ignore no-control-regex
const badValueRe = /[\x00-\x08\x0a-\x1f\x7f]/;

/** A string to bytes one byte per char (the inverse of `decodeLatin1`); chars > 0xFF throw. */
export function encodeLatin1(s: string): Uint8Array {
  const out = new Uint8Array(s.length);
  putLatin1(out, 0, s);
  return out;
}

/** A reader error as the HttpError a head parser reports. */
function headLineError(err: unknown, tooLong: HttpErrorReason): unknown {
  if (err instanceof ProtocolError && err.reason === "too-long") {
    return new HttpError("head too large", tooLong);
  }
  if (err instanceof ProtocolError && err.reason === "eof") {
    return new HttpError("connection closed inside the head", "eof");
  }
  return err;
}

/**
 * One line of the head as a latin-1 string, with reader errors turned into HttpErrors. A
 * line already buffered is decoded in place, without awaiting: a head that came in one read
 * costs no promise and no copy per line.
 */
function readHeadLine(
  r: BufferedReader,
  maxBytes: number,
  tooLong: HttpErrorReason,
): string | Promise<string> {
  try {
    const line = r.readBufferedLine(maxBytes, false);
    if (line) return decodeLatin1(line);
  } catch (err) {
    throw headLineError(err, tooLong);
  }
  return r.readLine(maxBytes).then(decodeLatin1, (err) => {
    throw headLineError(err, tooLong);
  });
}

/**
 * `s` without leading and trailing spaces and tabs (the optional whitespace around a value, and
 * around a list element). Not `String.prototype.trim`, which also strips NBSP (0xA0): a
 * `chunked\xA0` we took for `chunked` would reach the next hop as sent, spelled otherwise.
 */
export function trimOws(s: string): string {
  let a = 0, b = s.length;
  while (a < b && (s.charCodeAt(a) === 0x20 || s.charCodeAt(a) === 0x09)) a++;
  while (b > a && (s.charCodeAt(b - 1) === 0x20 || s.charCodeAt(b - 1) === 0x09)) b--;
  return a === 0 && b === s.length ? s : s.slice(a, b);
}

/** What {@linkcode readFields} read. */
interface ReadFields {
  headers: HeaderFields;
  /** Bytes of the whole head, counting a CRLF per line (as `serializeHead` writes it). */
  used: number;
  /** Whether every field line was `name: value` exactly as `serializeHead` writes it. */
  canonical: boolean;
}

/**
 * Take one field line `s` into `acc` (the empty line ends the head: true). The one rule for
 * field lines, whether they came in the read that started the head or later.
 */
function takeFieldLine(acc: ReadFields, s: string, maxHeaders: number): boolean {
  acc.used += s.length + 2;
  if (s.length === 0) return true;
  const first = s.charCodeAt(0);
  if (first === 0x20 || first === 0x09) {
    throw new HttpError("obsolete line folding is not accepted");
  }
  if (acc.headers.length >= maxHeaders) {
    throw new HttpError("too many header fields", "head-too-large");
  }
  const colon = s.indexOf(":");
  if (colon <= 0) throw new HttpError("header field without a name or colon");
  const name = s.slice(0, colon);
  // Whitespace before the colon is a smuggling vector: RFC 9112 §5.1 says reject.
  if (!tokenRe.test(name)) throw new HttpError(`bad header field name ${JSON.stringify(name)}`);
  const value = trimOws(s.slice(colon + 1));
  if (badValueRe.test(value)) throw new HttpError(`control character in header ${name}`);
  acc.headers.push([name, value]);
  // One space after the colon, none after the value: the line serialises back to itself.
  acc.canonical &&= s.charCodeAt(colon + 1) === 0x20 && value.length === s.length - colon - 2;
  return false;
}

/**
 * Field lines (without their CRLF; e.g. a chunked body's trailer section) checked and split
 * by the rules of a head's fields: HttpError ("bad-request") on obsolete line folding, a bad
 * name or a control character, or more than `maxHeaders` fields.
 */
export function parseFieldLines(lines: string[], maxHeaders = defaultMaxHeaders): HeaderFields {
  const acc: ReadFields = { headers: [], used: 0, canonical: true };
  for (const s of lines) if (s !== "") takeFieldLine(acc, s, maxHeaders);
  return acc.headers;
}

/** The header fields after a start line of `used` bytes, up to the empty line. */
async function readFields(
  r: BufferedReader,
  limits: HeadLimits,
  used: number,
): Promise<ReadFields> {
  const maxHead = limits.maxHeadBytes ?? defaultMaxHeadBytes;
  const maxHeaders = limits.maxHeaders ?? defaultMaxHeaders;
  const acc: ReadFields = { headers: [], used, canonical: true };
  while (true) {
    if (acc.used > maxHead) throw new HttpError("head too large", "head-too-large");
    let s = readHeadLine(r, maxHead - acc.used, "head-too-large");
    if (typeof s !== "string") s = await s;
    if (takeFieldLine(acc, s, maxHeaders)) break;
  }
  if (acc.used > maxHead) throw new HttpError("head too large", "head-too-large");
  return acc;
}

/**
 * The lines of a head that is all buffered, decoded at once (one decode, not one per line):
 * `next` gives each line like the reader's `readBufferedLine` would (a CR before the LF
 * stripped, a line over `maxBytes` an HttpError `tooLong`).
 */
class HeadLines {
  #pos = 0;
  constructor(readonly text: string) {}

  next(maxBytes: number, tooLong: HttpErrorReason): string {
    const text = this.text, start = this.#pos;
    const nl = text.indexOf("\n", start);
    // headEnd() saw the empty line: a missing line here is a bug of this module.
    if (nl < 0) throw new Error("HeadLines: the head is not all buffered");
    if (nl - start > maxBytes) throw new HttpError("head too large", tooLong);
    this.#pos = nl + 1;
    return text.slice(start, nl > start && text.charCodeAt(nl - 1) === 0x0d ? nl - 1 : nl);
  }
}

/** `readFields` over the lines of a head that is all buffered: no promise at all. */
function bufferedFields(lines: HeadLines, limits: HeadLimits, used: number): ReadFields {
  const maxHead = limits.maxHeadBytes ?? defaultMaxHeadBytes;
  const maxHeaders = limits.maxHeaders ?? defaultMaxHeaders;
  const acc: ReadFields = { headers: [], used, canonical: true };
  while (true) {
    if (acc.used > maxHead) throw new HttpError("head too large", "head-too-large");
    if (takeFieldLine(acc, lines.next(maxHead - acc.used, "head-too-large"), maxHeaders)) break;
  }
  if (acc.used > maxHead) throw new HttpError("head too large", "head-too-large");
  return acc;
}

/**
 * Read one request head. Resolves `null` on a clean EOF before its first byte (a keep-alive
 * client that went away between requests). Rejects with {@linkcode HttpError}: malformed
 * syntax "bad-request", over the limits "head-too-large" / "uri-too-long", an HTTP version
 * other than 1.0/1.1 "version", EOF inside the head "eof".
 *
 * @example
 * ```ts
 * import { readRequestHead } from "./head.ts";
 * import { BufferedReader } from "../net/mod.ts";
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const client = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
 * const conn = await listener.accept();
 * await client.write(new TextEncoder().encode("GET /x HTTP/1.1\r\nHost: a.test\r\n\r\n"));
 * const r = new BufferedReader(conn);
 * const head = await readRequestHead(r, { maxHeadBytes: 16 * 1024 });
 * console.assert(head?.method === "GET" && head.target === "/x");
 * client.close();
 * conn.close();
 * listener.close();
 * ```
 */
export async function readRequestHead(
  r: BufferedReader,
  limits: HeadLimits = {},
): Promise<RequestHead | null> {
  // One read fills the buffer, telling a clean EOF apart without consuming bytes.
  if (r.buffered === 0 && !(await r.fill())) return null;
  // Usually the whole head came in that one read: parsed without a promise per line.
  const whole = takeBufferedRequestHead(r, limits);
  if (whole) return whole.head;
  return await readRequestHeadLines(r, limits);
}

/** A request head read line by line (it did not all come in the reader's first fill). */
async function readRequestHeadLines(r: BufferedReader, limits: HeadLimits): Promise<RequestHead> {
  const maxHead = limits.maxHeadBytes ?? defaultMaxHeadBytes;
  let start = "";
  for (let i = 0; i <= maxLeadingEmptyLines; i++) {
    if (r.buffered === 0 && !(await r.fill())) {
      throw new HttpError("connection closed inside the head", "eof");
    }
    const next = readHeadLine(r, maxHead, "uri-too-long");
    start = typeof next === "string" ? next : await next;
    if (start.length > 0) break;
  }
  const line = requestLine(start);
  const { headers } = await readFields(r, limits, start.length + 2);
  return { method: line[1], target: line[2], version: line[3] as RequestHead["version"], headers };
}

/** A request head with the bytes it came in as, when a gateway may pass those on. */
export interface RawRequestHead {
  head: RequestHead;
  /**
   * The head's bytes as received, when `serializeRequestHead(head)` would give exactly them
   * back (no leading empty line, CRLF line ends, `name: value` fields) and they were all
   * buffered when the read began; otherwise undefined. A view into the reader's buffer:
   * valid until its next read.
   */
  raw: Uint8Array | undefined;
}

/**
 * The request head at the front of `r`'s buffer when all of it is there (its empty line too),
 * parsed without a promise: undefined, with nothing consumed, when it is not all there yet.
 * Throws {@linkcode HttpError} like `readRequestHead` for a bad head (most heads arrive in one
 * read: `readRequestHead` tries this after its first fill). A keep-alive server's loop that
 * fills the reader itself takes each head with it and calls `readRequestHeadRawWithin` only
 * when this gives nothing or throws (that finishes or rejects the head the same way): two
 * async functions fewer per request. `raw` as in {@linkcode RawRequestHead}.
 */
export function takeBufferedRequestHead(
  r: BufferedReader,
  limits: HeadLimits = {},
): RawRequestHead | undefined {
  const view = r.peek();
  // The usual head, written as a serialiser writes it, is split at byte level; any other
  // (unusual or bad) is parsed below, which rejects what is bad.
  const scan = scanRequestHead(view, limits);
  if (scan) {
    r.skip(scan.length);
    return { head: scan.head, raw: view.subarray(0, scan.length) };
  }
  const end = headEnd(view);
  if (end < 0) return undefined;
  const lines = new HeadLines(decodeLatin1(view.subarray(0, end)));
  const maxHead = limits.maxHeadBytes ?? defaultMaxHeadBytes;
  let start = "";
  for (let i = 0; i <= maxLeadingEmptyLines && start.length === 0; i++) {
    start = lines.next(maxHead, "uri-too-long");
  }
  const line = requestLine(start);
  const { headers, used, canonical } = bufferedFields(lines, limits, start.length + 2);
  r.skip(end);
  return {
    head: { method: line[1], target: line[2], version: line[3] as RequestHead["version"], headers },
    // Without leading empty lines, `used` (a CRLF per line) equals `end` only when no line
    // ended in a bare LF (each makes `used` one more); with them the two could cancel out.
    raw: canonical && used === end && view[0] !== 0x0d && view[0] !== 0x0a
      ? view.subarray(0, end)
      : undefined,
  };
}

/** The request line's method, target and version (a match of `requestLineRe`), or HttpError. */
function requestLine(start: string): RegExpExecArray {
  if (start.length === 0) throw new HttpError("only empty lines where a request was due");
  const m = requestLineRe.exec(start);
  if (!m) throw new HttpError(`malformed request line ${JSON.stringify(start.slice(0, 80))}`);
  if (m[3] !== "HTTP/1.1" && m[3] !== "HTTP/1.0") {
    throw new HttpError(`unsupported version ${m[3]}`, "version");
  }
  return m;
}

/**
 * Where the whole head at the front of `b` ends (after the LF of its empty line), or -1 when
 * it is not all there: after any leading empty lines, a line followed by an empty one (LF or
 * CRLF endings, as the parser accepts).
 */
function headEnd(b: Uint8Array): number {
  let i = 0;
  while (i < b.length && (b[i] === 0x0d || b[i] === 0x0a)) i++;
  for (let nl = b.indexOf(0x0a, i); nl >= 0; nl = b.indexOf(0x0a, nl + 1)) {
    const next = b[nl + 1] === 0x0d ? nl + 2 : nl + 1;
    if (next < b.length && b[next] === 0x0a) return next + 1;
  }
  return -1;
}

/**
 * Read the next request head of a kept-alive connection, with a slowloris defence: wait
 * for its first byte without a deadline (idleness between requests is the caller's idle
 * timer's business), then give the whole head `timeoutMs` to arrive, else call `onTimeout`
 * (which should close the connection, so that this read rejects). `timeoutMs` <= 0 waits
 * without a deadline. Resolves and rejects like {@linkcode readRequestHead}.
 *
 * @example
 * ```ts
 * import { readRequestHeadWithin } from "./head.ts";
 * import { BufferedReader, closeQuietly } from "../net/mod.ts";
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const slow = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
 * const conn = await listener.accept();
 * await slow.write(new TextEncoder().encode("GET / HT")); // and then nothing more
 * const r = new BufferedReader(conn);
 * // A client that never finishes its head is cut after the deadline (here 50 ms).
 * const head = await readRequestHeadWithin(r, 50, () => closeQuietly(conn)).catch((e) => e);
 * console.assert(head instanceof Error, String(head));
 * closeQuietly(conn);
 * slow.close();
 * listener.close();
 * ```
 */
export async function readRequestHeadWithin(
  r: BufferedReader,
  timeoutMs: number,
  onTimeout: () => void,
  limits: HeadLimits = {},
): Promise<RequestHead | null> {
  if (r.buffered === 0 && !(await r.fill())) return null;
  // Usually the whole head came in that one read: nothing left to time (a timer per request
  // is a measurable share of a small request's cost).
  const whole = takeBufferedRequestHead(r, limits);
  if (whole) return whole.head;
  return await headLinesWithin(r, timeoutMs, onTimeout, limits);
}

/**
 * `readRequestHeadWithin`, plus the head's own bytes when re-serialising them would change
 * nothing (see {@linkcode RawRequestHead}): a gateway that passes a request on with fields
 * added (the tunnel's X-Forwarded-*) splices them into those bytes instead of building the
 * whole head again. Parses, times and rejects exactly like `readRequestHeadWithin`.
 */
export async function readRequestHeadRawWithin(
  r: BufferedReader,
  timeoutMs: number,
  onTimeout: () => void,
  limits: HeadLimits = {},
): Promise<RawRequestHead | null> {
  if (r.buffered === 0 && !(await r.fill())) return null;
  const whole = takeBufferedRequestHead(r, limits);
  if (whole) return whole;
  return { head: await headLinesWithin(r, timeoutMs, onTimeout, limits), raw: undefined };
}

/** A head that did not all come in one read, given `timeoutMs` (<= 0: no deadline). */
async function headLinesWithin(
  r: BufferedReader,
  timeoutMs: number,
  onTimeout: () => void,
  limits: HeadLimits,
): Promise<RequestHead> {
  if (timeoutMs <= 0) return await readRequestHeadLines(r, limits);
  const timer = setTimeout(onTimeout, timeoutMs);
  try {
    return await readRequestHeadLines(r, limits);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Read one response head. Interim (1xx) heads are returned like any other: the caller
 * forwards them and reads again. Rejects with {@linkcode HttpError} like `readRequestHead`.
 */
export async function readResponseHead(
  r: BufferedReader,
  limits: HeadLimits = {},
): Promise<ResponseHead> {
  return (await parseResponseHead(r, limits)).head;
}

/** A response head with the bytes it came in as, when a proxy may pass those on unchanged. */
export interface RawResponseHead {
  head: ResponseHead;
  /**
   * The head's bytes as received, when `serializeResponseHead(head)` would give exactly them
   * back (CRLF line ends, a reason phrase, `name: value` fields) and they were all buffered
   * when the read began; otherwise undefined. A view into the reader's buffer: valid until
   * its next read.
   */
  raw: Uint8Array | undefined;
}

/**
 * `readResponseHead`, plus the head's own bytes when re-serialising them would change
 * nothing: a proxy that passes a response on as it came (the tunnel's access log) writes
 * those instead of building the same bytes again. Parses and rejects exactly like
 * `readResponseHead`.
 */
export async function readResponseHeadRaw(
  r: BufferedReader,
  limits: HeadLimits = {},
): Promise<RawResponseHead> {
  // Only a head that was all in the buffer is parsed without a read, which would move it.
  return takeBufferedResponseHead(r, limits) ??
    { head: (await parseResponseHead(r, limits)).head, raw: undefined };
}

/**
 * {@linkcode readResponseHeadRaw} for a head that is all buffered (its empty line too), without
 * a promise: undefined, with nothing consumed, when it is not all there yet (then
 * `readResponseHeadRaw` waits for the rest). Throws {@linkcode HttpError} like it for a bad
 * head. A proxy that reads each response head (the tunnel's response rewrites) takes the usual
 * one with it: two async functions fewer per response.
 */
export function takeBufferedResponseHead(
  r: BufferedReader,
  limits: HeadLimits = {},
): RawResponseHead | undefined {
  const view = r.peek();
  const end = headEnd(view);
  if (end < 0) return undefined;
  const { head, used, canonical } = bufferedResponseHead(view, end, limits);
  r.skip(end);
  return { head, raw: canonical && used === end ? view.subarray(0, end) : undefined };
}

/**
 * A response head, its size as serialised, whether it was exactly that, and its length when
 * it was all buffered (0 when it was read line by line).
 */
async function parseResponseHead(
  r: BufferedReader,
  limits: HeadLimits,
): Promise<{ head: ResponseHead; used: number; canonical: boolean; whole: number }> {
  const maxHead = limits.maxHeadBytes ?? defaultMaxHeadBytes;
  const view = r.peek();
  const end = headEnd(view);
  if (end >= 0) {
    const parsed = bufferedResponseHead(view, end, limits);
    r.skip(end);
    return parsed;
  }
  let start = readHeadLine(r, maxHead, "head-too-large");
  if (typeof start !== "string") start = await start;
  const m = statusLine(start);
  return responseHead(m, await readFields(r, limits, start.length + 2), 0);
}

/**
 * The response head that is the first `end` bytes of `view` (all buffered, as a response head
 * usually is): one decode, no promise per line (see `parseResponseHead`).
 */
function bufferedResponseHead(
  view: Uint8Array,
  end: number,
  limits: HeadLimits,
): { head: ResponseHead; used: number; canonical: boolean; whole: number } {
  const lines = new HeadLines(decodeLatin1(view.subarray(0, end)));
  const start = lines.next(limits.maxHeadBytes ?? defaultMaxHeadBytes, "head-too-large");
  const m = statusLine(start);
  return responseHead(m, bufferedFields(lines, limits, start.length + 2), end);
}

/** The status line's version, status and reason (a match of `statusLineRe`), or HttpError. */
function statusLine(start: string): RegExpExecArray {
  const m = statusLineRe.exec(start);
  if (!m) throw new HttpError(`malformed status line ${JSON.stringify(start.slice(0, 80))}`);
  return m;
}

/** A response head from its status line and fields (see `parseResponseHead`). */
function responseHead(
  m: RegExpExecArray,
  fields: ReadFields,
  whole: number,
): { head: ResponseHead; used: number; canonical: boolean; whole: number } {
  const status = Number(m[2]);
  return {
    head: {
      version: m[1] as ResponseHead["version"],
      status,
      reason: m[3] ?? "",
      headers: fields.headers,
    },
    used: fields.used,
    // `String(status)` drops leading zeros, and a missing reason comes back as "200 ".
    canonical: fields.canonical && m[3] !== undefined && status >= 100,
    whole,
  };
}

/** Serialise a request head: request line, fields, empty line. */
export function serializeRequestHead(head: RequestHead): Uint8Array {
  return serializeHead(head.method, head.target, head.version, head.headers);
}

/** Serialise a response head: status line, fields, empty line. */
export function serializeResponseHead(head: ResponseHead): Uint8Array {
  return serializeHead(head.version, String(head.status), head.reason, head.headers);
}

/**
 * `a b c` CRLF, `name: value` CRLF per field, CRLF, as latin-1 bytes written straight into
 * one array (no intermediate string: this runs once per proxied request).
 */
function serializeHead(a: string, b: string, c: string, headers: HeaderFields): Uint8Array {
  let n = a.length + b.length + c.length + 6;
  for (const [k, v] of headers) n += k.length + v.length + 4;
  const out = new Uint8Array(n);
  let o = putLatin1(out, 0, a);
  out[o++] = 0x20;
  o = putLatin1(out, o, b);
  out[o++] = 0x20;
  o = putLatin1(out, o, c);
  out[o++] = 0x0d;
  out[o++] = 0x0a;
  for (const [k, v] of headers) {
    o = putLatin1(out, o, k);
    out[o++] = 0x3a;
    out[o++] = 0x20;
    o = putLatin1(out, o, v);
    out[o++] = 0x0d;
    out[o++] = 0x0a;
  }
  out[o++] = 0x0d;
  out[o] = 0x0a;
  return out;
}

/** Write `s` into `out` at `o` one byte per char; returns the end. Chars > 0xFF throw. */
export function putLatin1(out: Uint8Array, o: number, s: string): number {
  for (let i = 0; i < s.length; i++) {
    const ch = s.charCodeAt(i);
    if (ch > 0xff) throw new HttpError(`character U+${ch.toString(16)} cannot go in a head`);
    out[o++] = ch;
  }
  return o;
}

/**
 * Whether field name `k` is `lower` (a lower-case name), ignoring case. The length check
 * first: lower-casing every field of every request was a measurable cost.
 */
export function fieldNameIs(k: string, lower: string): boolean {
  return k.length === lower.length && (k === lower || k.toLowerCase() === lower);
}

/** First value of header `name` (case-insensitive), or undefined. */
export function getHeader(headers: HeaderFields, name: string): string | undefined {
  const n = name.toLowerCase();
  for (const [k, v] of headers) if (fieldNameIs(k, n)) return v;
  return undefined;
}

/** Every value of header `name` (case-insensitive), in order. */
export function getHeaders(headers: HeaderFields, name: string): string[] {
  const n = name.toLowerCase();
  const out: string[] = [];
  for (const [k, v] of headers) if (fieldNameIs(k, n)) out.push(v);
  return out;
}

/** The comma-separated tokens of every `name` field, lower-cased (Connection, TE ...). */
export function headerTokens(headers: HeaderFields, name: string): string[] {
  // Runs a few times per proxied request, mostly for a field the head does not have: one
  // loop, no intermediate arrays.
  const n = name.toLowerCase();
  const out: string[] = [];
  for (const [k, v] of headers) {
    if (!fieldNameIs(k, n)) continue;
    for (const t of v.split(",")) {
      const token = trimOws(t).toLowerCase();
      if (token !== "") out.push(token);
    }
  }
  return out;
}

/** Whether a comma-separated header lists `token` (case-insensitive). */
export function headerHasToken(headers: HeaderFields, name: string, token: string): boolean {
  return headerTokens(headers, name).includes(token.toLowerCase());
}

/** A copy of `headers` without the fields named in `names` (case-insensitive). */
export function withoutHeaders(headers: HeaderFields, names: Iterable<string>): HeaderFields {
  const drop = new Set([...names].map((n) => n.toLowerCase()));
  return headers.filter(([k]) => !drop.has(k.toLowerCase()));
}

/** A copy of `headers` with `name` set to the single `value` (in place of the first one). */
export function withHeader(headers: HeaderFields, name: string, value: string): HeaderFields {
  const n = name.toLowerCase();
  const out: HeaderFields = [];
  let done = false;
  for (const [k, v] of headers) {
    if (!fieldNameIs(k, n)) out.push([k, v]);
    else if (!done) (out.push([k, value]), done = true);
  }
  if (!done) out.push([name, value]);
  return out;
}
