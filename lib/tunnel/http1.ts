/**
 * Just enough HTTP/1.1 for a tunnel: read and write request and response heads with size
 * limits, work out how a body is framed, and copy a body through (raw or de-chunked)
 * without buffering it whole.
 *
 * Why here and not in lib/http: the tunnel needs response heads and chunk-exact body
 * copying on top of a mux stream; when lib/http grows these this file can delegate.
 * @module
 */

import { type BufferedReader, type Duplex, ProtocolError } from "../net/mod.ts";

/** Largest request or response head accepted (request line + headers). */
export const defaultMaxHeadBytes = 32 * 1024;
/** Most header fields accepted in one head. */
export const defaultMaxHeaders = 128;
/** Longest chunk-size line accepted (size + extensions). */
const maxChunkLineBytes = 4096;
/** Bytes copied per read when streaming a body. */
const copyChunkBytes = 64 * 1024;

/** A malformed or oversize HTTP message; `reason` maps to the status to answer. */
export class HttpError extends ProtocolError {
  override name = "HttpError";
  constructor(message: string, reason: "bad-request" | "head-too-large" | "eof" = "bad-request") {
    super(message, reason);
  }
}

/** Header fields in arrival order, names as sent. */
export type Headers1 = [string, string][];

/** A parsed request head. */
export interface RequestHead {
  method: string;
  target: string;
  version: "HTTP/1.1" | "HTTP/1.0";
  headers: Headers1;
}

/** A parsed response head. */
export interface ResponseHead {
  version: string;
  status: number;
  reason: string;
  headers: Headers1;
}

/** How a message body is delimited. */
export type BodyFraming =
  | { kind: "none" }
  | { kind: "length"; length: number }
  | { kind: "chunked" }
  | { kind: "close" };

/** Limits of {@linkcode readRequestHead} and {@linkcode readResponseHead}. */
export interface HeadLimits {
  maxHeadBytes?: number;
  maxHeaders?: number;
}

const tokenRe = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const asciiDecoder = new TextDecoder();
const encoder = new TextEncoder();

function latin1(b: Uint8Array): string {
  let ascii = true;
  for (let i = 0; i < b.length; i++) {
    if (b[i] > 0x7f) {
      ascii = false;
      break;
    }
  }
  if (ascii) return asciiDecoder.decode(b);
  let s = "";
  for (let i = 0; i < b.length; i++) s += String.fromCharCode(b[i]);
  return s;
}

/** Encode a head string byte for byte (header values may carry latin-1 octets). */
export function encodeLatin1(s: string): Uint8Array {
  // deno-lint-ignore no-control-regex
  if (!/[^\x00-\x7f]/.test(s)) return encoder.encode(s);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i) & 0xff;
  return out;
}

async function readHeadLines(
  r: BufferedReader,
  limits: HeadLimits,
  first: Uint8Array,
): Promise<{ start: string; headers: Headers1 }> {
  const maxHead = limits.maxHeadBytes ?? defaultMaxHeadBytes;
  const maxHeaders = limits.maxHeaders ?? defaultMaxHeaders;
  let used = first.length + 2;
  const start = latin1(first);
  const headers: Headers1 = [];
  while (true) {
    let line: Uint8Array;
    try {
      line = await r.readLine(Math.max(0, maxHead - used));
    } catch (err) {
      if (err instanceof ProtocolError && err.reason === "too-long") {
        throw new HttpError("head too large", "head-too-large");
      }
      if (err instanceof ProtocolError && err.reason === "eof") {
        throw new HttpError("connection closed inside the head", "eof");
      }
      throw err;
    }
    used += line.length + 2;
    if (used > maxHead) throw new HttpError("head too large", "head-too-large");
    if (line.length === 0) return { start, headers };
    if (line[0] === 0x20 || line[0] === 0x09) throw new HttpError("obsolete line folding");
    const s = latin1(line);
    const colon = s.indexOf(":");
    if (colon <= 0) throw new HttpError("header line without a colon");
    const name = s.slice(0, colon);
    if (!tokenRe.test(name)) throw new HttpError("bad header name");
    const value = s.slice(colon + 1).trim();
    // deno-lint-ignore no-control-regex
    if (/[\x00\r\n]/.test(value)) throw new HttpError("control character in header value");
    if (headers.length >= maxHeaders) throw new HttpError("too many headers", "head-too-large");
    headers.push([name, value]);
  }
}

async function firstLine(r: BufferedReader, limits: HeadLimits): Promise<Uint8Array | null> {
  const maxHead = limits.maxHeadBytes ?? defaultMaxHeadBytes;
  // Tolerate the empty lines some clients send between requests (RFC 9112 §2.2).
  for (let i = 0; i < 4; i++) {
    // A zero-length read fills the buffer and tells a clean EOF apart without consuming.
    if (r.buffered === 0 && (await r.readExactOrEof(0)) === null) return null;
    const line = await readLineMapped(r, maxHead);
    if (line.length > 0) return line;
  }
  throw new HttpError("too many empty lines before the request");
}

