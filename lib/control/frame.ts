/**
 * Control framing: a u32 big-endian length followed by that many bytes of UTF-8 JSON.
 * `ControlReader` decodes and validates frames from a `BufferedReader` (correct on any
 * split of the input); `ControlWriter` encodes and serialises concurrent sends so frames
 * never interleave.
 * @module
 */

import { concatBytes } from "../net/bytes.ts";
import { type Duplex, viewReader, withPrefix, writeAll } from "../net/duplex.ts";
import { BufferedReader, UnexpectedEofError } from "../net/reader.ts";
import { type CompactCodec, compactFlag, compactMaxBodyBytes } from "./compact.ts";
import { ControlError, type Message, type Outgoing, type Protocol } from "./message.ts";

/** Size of the length prefix. */
export const controlLengthPrefixBytes = 4;
/** Default largest accepted message body. Control messages are small; 64 KiB is generous. */
export const defaultMaxMessageBytes = 64 * 1024;
/** Upper bound any configuration may choose for `maxMessageBytes`. */
export const maxMessageBytesLimit = 16 * 1024 * 1024;

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false });

function checkMax(maxBytes: number): number {
  if (!Number.isSafeInteger(maxBytes) || maxBytes < 2 || maxBytes > maxMessageBytesLimit) {
    throw new RangeError(`maxMessageBytes must be within 2..${maxMessageBytesLimit}`);
  }
  return maxBytes;
}

/**
 * Encode `msg` as one frame. Throws `ControlError("too-large")` if its JSON exceeds
 * `maxBytes` (a local bug: the peer would reject it).
 */
export function encodeFrame(msg: object, maxBytes = defaultMaxMessageBytes): Uint8Array {
  return encodeJson(JSON.stringify(msg), maxBytes);
}

/**
 * The JSON of `{ v: version, ...msg }` without building that object: `"v"` spliced in front
 * of `msg`'s own JSON gives the same text, key for key (a spread object and its stringify
 * were one allocation and one property walk more per frame, and depot sends several frames
 * per connection). A `msg` carrying `v` itself, with an integer-like key (those come first in
 * any object, before `v`) or serialising to `{}` goes the slow way.
 */
export function versionedJson(version: number, msg: object): string {
  const json = JSON.stringify(msg);
  const first = json.charCodeAt(2);
  if (
    json.length < 3 || json.charCodeAt(0) !== 0x7b || (first >= 0x30 && first <= 0x39) ||
    Object.hasOwn(msg, "v")
  ) {
    return JSON.stringify({ v: version, ...msg });
  }
  return `{"v":${version},${json.slice(1)}`;
}

function encodeJson(json: string, maxBytes: number): Uint8Array {
  // One allocation, the JSON encoded in place (UTF-8 takes at most 3 bytes per UTF-16 unit):
  // encoding to a buffer of its own and copying it behind the prefix cost an allocation and
  // a copy per frame, and depot writes several per connection.
  const frame = new Uint8Array(controlLengthPrefixBytes + 3 * json.length);
  const len = encoder.encodeInto(json, frame.subarray(controlLengthPrefixBytes)).written;
  if (len > maxBytes) {
    throw new ControlError("too-large", `message of ${len} bytes exceeds ${maxBytes}`);
  }
  frame[0] = len >>> 24;
  frame[1] = (len >>> 16) & 0xff;
  frame[2] = (len >>> 8) & 0xff;
  frame[3] = len & 0xff;
  return frame.subarray(0, controlLengthPrefixBytes + len);
}

/**
 * Read one frame and parse its JSON (boxed, since `null` is valid JSON), or `null` on a
 * clean EOF between frames.
 * The length is checked against `maxBytes` before any body byte is buffered.
 */
export async function readFrameJson(
  r: BufferedReader,
  maxBytes = defaultMaxMessageBytes,
): Promise<{ json: unknown } | null> {
  const len = await readPrefix(r);
  if (len === null) return null;
  return { json: parseJson(await readBody(r, checkLength(len, maxBytes))) };
}

/** The next frame's u32 prefix, or `null` on a clean EOF between frames. */
async function readPrefix(r: BufferedReader): Promise<number | null> {
  let head: Uint8Array | null;
  try {
    // A view: the prefix is decoded before the next read (a copy was an allocation per frame).
    head = await r.readExactOrEof(controlLengthPrefixBytes, false);
  } catch (err) {
    throw truncated(err);
  }
  if (head === null) return null;
  return ((head[0] << 24) | (head[1] << 16) | (head[2] << 8) | head[3]) >>> 0;
}

