/**
 * Heads checked at byte level where they lie in a buffer, each accepting only the canonical
 * spelling a serialiser writes and leaving everything else to the full parser in `head.ts`
 * (which rejects what is bad): a response head for a proxy that needs of it only its status
 * and body framing (the tunnel's access log), and a request head, the usual one every proxied
 * request starts with, split into its fields without a regex, a string per line or a trim.
 * @module
 */

import { decodeLatin1, defaultMaxHeadBytes, defaultMaxHeaders } from "./head_bytes.ts";
import type { HeaderFields, HeadLimits, RequestHead } from "./head.ts";

/** What {@linkcode scanResponseHead} found. */
export interface ResponseHeadScan {
  /** The status code (100-999). */
  status: number;
  /** Bytes of the head: status line, field lines and the empty line. */
  length: number;
  /**
   * Its Content-Length and Transfer-Encoding fields (names lower-cased, values as sent), in
   * order: all that frames its body (for `responseBodyFraming`, which checks them).
   */
  framingFields: HeaderFields;
  /**
   * Whether the connection may carry another request after this response (RFC 9112 §9.3):
   * HTTP/1.1 without a `close` connection option, or HTTP/1.0 with `keep-alive` and without
   * `close`.
   */
  persistent: boolean;
}

const CR = 0x0d;
const LF = 0x0a;
const SP = 0x20;
const HTAB = 0x09;

/** Bytes of a field name (RFC 9110 tchar), as `head.ts`'s name check takes them. */
const tchar = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~") tchar[c.charCodeAt(0)] = 1;
for (let c = 0x30; c <= 0x39; c++) tchar[c] = 1;
for (let c = 0x41; c <= 0x5a; c++) tchar[c] = 1;
for (let c = 0x61; c <= 0x7a; c++) tchar[c] = 1;

/** Bytes a field value may hold (no control other than HTAB), as `head.ts` takes them. */
const vchar = new Uint8Array(256);
for (let c = 0x20; c <= 0xff; c++) vchar[c] = c === 0x7f ? 0 : 1;
vchar[HTAB] = 1;

/** A `close` connection option between optional whitespace (SP, HTAB), any case. */
const closeToken = /^[ \t]*close[ \t]*$/i;
/** A `keep-alive` connection option, the same way. */
const keepAliveToken = /^[ \t]*keep-alive[ \t]*$/i;

/** Whether `b[at..at+lower.length)` is `lower` (lower-case ASCII letters and `-`), any case. */
function nameIs(b: Uint8Array, at: number, len: number, lower: string): boolean {
  if (len !== lower.length) return false;
  for (let i = 0; i < len; i++) if ((b[at + i] | 0x20) !== lower.charCodeAt(i)) return false;
  return true;
}

/**
 * The response head at the front of `b` when all of it is there and it is written the way
 * `serializeResponseHead` writes one (`HTTP/1.x NNN reason`, `name: value` field lines without
 * extra whitespace, every line ending in CRLF) within `limits`: then what `readResponseHead`
 * would return for it has this status and these framing fields, and its bytes are the head a
 * proxy passes on unchanged. Undefined for any other input (not all there, another spelling,
 * or malformed): the caller then reads it with `readResponseHeadRaw`, which parses it fully and
 * rejects what is bad. So this check accepts only a subset of what the parser accepts (the
 * fuzz tests hold the two side by side); it never rejects anything itself.
 */
export function scanResponseHead(
  b: Uint8Array,
  limits: HeadLimits = {},
): ResponseHeadScan | undefined {
  const maxHead = Math.min(b.length, limits.maxHeadBytes ?? defaultMaxHeadBytes);
  const maxHeaders = limits.maxHeaders ?? defaultMaxHeaders;
  // "HTTP/1.0 " or "HTTP/1.1 ", three digits (the first not 0), a space.
  if (
    maxHead < 17 || b[0] !== 0x48 || b[1] !== 0x54 || b[2] !== 0x54 || b[3] !== 0x50 ||
    b[4] !== 0x2f || b[5] !== 0x31 || b[6] !== 0x2e || (b[7] !== 0x30 && b[7] !== 0x31) ||
    b[8] !== SP || b[12] !== SP
  ) return undefined;
  const d0 = b[9] - 0x30, d1 = b[10] - 0x30, d2 = b[11] - 0x30;
  if (d0 < 1 || d0 > 9 || d1 < 0 || d1 > 9 || d2 < 0 || d2 > 9) return undefined;
  // The reason phrase: anything but CR and LF, up to the CRLF.
  let i = 13;
  while (i < maxHead && b[i] !== CR && b[i] !== LF) i++;
  if (b[i] !== CR || b[i + 1] !== LF) return undefined;
  i += 2;
  const framingFields: HeaderFields = [];
  let close = false, keepAlive = false;
  for (let fields = 0;; fields++) {
    if (i + 1 >= maxHead) return undefined;
    if (b[i] === CR) {
      if (b[i + 1] !== LF) return undefined;
      const persistent = !close && (b[7] === 0x31 || keepAlive);
      return { status: d0 * 100 + d1 * 10 + d2, length: i + 2, framingFields, persistent };
    }
    if (fields === maxHeaders) return undefined;
    const name = i;
    while (i < maxHead && tchar[b[i]] === 1) i++;
    const nameLen = i - name;
    if (nameLen === 0 || b[i] !== 0x3a || b[i + 1] !== SP) return undefined;
    i += 2;
    const value = i;
    while (i < maxHead && vchar[b[i]] === 1) i++;
    const end = i;
    if (b[i] !== CR || b[i + 1] !== LF) return undefined;
    // No whitespace around the value (it would be trimmed: another spelling).
    if (
      end > value &&
      (b[value] === SP || b[value] === HTAB || b[end - 1] === SP || b[end - 1] === HTAB)
    ) return undefined;
    i += 2;
    if (nameIs(b, name, nameLen, "content-length")) {
      framingFields.push(["content-length", decodeLatin1(b.subarray(value, end))]);
    } else if (nameIs(b, name, nameLen, "transfer-encoding")) {
      framingFields.push(["transfer-encoding", decodeLatin1(b.subarray(value, end))]);
    } else if (nameIs(b, name, nameLen, "connection")) {
      for (const t of decodeLatin1(b.subarray(value, end)).split(",")) {
        if (closeToken.test(t)) close = true;
        else if (keepAliveToken.test(t)) keepAlive = true;
      }
    }
  }
}