async function readLineMapped(r: BufferedReader, max: number): Promise<Uint8Array> {
  try {
    return await r.readLine(max);
  } catch (err) {
    if (err instanceof ProtocolError && err.reason === "too-long") {
      throw new HttpError("start line too long", "head-too-large");
    }
    if (err instanceof ProtocolError && err.reason === "eof") {
      throw new HttpError("connection closed inside the head", "eof");
    }
    throw err;
  }
}

/**
 * Read one request head; `null` on a clean EOF before its first byte (a keep-alive
 * connection closed between requests). Rejects with HttpError on malformed input.
 */
export async function readRequestHead(
  r: BufferedReader,
  limits: HeadLimits = {},
): Promise<RequestHead | null> {
  const line = await firstLine(r, limits);
  if (line === null) return null;
  const { start, headers } = await readHeadLines(r, limits, line);
  // deno-lint-ignore no-control-regex
  const m = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([^\s\x00-\x1f]+) (HTTP\/1\.[01])$/.exec(start);
  if (!m) throw new HttpError("malformed request line");
  return { method: m[1], target: m[2], version: m[3] as RequestHead["version"], headers };
}

/** Read one response head (interim 1xx heads included: the caller loops). */
export async function readResponseHead(
  r: BufferedReader,
  limits: HeadLimits = {},
): Promise<ResponseHead> {
  const line = await readLineMapped(r, limits.maxHeadBytes ?? defaultMaxHeadBytes);
  const { start, headers } = await readHeadLines(r, limits, line);
  const m = /^(HTTP\/1\.[01]) (\d{3})(?: (.*))?$/.exec(start);
  if (!m) throw new HttpError("malformed status line");
  return { version: m[1], status: Number(m[2]), reason: m[3] ?? "", headers };
}

/** First value of header `name` (case-insensitive). */
export function getHeader(headers: Headers1, name: string): string | undefined {
  const n = name.toLowerCase();
  for (const [k, v] of headers) if (k.length === n.length && k.toLowerCase() === n) return v;
  return undefined;
}

/** Whether a comma-separated header (Connection, Transfer-Encoding) lists `token`. */
export function headerHasToken(headers: Headers1, name: string, token: string): boolean {
  const n = name.toLowerCase();
  for (const [k, v] of headers) {
    if (k.toLowerCase() !== n) continue;
    for (const part of v.split(",")) if (part.trim().toLowerCase() === token) return true;
  }
  return false;
}

function lengthOf(headers: Headers1): number | undefined {
  let len: number | undefined;
  for (const [k, v] of headers) {
    if (k.toLowerCase() !== "content-length") continue;
    for (const part of v.split(",")) {
      const t = part.trim();
      if (!/^\d{1,15}$/.test(t)) throw new HttpError("bad Content-Length");
      const n = Number(t);
      if (len !== undefined && len !== n) throw new HttpError("conflicting Content-Length");
      len = n;
    }
  }
  return len;
}

function transferEncoding(headers: Headers1): "chunked" | "other" | undefined {
  let te: string | undefined;
  for (const [k, v] of headers) if (k.toLowerCase() === "transfer-encoding") te = v;
  if (te === undefined) return undefined;
  const codings = te.split(",").map((s) => s.trim().toLowerCase()).filter(Boolean);
  return codings[codings.length - 1] === "chunked" ? "chunked" : "other";
}

/**
 * How a request body is framed. Rejects both Content-Length and Transfer-Encoding (request
 * smuggling), a non-chunked final coding, and bad or conflicting lengths.
 */
export function requestBodyFraming(head: RequestHead): BodyFraming {
  const te = transferEncoding(head.headers);
  const len = lengthOf(head.headers);
  if (te !== undefined) {
    if (len !== undefined) throw new HttpError("both Content-Length and Transfer-Encoding");
    if (te !== "chunked") throw new HttpError("request body coding is not chunked");
    return { kind: "chunked" };
  }
  if (len !== undefined && len > 0) return { kind: "length", length: len };
  return { kind: "none" };
}

/** How a response body is framed, given the request method it answers. */
export function responseBodyFraming(head: ResponseHead, method: string): BodyFraming {
  if (method === "HEAD" || head.status < 200 || head.status === 204 || head.status === 304) {
    return { kind: "none" };
  }
  const te = transferEncoding(head.headers);
  if (te === "chunked") return { kind: "chunked" };
  if (te === "other") return { kind: "close" };
  const len = lengthOf(head.headers);
  if (len !== undefined) return len > 0 ? { kind: "length", length: len } : { kind: "none" };
  return { kind: "close" };
}

