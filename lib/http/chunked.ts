/**
 * A streaming check of chunked framing (RFC 9112 §7.1) for relays: it walks whatever bytes
 * a read returned, skipping chunk data in bulk, and says where the message ends, so a relay
 * forwards each read whole (one write per read) instead of one write per size line, data
 * piece and CRLF.
 *
 * It is strict where a lenient parser invites request smuggling: every line must end in
 * CRLF (a bare LF or CR is refused, so the next hop cannot count lines differently), a size
 * is 1 to 12 hex digits, chunk data must be followed by CRLF.
 * @module
 */

import { HttpError } from "./head.ts";

/** Longest chunk-size line accepted (hex size plus extensions). */
export const maxChunkLineBytes = 4096;
/** Most bytes of trailer fields accepted after the last chunk. */
export const maxTrailerBytes = 16 * 1024;
/** Hex digits of a chunk size at most (2^48 - 1 bytes: exact in a double). */
const maxSizeDigits = 12;

const CR = 0x0d;
const LF = 0x0a;

// Where the scanner stands (numbers, not strings: this runs once per framing byte).
/** In the size's hex digits. */
const sizeDigits = 0;
/** Whitespace after the digits. */
const sizeSpace = 1;
/** A chunk extension (after `;`), up to CR. */
const extension = 2;
/** After the size line's CR. */
const sizeLf = 3;
/** In chunk data. */
const data = 4;
/** After chunk data: CR due. */
const dataCr = 5;
/** After chunk data's CR: LF due. */
const dataLf = 6;
/** At the start of a trailer line (or the final empty line). */
const trailerStart = 7;
/** Inside a trailer line. */
const trailer = 8;
/** After a trailer line's CR. */
const trailerLf = 9;
/** After the final empty line's CR. */
const endLf = 10;
/** The message ended. */
const ended = 11;

function hexValue(b: number): number {
  if (b >= 0x30 && b <= 0x39) return b - 0x30;
  const l = b | 0x20;
  return l >= 0x61 && l <= 0x66 ? l - 0x61 + 10 : -1;
}

/**
 * Follows one chunked body through any split of its bytes. `scan()` each piece in order;
 * it returns how many bytes of the piece belong to the body and throws
 * {@linkcode HttpError} ("bad-request") at the first framing error.
 *
 * @example
 * ```ts
 * import { ChunkedScanner } from "./chunked.ts";
 * const s = new ChunkedScanner();
 * const wire = new TextEncoder().encode("3\r\nabc\r\n0\r\n\r\nGET /next");
 * console.log(s.scan(wire), s.done); // 15 true: what follows is the next message
 * ```
 */
export class ChunkedScanner {
  #state = sizeDigits;
  #digits = 0;
  #size = 0;
  /** Bytes of the current size line, or of the trailer section. */
  #lineBytes = 0;
  #trailerBytes = 0;
  /** Chunk data bytes still due. */
  #left = 0;

  /** Whether the last chunk and the trailers have ended: the message is complete. */
  get done(): boolean {
    return this.#state === ended;
  }

  /**
   * Whether the scan stands right after the last chunk, at the start of the trailer section
   * (where {@linkcode scanToTrailers} stops).
   */
  get atTrailers(): boolean {
    return this.#state === trailerStart && this.#trailerBytes === 0;
  }

  /** Scan the next piece; returns how many of its bytes belong to the body. */
  scan(p: Uint8Array): number {
    return this.#scan(p, false);
  }

  /**
   * {@linkcode scan}, stopping at the start of the trailer section (see `atTrailers`): a relay
   * that rewrites trailer fields forwards the chunks up to there as they came.
   */
  scanToTrailers(p: Uint8Array): number {
    return this.#scan(p, true);
  }

  #scan(p: Uint8Array, toTrailers: boolean): number {
    let i = 0;
    while (i < p.length && this.#state !== ended && !(toTrailers && this.atTrailers)) {
      if (this.#state === data) {
        const n = Math.min(this.#left, p.length - i);
        i += n;
        this.#left -= n;
        if (this.#left === 0) this.#state = dataCr;
        continue;
      }
      this.#step(p[i++]);
    }
    return i;
  }

  /** One framing byte. */
  #step(b: number): void {
    switch (this.#state) {
      case sizeDigits: {
        this.#countLine();
        const v = hexValue(b);
        if (v >= 0) {
          if (++this.#digits > maxSizeDigits) throw new HttpError("chunk size too large");
          this.#size = this.#size * 16 + v;
          return;
        }
        if (this.#digits === 0) throw new HttpError("chunk size line without a size");
        if (b === 0x20 || b === 0x09) this.#state = sizeSpace;
        else this.#afterSize(b);
        return;
      }
      case sizeSpace:
        this.#countLine();
        if (b !== 0x20 && b !== 0x09) this.#afterSize(b);
        return;
      case extension:
        this.#countLine();
        if (b === CR) this.#state = sizeLf;
        else if (b === LF) throw new HttpError("bare LF in a chunk size line");
        return;
      case sizeLf:
        if (b !== LF) throw new HttpError("CR without LF in a chunk size line");
        if (this.#size === 0) {
          this.#state = trailerStart;
        } else {
          this.#left = this.#size;
          this.#state = data;
        }
        return;
      case dataCr:
        if (b !== CR) throw new HttpError("chunk data longer than its size");
        this.#state = dataLf;
        return;
      case dataLf:
        if (b !== LF) throw new HttpError("chunk data longer than its size");
        this.#state = sizeDigits;
        this.#digits = this.#size = this.#lineBytes = 0;
        return;
      case trailerStart:
      case trailer:
        this.#countTrailer();
        if (b === CR) this.#state = this.#state === trailerStart ? endLf : trailerLf;
        else if (b === LF) throw new HttpError("bare LF in the trailers");
        else this.#state = trailer;
        return;
      case trailerLf:
        this.#countTrailer();
        if (b !== LF) throw new HttpError("CR without LF in the trailers");
        this.#state = trailerStart;
        return;
      case endLf:
        if (b !== LF) throw new HttpError("CR without LF at the end of a chunked body");
        this.#state = ended;
        return;
    }
  }

  /** The byte after a size and its whitespace: an extension, or the line's CR. */
  #afterSize(b: number): void {
    if (b === 0x3b) this.#state = extension;
    else if (b === CR) this.#state = sizeLf;
    else if (b === LF) throw new HttpError("bare LF in a chunk size line");
    else throw new HttpError("bad chunk size line");
  }

  #countLine(): void {
    if (++this.#lineBytes > maxChunkLineBytes) throw new HttpError("chunk line too long");
  }

  #countTrailer(): void {
    if (++this.#trailerBytes > maxTrailerBytes) throw new HttpError("trailers too large");
  }
}