/** What {@linkcode scanRequestHead} found. */
export interface RequestHeadScan {
  /** The head, as the parser would give it. */
  head: RequestHead;
  /** Bytes of the head: request line, field lines and the empty line. */
  length: number;
}

/** Decodes an ASCII head (a char per byte, as latin-1). */
const asciiDecoder = new TextDecoder();

/** Offsets of each field's name end, value start and value end, reused by every scan. */
const fieldMarks: number[] = [];

/**
 * The request head at the front of `b` when all of it is there and it is written the way
 * `serializeRequestHead` writes one (`METHOD target HTTP/1.x`, `name: value` field lines
 * without whitespace around the value, every line ending in CRLF, no leading empty line)
 * within `limits`: then it is exactly what the parser would return for these bytes (they are
 * its raw head). Undefined for any other input (not all there, another spelling, or
 * malformed): the caller then parses it, and the parser rejects what is bad (bare LF,
 * obs-fold, whitespace before a colon, control bytes, ...). So this check accepts only a subset
 * of what the parser accepts (the fuzz tests hold the two side by side); it never rejects
 * anything itself, and body framing (Content-Length, Transfer-Encoding) is left to
 * `requestBodyFraming` as for a parsed head.
 */
export function scanRequestHead(
  b: Uint8Array,
  limits: HeadLimits = {},
): RequestHeadScan | undefined {
  const maxHead = Math.min(b.length, limits.maxHeadBytes ?? defaultMaxHeadBytes);
  const maxHeaders = limits.maxHeaders ?? defaultMaxHeaders;
  // The method (a token), a space, the target (no control, space or DEL), a space.
  let i = 0;
  while (i < maxHead && tchar[b[i]] === 1) i++;
  const methodEnd = i;
  if (methodEnd === 0 || b[i] !== SP) return undefined;
  i++;
  // Every byte of the target and values or-ed: below 0x80, the head is ASCII.
  let high = 0;
  while (i < maxHead && b[i] > SP && b[i] !== 0x7f) high |= b[i++];
  const targetEnd = i;
  if (targetEnd === methodEnd + 1 || b[i] !== SP) return undefined;
  // "HTTP/1.0" or "HTTP/1.1", CRLF.
  i++;
  if (
    i + 10 > maxHead || b[i] !== 0x48 || b[i + 1] !== 0x54 || b[i + 2] !== 0x54 ||
    b[i + 3] !== 0x50 || b[i + 4] !== 0x2f || b[i + 5] !== 0x31 || b[i + 6] !== 0x2e ||
    (b[i + 7] !== 0x30 && b[i + 7] !== 0x31) || b[i + 8] !== CR || b[i + 9] !== LF
  ) return undefined;
  const versionAt = i;
  i += 10;
  let fields = 0;
  for (;; fields++) {
    if (i + 1 >= maxHead) return undefined;
    if (b[i] === CR) {
      if (b[i + 1] !== LF) return undefined;
      i += 2;
      break;
    }
    if (fields === maxHeaders) return undefined;
    const name = i;
    while (i < maxHead && tchar[b[i]] === 1) i++;
    if (i === name || b[i] !== 0x3a || b[i + 1] !== SP) return undefined;
    const nameEnd = i;
    i += 2;
    const value = i;
    while (i < maxHead && vchar[b[i]] === 1) high |= b[i++];
    const end = i;
    if (b[i] !== CR || b[i + 1] !== LF) return undefined;
    // No whitespace around the value (the parser would trim it: another spelling).
    if (
      end > value &&
      (b[value] === SP || b[value] === HTAB || b[end - 1] === SP || b[end - 1] === HTAB)
    ) return undefined;
    i += 2;
    const m = fields * 3;
    fieldMarks[m] = nameEnd, fieldMarks[m + 1] = value, fieldMarks[m + 2] = end;
  }
  // One decode for the whole head; every string is a slice of it (latin-1: a char per byte;
  // an ASCII head, the usual one, straight through the decoder without another look).
  const text = high < 0x80 ? asciiDecoder.decode(b.subarray(0, i)) : decodeLatin1(b.subarray(0, i));
  const headers: HeaderFields = new Array(fields);
  let at = versionAt + 10;
  for (let f = 0; f < fields; f++) {
    const m = f * 3;
    headers[f] = [
      text.slice(at, fieldMarks[m]),
      text.slice(fieldMarks[m + 1], fieldMarks[m + 2]),
    ];
    at = fieldMarks[m + 2] + 2;
  }
  return {
    head: {
      method: text.slice(0, methodEnd),
      target: text.slice(methodEnd + 1, targetEnd),
      version: b[versionAt + 7] === 0x31 ? "HTTP/1.1" : "HTTP/1.0",
      headers,
    },
    length: i,
  };
}