/** Serialise a request head (request line, headers, blank line). */
export function serializeRequestHead(head: RequestHead): Uint8Array {
  let s = `${head.method} ${head.target} ${head.version}\r\n`;
  for (const [k, v] of head.headers) s += `${k}: ${v}\r\n`;
  return encodeLatin1(s + "\r\n");
}

/** Serialise a response head. */
export function serializeResponseHead(head: ResponseHead): Uint8Array {
  let s = `${head.version} ${head.status} ${head.reason}\r\n`;
  for (const [k, v] of head.headers) s += `${k}: ${v}\r\n`;
  return encodeLatin1(s + "\r\n");
}

/** Where body bytes go. */
export type Sink = (p: Uint8Array) => Promise<void>;

/**
 * Copy exactly `n` bytes: first what the reader buffered, then straight from `src` (no
 * extra copy for large bodies). Rejects with HttpError("eof") if `src` ends first.
 */
export async function copyExact(
  r: BufferedReader,
  src: Pick<Duplex, "read">,
  n: number,
  sink: Sink,
  buf?: Uint8Array,
): Promise<void> {
  let left = n;
  if (r.buffered > 0 && left > 0) {
    const take = await r.readExact(Math.min(r.buffered, left));
    await sink(take);
    left -= take.length;
  }
  if (left === 0) return;
  const b = buf ?? new Uint8Array(Math.min(copyChunkBytes, left));
  while (left > 0) {
    const got = await src.read(b.length > left ? b.subarray(0, left) : b);
    if (got === null) throw new HttpError("connection closed inside the body", "eof");
    await sink(b.subarray(0, got));
    left -= got;
  }
}

const crlf = new Uint8Array([0x0d, 0x0a]);

/**
 * Copy a chunked body. With `raw` the chunk framing and trailers are copied verbatim (a
 * proxy relaying the message); otherwise only the data reaches `sink` (a decoder).
 */
export async function copyChunked(
  r: BufferedReader,
  src: Pick<Duplex, "read">,
  sink: Sink,
  raw: boolean,
  buf?: Uint8Array,
): Promise<void> {
  while (true) {
    const line = await readLineMapped(r, maxChunkLineBytes);
    const sizeText = latin1(line).split(";")[0].trim();
    if (!/^[0-9a-fA-F]{1,12}$/.test(sizeText)) throw new HttpError("bad chunk size");
    const size = parseInt(sizeText, 16);
    if (raw) await sink(withCrlf(line));
    if (size === 0) {
      // Trailer fields up to the blank line.
      let trailerBytes = 0;
      while (true) {
        const t = await readLineMapped(r, maxChunkLineBytes);
        trailerBytes += t.length;
        if (trailerBytes > defaultMaxHeadBytes) throw new HttpError("trailers too large");
        if (raw) await sink(withCrlf(t));
        if (t.length === 0) return;
      }
    }
    await copyExact(r, src, size, sink, buf);
    const end = await readLineMapped(r, 2);
    if (end.length !== 0) throw new HttpError("chunk data longer than its size");
    if (raw) await sink(crlf);
  }
}

function withCrlf(line: Uint8Array): Uint8Array {
  const out = new Uint8Array(line.length + 2);
  out.set(line);
  out[line.length] = 0x0d;
  out[line.length + 1] = 0x0a;
  return out;
}

/** Copy a body of the given framing through `sink` (raw framing kept). */
export async function copyBody(
  r: BufferedReader,
  src: Pick<Duplex, "read">,
  framing: BodyFraming,
  sink: Sink,
  buf?: Uint8Array,
): Promise<void> {
  switch (framing.kind) {
    case "none":
      return;
    case "length":
      return await copyExact(r, src, framing.length, sink, buf);
    case "chunked":
      return await copyChunked(r, src, sink, true, buf);
    case "close": {
      if (r.buffered > 0) await sink(r.takeBuffered());
      const b = buf ?? new Uint8Array(copyChunkBytes);
      while (true) {
        const n = await src.read(b);
        if (n === null) return;
        await sink(b.subarray(0, n));
      }
    }
  }
}

/** HTTP reason phrases of the statuses the tunnel itself answers with. */
export const statusText: Record<number, string> = {
  400: "Bad Request",
  404: "Not Found",
  408: "Request Timeout",
  413: "Content Too Large",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
};

/** A complete small response with `Connection: close`, for errors the tunnel answers itself. */
export function simpleResponse(
  status: number,
  body: string,
  contentType = "text/plain",
): Uint8Array {
  const b = encoder.encode(body);
  const head = `HTTP/1.1 ${status} ${statusText[status] ?? "Error"}\r\n` +
    `Content-Type: ${contentType}; charset=utf-8\r\nContent-Length: ${b.length}\r\n` +
    `Connection: close\r\nCache-Control: no-store\r\n\r\n`;
  const h = encoder.encode(head);
  const out = new Uint8Array(h.length + b.length);
  out.set(h);
  out.set(b, h.length);
  return out;
}