/** A JSON frame's length, checked before any body byte is buffered. */
function checkLength(len: number, maxBytes: number): number {
  if (len > maxBytes) {
    throw new ControlError("too-large", `frame of ${len} bytes exceeds ${maxBytes}`);
  }
  if (len === 0) throw new ControlError("bad-json", "empty frame");
  return len;
}

/** A body of `len` bytes, as a view valid until the next read of `r`. */
async function readBody(r: BufferedReader, len: number): Promise<Uint8Array> {
  try {
    return await r.readExact(len, false);
  } catch (err) {
    throw truncated(err);
  }
}

function truncated(err: unknown): unknown {
  return err instanceof UnexpectedEofError
    ? new ControlError("truncated", "connection closed inside a frame", { cause: err })
    : err;
}

function parseJson(body: Uint8Array): unknown {
  let text: string;
  try {
    text = decoder.decode(body);
  } catch (err) {
    throw new ControlError("bad-json", "frame is not valid UTF-8", { cause: err });
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new ControlError("bad-json", "frame is not valid JSON", { cause: err });
  }
}

/** Options of {@linkcode ControlReader} and {@linkcode ControlWriter}. */
export interface FrameOptions {
  /** Largest message body accepted or sent. @default 65536 */
  maxMessageBytes?: number;
}

/** Options of a reader or writer whose protocol has compact frames (see compact.ts). */
export interface CompactOptions<M extends Message> extends FrameOptions {
  /** Read (or send) compact frames of this codec: only once both sides agreed. */
  compact?: CompactCodec<M>;
}

/**
 * Reads validated messages of `protocol` from a `BufferedReader`. Pure decoding: it
 * throws `ControlError` on any violation and leaves replying/closing to the caller
 * (see `ControlConn`). After a handshake, `reader.takeBuffered()` yields the payload bytes
 * read past the last frame.
 */
export class ControlReader<M extends Message> {
  /** Largest accepted message body. */
  readonly maxMessageBytes: number;
  /**
   * Compact frames accepted besides JSON ones (set once the peer agreed to send them); without
   * it a compact prefix reads as an over-long frame.
   */
  compact: CompactCodec<M> | undefined;
  /** Read frames of `protocol` from `reader`. */
  constructor(
    readonly reader: BufferedReader,
    readonly protocol: Protocol<M>,
    opts: CompactOptions<M> = {},
  ) {
    this.maxMessageBytes = checkMax(opts.maxMessageBytes ?? defaultMaxMessageBytes);
    this.compact = opts.compact;
  }

  /** The next message, or `null` on a clean EOF between frames. */
  async read(): Promise<M | null> {
    // Decoded from what is buffered, reading more only while the frame is incomplete: a frame
    // mostly arrives in one read, and a chain of async reads per field (prefix, body) cost
    // promises and frames several times per depot connection.
    while (true) {
      const msg = this.#decodeBuffered();
      if (msg !== undefined) return msg;
      const had = this.reader.buffered;
      if (!(await this.reader.fill())) {
        if (had === 0) return null;
        throw truncated(new UnexpectedEofError());
      }
    }
  }

  /**
   * The message whose frame is buffered whole (consumed), or undefined when more must be read.
   * The length is checked as soon as the prefix is there, before any body byte is waited for.
   */
  #decodeBuffered(): M | undefined {
    const b = this.reader.peek();
    const frameBytes = wholeFrameBytes(b, this.maxMessageBytes, this.compact);
    if (frameBytes < 0) return undefined;
    const msg = decodeWhole(b, frameBytes, this.protocol, this.compact);
    this.reader.skip(frameBytes);
    return msg;
  }
}

/**
 * The length of the frame `b` starts with when all of it is in `b`, else -1. Its declared
 * length is checked as soon as the prefix is there, before any body byte is waited for.
 */
function wholeFrameBytes<M extends Message>(
  b: Uint8Array,
  maxMessageBytes: number,
  compact: CompactCodec<M> | undefined,
): number {
  if (b.length < controlLengthPrefixBytes) return -1;
  const prefix = ((b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]) >>> 0;
  const isCompact = prefix >= compactFlag && compact !== undefined;
  const len = isCompact ? prefix & compactMaxBodyBytes : prefix;
  if (isCompact) {
    if (len > maxMessageBytes) {
      throw new ControlError("too-large", `frame of ${len} bytes exceeds ${maxMessageBytes}`);
    }
  } else checkLength(len, maxMessageBytes);
  const frameBytes = controlLengthPrefixBytes + len;
  return b.length < frameBytes ? -1 : frameBytes;
}

