/**
 * A buffered reader for framed codecs: exact-length reads and line reads that are correct
 * on any split of the input (one byte per read, or many frames per read).
 * @module
 */

import type { Duplex } from "./duplex.ts";
import { ProtocolError } from "./errors.ts";

/** Bytes read from the source at most per syscall while parsing. */
const defaultChunkBytes = 16 * 1024;

/** What `takeBuffered` hands over when nothing was read ahead (length 0: nothing to change). */
const noBytes = new Uint8Array(0);

/** The peer closed before a complete frame arrived. */
export class UnexpectedEofError extends ProtocolError {
  override name = "UnexpectedEofError";
  constructor(message = "connection closed mid-frame") {
    super(message, "eof");
  }
}

/**
 * Reads framed data from a Duplex, buffering what arrives beyond the current frame.
 *
 * After a handshake, `takeBuffered()` hands over the bytes read past its end so they can be
 * prepended to the payload stream (see `withPrefix`).
 */
export class BufferedReader {
  #src: Pick<Duplex, "read">;
  #buf: Uint8Array;
  #start = 0;
  #end = 0;

  /**
   * Read from `src`, `chunkBytes` at a time at first; or into `buffer` (a pooled one the
   * caller owns again once it is done with the reader: every read is awaited by then, and
   * what the reader hands out is a copy, except `readBufferedLine` without copy).
   */
  constructor(src: Pick<Duplex, "read">, chunkBytes: number | Uint8Array = defaultChunkBytes) {
    this.#src = src;
    this.#buf = typeof chunkBytes === "number" ? new Uint8Array(chunkBytes) : chunkBytes;
  }

  /** Number of bytes buffered and not yet consumed. */
  get buffered(): number {
    return this.#end - this.#start;
  }