/** The message of the whole frame `b[0, frameBytes)` (see {@linkcode wholeFrameBytes}). */
function decodeWhole<M extends Message>(
  b: Uint8Array,
  frameBytes: number,
  protocol: Protocol<M>,
  compact: CompactCodec<M> | undefined,
): M {
  const body = b.subarray(controlLengthPrefixBytes, frameBytes);
  if (b[0] >= 0x80 && compact) return compact.decode(b[0] & 0x7f, body);
  return protocol.check(parseJson(body));
}

/** What {@linkcode readFirstMessage} read. */
export interface FirstMessage<M extends Message> {
  /** The message, or `null` when the peer ended the connection before sending any byte. */
  msg: M | null;
  /** The bytes that came after the message (a copy; mostly none): forward them first. */
  leftover: Uint8Array;
}

/** What `leftover` is when nothing came after the first message. */
const noBytes = new Uint8Array(0);

/**
 * The first message of a connection or stream whose first bytes are `v`, decoded at once (no
 * read, no turn), with a copy of the bytes past it; `undefined` when `v` holds only part of
 * the frame (read the rest with {@linkcode readFirstMessage} on the bytes again). Throws as
 * `readFirstMessage` does for a frame that is too large or does not decode. For a first
 * frame that came whole with a stream's SYN (lib/mux `Stream.takeView`).
 */
export function firstMessageIn<M extends Message>(
  v: Uint8Array,
  protocol: Protocol<M>,
  opts: CompactOptions<M> = {},
): FirstMessage<M> | undefined {
  const frameBytes = wholeFrameBytes(
    v,
    checkMax(opts.maxMessageBytes ?? defaultMaxMessageBytes),
    opts.compact,
  );
  if (frameBytes < 0) return undefined;
  const msg = decodeWhole(v, frameBytes, protocol, opts.compact);
  return { msg, leftover: v.length > frameBytes ? v.slice(frameBytes) : noBytes };
}

/**
 * Read the first message of a fresh connection or stream, as a {@linkcode ControlReader}
 * would, and the bytes read past it. For a stream that lends what it received (`ViewReader`:
 * a lib/mux stream, whose opener sent the message with its SYN, as depot-server's requests
 * and depot-local's answers on `--mux` streams are) the frame is decoded from the lent bytes:
 * no reader, buffer or copy of its own (they were an object, a 1 KiB buffer and a copy per
 * depot `--mux` connection on each side). Otherwise, or when the lent bytes hold only part
 * of the frame, it reads through a BufferedReader of `chunkBytes`. Throws as
 * `ControlReader.read` does (`ControlError` on violations, "truncated" at EOF mid-frame).
 */
export async function readFirstMessage<M extends Message>(
  conn: Duplex,
  protocol: Protocol<M>,
  opts: CompactOptions<M> = {},
  chunkBytes = 1024,
): Promise<FirstMessage<M>> {
  checkMax(opts.maxMessageBytes ?? defaultMaxMessageBytes); // a bad maximum fails before a read
  const views = viewReader(conn);
  let src = conn;
  if (views) {
    const v = await views.readView();
    if (v === null) return { msg: null, leftover: noBytes };
    try {
      const first = firstMessageIn(v, protocol, opts);
      if (first) return first;
      src = withPrefix(conn, v.slice()); // part of a frame: read the rest the usual way
    } finally {
      views.releaseView();
    }
  }
  const buffered = new BufferedReader(src, chunkBytes);
  const msg = await new ControlReader(buffered, protocol, opts).read();
  return { msg, leftover: buffered.takeBuffered() };
}

/**
 * Read one message of `protocol` from `conn` and nothing past its frame: the prefix, then the
 * body, each read exactly, so whatever follows stays in `conn` for its next reader. For a first
 * message with payload right behind it on a lib/mux stream (the tunnel's ControlMsg and the
 * request): that payload is then read from the stream's own queue as it lies, with no 16 KiB
 * reader buffer, no leftover copy and no prefixing wrapper around the stream for the rest of
 * its life. `null` on a clean EOF before the frame; otherwise throws as
 * {@linkcode ControlReader.read} does (`ControlError`: "too-large" from the prefix alone,
 * before any body byte is read, "bad-json", a schema error, "truncated" at EOF mid-frame).
 */