  /**
   * Read more from the source (one read, appended to what is buffered); false at EOF. For a
   * codec that decodes from {@linkcode peek} and waits only when a frame is incomplete: one
   * async frame per read instead of a chain of them per field.
   */
  async fill(): Promise<boolean> {
    return this.filled(await this.#src.read(this.#room()));
  }

  /**
   * {@linkcode fill} for a caller that reads from the source itself, in its own async frame
   * (no frame of `fill`'s per read, as a handshake that waits for the peer's next message
   * does): `if (!r.filled(await src.read(r.room()))) ...`. The room after the buffered bytes;
   * read into it once, then pass what the read returned to {@linkcode filled}.
   */
  room(): Uint8Array {
    return this.#room();
  }

  /** Count the bytes a read into {@linkcode room} returned; false at EOF (null). */
  filled(n: number | null): boolean {
    if (n === null) return false;
    this.#end += n;
    return true;
  }

  /**
   * Room after the buffered bytes for the next read: they are moved to the front, or the
   * buffer doubles, when it is full. (The read itself stays in the caller's frame: one async
   * frame per fill, not two.)
   */
  #room(): Uint8Array {
    if (this.#start > 0 && this.#start === this.#end) this.#start = this.#end = 0;
    if (this.#end === this.#buf.length) {
      const live = this.#end - this.#start;
      if (this.#start > 0) {
        this.#buf.copyWithin(0, this.#start, this.#end);
      } else {
        const bigger = new Uint8Array(this.#buf.length * 2);
        bigger.set(this.#buf.subarray(this.#start, this.#end));
        this.#buf = bigger;
      }
      this.#start = 0;
      this.#end = live;
    }
    return this.#buf.subarray(this.#end);
  }

  /** Ensure at least `n` bytes are buffered; false if EOF came first. */
  async #ensure(n: number): Promise<boolean> {
    while (this.#end - this.#start < n) {
      if (this.#buf.length - this.#start < n) {
        // Make room for a frame larger than the buffer.
        const bigger = new Uint8Array(Math.max(n, this.#buf.length * 2));
        bigger.set(this.#buf.subarray(this.#start, this.#end));
        this.#end -= this.#start;
        this.#start = 0;
        this.#buf = bigger;
      }
      const got = await this.#src.read(this.#room());
      if (got === null) return false;
      this.#end += got;
    }
    return true;
  }

  /**
   * Exactly `n` bytes (a copy the caller owns). Rejects with `UnexpectedEofError` if the
   * source ends first. Callers bound `n` before calling: never pass an untrusted length.
   * With `copy` false the bytes are a view into the buffer, valid only until the next call on
   * this reader (for a codec that decodes them at once: a copy is an allocation per field).
   */
  readExact(n: number, copy = true): Promise<Uint8Array> {
    // Buffered already (a handshake's fields after its first read): no async frame.
    if (this.#end - this.#start >= n) return Promise.resolve(this.#take(n, copy));
    return this.#readExactSlow(n, copy);
  }

  async #readExactSlow(n: number, copy: boolean): Promise<Uint8Array> {
    if (!(await this.#ensure(n))) throw new UnexpectedEofError();
    return this.#take(n, copy);
  }

  /** The next `n` buffered bytes (a copy, or a view), consumed. */
  #take(n: number, copy: boolean): Uint8Array {
    const out = copy
      ? this.#buf.slice(this.#start, this.#start + n)
      : this.#buf.subarray(this.#start, this.#start + n);
    this.#start += n;
    return out;
  }

  /** One byte. */
  readByte(): Promise<number> {
    if (this.#end > this.#start) return Promise.resolve(this.#buf[this.#start++]);
    return this.#readByteSlow();
  }

  async #readByteSlow(): Promise<number> {
    if (!(await this.#ensure(1))) throw new UnexpectedEofError();
    return this.#buf[this.#start++];
  }

  /**
   * Like `readExact` but resolves `null` on a clean EOF before the first byte, so a
   * frame loop can tell "peer closed between frames" from "peer closed mid-frame".
   */
  async readExactOrEof(n: number, copy = true): Promise<Uint8Array | null> {
    if (this.#end === this.#start && !(await this.fill())) return null;
    return await this.readExact(n, copy);
  }

  /**
   * One line terminated by `\n` (a preceding `\r` is stripped), without the terminator.
   * Rejects with a ProtocolError if no terminator appears within `maxBytes`.
   */
  async readLine(maxBytes: number): Promise<Uint8Array> {
    let scanned = 0; // bytes already searched: a line dribbled in byte by byte stays linear
    while (true) {
      const line = this.#bufferedLine(maxBytes, scanned);
      if (line) return line;
      scanned = this.#end - this.#start;
      const got = await this.#src.read(this.#room());
      if (got === null) throw new UnexpectedEofError();
      this.#end += got;
    }
  }

  /**
   * Like `readLine`, but only from what is already buffered: `undefined` when no whole line
   * is there yet (nothing consumed). Parsers call it first so that a head that arrived in
   * one read is parsed without a promise per line. With `copy` false the line is a view
   * into the buffer, valid only until the next read (for a caller that decodes it at once).
   */
  readBufferedLine(maxBytes: number, copy = true): Uint8Array | undefined {
    return this.#bufferedLine(maxBytes, 0, copy);
  }

  #bufferedLine(maxBytes: number, skip: number, copy = true): Uint8Array | undefined {
    const idx = this.#buf.subarray(this.#start + skip, this.#end).indexOf(0x0a);
    if (idx < 0) {
      if (this.#end - this.#start > maxBytes) throw new ProtocolError("line too long", "too-long");
      return undefined;
    }
    const nl = this.#start + skip + idx;
    if (nl - this.#start > maxBytes) throw new ProtocolError("line too long", "too-long");
    const lineEnd = nl > this.#start && this.#buf[nl - 1] === 0x0d ? nl - 1 : nl;
    const line = copy
      ? this.#buf.slice(this.#start, lineEnd)
      : this.#buf.subarray(this.#start, lineEnd);
    this.#start = nl + 1;
    return line;
  }

  /**
   * Read until at least `n` bytes are buffered; false if the source ended first. With `peek`
   * and `skip`, a parser reads a frame's fields from the buffer without a promise per field,
   * awaiting only when bytes are missing. Callers bound `n` (never an untrusted length).
   */
  fillTo(n: number): Promise<boolean> {
    return this.#end - this.#start >= n ? Promise.resolve(true) : this.#ensure(n);
  }

  /** Consume `n` buffered bytes (at most what is buffered). */
  skip(n: number): void {
    this.#start += Math.min(n, this.#end - this.#start);
  }

  /**
   * The buffered byte `i` places ahead (not consumed; `i` < `buffered`, else undefined): a
   * field read without the view `peek()` makes for it (an allocation per call).
   */
  at(i: number): number | undefined {
    return i < this.#end - this.#start ? this.#buf[this.#start + i] : undefined;
  }

  /** A view of the buffered bytes (not consumed), valid until the next read. */
  peek(): Uint8Array {
    return this.#buf.subarray(this.#start, this.#end);
  }

  /**
   * Put `p` back in front of the buffered bytes: what a caller that read straight from the
   * source (for large reads) got past the end of its frame. `p` is copied.
   */
  unread(p: Uint8Array): void {
    if (p.length === 0) return;
    const live = this.#end - this.#start;
    if (live === 0 && p.length <= this.#buf.length) {
      this.#buf.set(p);
    } else {
      const next = new Uint8Array(Math.max(this.#buf.length, p.length + live));
      next.set(p);
      next.set(this.#buf.subarray(this.#start, this.#end), p.length);
      this.#buf = next;
    }
    this.#start = 0;
    this.#end = p.length + live;
  }

  /** Hand over (and forget) every byte read ahead of the current position. */
  takeBuffered(): Uint8Array {
    if (this.#start === this.#end) return noBytes;
    const out = this.#buf.slice(this.#start, this.#end);
    this.#start = this.#end = 0;
    return out;
  }
}