export async function readMessageExact<M extends Message>(
  conn: Pick<Duplex, "read">,
  protocol: Protocol<M>,
  opts: FrameOptions = {},
): Promise<M | null> {
  const max = checkMax(opts.maxMessageBytes ?? defaultMaxMessageBytes);
  const prefix = new Uint8Array(controlLengthPrefixBytes);
  const got = await readFull(conn, prefix);
  if (got === 0) return null;
  if (got < controlLengthPrefixBytes) throw truncated(new UnexpectedEofError());
  const len = checkLength(
    ((prefix[0] << 24) | (prefix[1] << 16) | (prefix[2] << 8) | prefix[3]) >>> 0,
    max,
  );
  const body = new Uint8Array(len);
  if (await readFull(conn, body) < len) throw truncated(new UnexpectedEofError());
  return protocol.check(parseJson(body));
}

/** Read into all of `p` unless the source ends first; how many bytes were read. */
async function readFull(conn: Pick<Duplex, "read">, p: Uint8Array): Promise<number> {
  let n = 0;
  while (n < p.length) {
    const k = await conn.read(n === 0 ? p : p.subarray(n));
    if (k === null || k <= 0) break; // (0 only from a broken source: not waited on forever)
    n += k;
  }
  return n;
}

/**
 * Writes messages of `protocol`, one frame each, in call order: concurrent `send` calls
 * are queued so their bytes never interleave. Frames sent while a write is in flight leave
 * together in the next write (no delay: a frame with nothing in flight goes at once), so a
 * busy connection's small frames (depot's `end{id}` per request) cost one write per batch, not
 * one each. After a write fails every later send rejects with that error.
 */
export class ControlWriter<M extends Message> {
  /** Largest message body sent. */
  readonly maxMessageBytes: number;
  #busy = false;
  /** Frames waiting for the write in flight, and the promise their senders hold. */
  #queued:
    | { frames: Uint8Array[]; done: Promise<void>; resolve(): void; reject(e: Error): void }
    | undefined;
  #failed: Error | undefined;

  /** Messages with a compact form go as compact frames (set once the peer reads them). */
  compact: CompactCodec<M> | undefined;

  /** Write frames of `protocol` to `conn`. */
  constructor(
    readonly conn: Pick<Duplex, "write">,
    readonly protocol: Protocol<M>,
    opts: CompactOptions<M> = {},
  ) {
    this.maxMessageBytes = checkMax(opts.maxMessageBytes ?? defaultMaxMessageBytes);
    this.compact = opts.compact;
  }

  /** Queue `msg` (its `v` is added) and resolve when its frame is fully written. */
  send(msg: Outgoing<M>): Promise<void> {
    const type = (msg as unknown as { type: string }).type;
    if (!this.protocol.has(type)) {
      return Promise.reject(new ControlError("unknown-type", `cannot send type ${type}`));
    }
    let frame: Uint8Array | undefined;
    try {
      frame = this.compact?.encode(msg) ??
        encodeJson(versionedJson(this.protocol.version, msg), this.maxMessageBytes);
    } catch (err) {
      return Promise.reject(err);
    }
    if (this.#failed) return Promise.reject(this.#failed);
    if (!this.#busy) return this.#write([frame]);
    if (this.#queued) {
      this.#queued.frames.push(frame);
      return this.#queued.done;
    }
    let resolve!: () => void;
    let reject!: (e: Error) => void;
    const done = new Promise<void>((ok, fail) => (resolve = ok, reject = fail));
    this.#queued = { frames: [frame], done, resolve, reject };
    return done;
  }

  /** Write `frames` in one write, then the frames queued meanwhile. */
  async #write(frames: Uint8Array[]): Promise<void> {
    this.#busy = true;
    try {
      await writeAll(this.conn, frames.length === 1 ? frames[0] : concatBytes(...frames));
    } catch (err) {
      this.#failed ??= new ControlError("closed", "control connection write failed", {
        cause: err,
      });
      throw this.#failed;
    } finally {
      this.#busy = false;
      const next = this.#queued;
      this.#queued = undefined;
      if (next && this.#failed) next.reject(this.#failed);
      else if (next) this.#write(next.frames).then(next.resolve, next.reject);
    }
  }
}

export { BufferedReader };
