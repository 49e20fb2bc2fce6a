/**
 * The yamux wire vocabulary (like hashicorp/yamux `const.go`): errors, frame types, flags,
 * go-away codes, the 12-byte header, and an incremental frame decoder that is correct on
 * any split of the input.
 * @module
 */

/** The only protocol version yamux defines. */
export const protoVersion = 0;

/** Field sizes of the header, in bytes. */
const sizeOfVersion = 1;
const sizeOfType = 1;
const sizeOfFlags = 2;
const sizeOfStreamId = 4;
const sizeOfLength = 4;
/** Size of every frame header: version | type | flags | stream id | length. */
export const headerBytes: number = sizeOfVersion + sizeOfType + sizeOfFlags + sizeOfStreamId +
  sizeOfLength;

/** Frame types (header byte 1). */
export const FrameType = {
  /** Payload of `length` bytes follows. */
  data: 0,
  /** `length` is a window delta (credit) for the stream; no payload. */
  windowUpdate: 1,
  /** Stream 0; `length` is an opaque value echoed back with ACK. */
  ping: 2,
  /** Stream 0; `length` is a {@linkcode GoAwayCode}: the sender takes no new streams. */
  goAway: 3,
} as const;
/** A frame type value. */
export type FrameTypeValue = typeof FrameType[keyof typeof FrameType];

/** Header flags (u16, big-endian). */
export const Flag = {
  /** Open a stream (may carry data); on ping: a request. */
  syn: 1,
  /** Acknowledge a stream open; on ping: the reply. */
  ack: 2,
  /** Half-close: the sender writes no more on this stream. */
  fin: 4,
  /** Abort the stream in both directions. */
  rst: 8,
} as const;

/** Go-away codes (the `length` field of a go-away frame). */
export const GoAwayCode = {
  normal: 0,
  protocolError: 1,
  internalError: 2,
} as const;

/** The per-stream window every yamux peer assumes at open, in bytes. */
export const defaultWindowBytes = 256 * 1024;

/** Largest value of the u32 stream id and length fields. */
export const maxU32 = 0xffff_ffff;

/** Machine-readable reasons of {@linkcode MuxError}. */
export type MuxErrorReason =
  | "bad-version" // a frame with a version other than 0
  | "bad-type" // a frame type outside data/window update/ping/go away
  | "frame-too-large" // a data frame longer than maxFrameBytes
  | "bad-stream-id" // stream id 0 for a stream frame, or a SYN with our own id parity
  | "duplicate-stream" // a SYN for a stream id that is already open
  | "window-exceeded" // the peer sent more than the receive window it was given
  | "protocol" // any other protocol violation
  | "reset" // the stream was reset (RST) by the peer or locally
  | "stream-closed" // write after closeWrite/close, or an operation on a closed stream
  | "session-closed" // the session ended (go away, EOF, error, close())
  | "goaway" // the peer sent go away: it takes no new streams
  | "too-many-streams" // maxStreams reached when opening
  | "streams-exhausted" // no stream ids left on this session
  | "keepalive-timeout" // no ping reply or other traffic within keepaliveTimeoutMs
  | "remote-error"; // the peer sent go away with protocol or internal error

/** A mux failure with a typed reason. */
export class MuxError extends Error {
  /** Always "MuxError". */
  override name = "MuxError";
  /** A mux error: `reason` says what went wrong for code, `message` for people. */
  constructor(readonly reason: MuxErrorReason, message: string, options?: ErrorOptions) {
    super(message, options);
  }
}

/** A decoded frame header. */
export interface FrameHeader {
  version: number;
  type: number;
  flags: number;
  streamId: number;
  length: number;
}

/** Write a header at `buf[off..off+12)` (big-endian, version 0). */
export function encodeHeader(
  buf: Uint8Array,
  off: number,
  type: number,
  flags: number,
  streamId: number,
  length: number,
): void {
  buf[off] = protoVersion;
  buf[off + 1] = type;
  buf[off + 2] = flags >>> 8;
  buf[off + 3] = flags & 0xff;
  buf[off + 4] = streamId >>> 24;
  buf[off + 5] = (streamId >>> 16) & 0xff;
  buf[off + 6] = (streamId >>> 8) & 0xff;
  buf[off + 7] = streamId & 0xff;
  buf[off + 8] = length >>> 24;
  buf[off + 9] = (length >>> 16) & 0xff;
  buf[off + 10] = (length >>> 8) & 0xff;
  buf[off + 11] = length & 0xff;
}

/** A whole frame (header plus optional payload) as one array: tests and tools. */
export function encodeFrame(
  type: number,
  flags: number,
  streamId: number,
  lengthOrPayload: number | Uint8Array,
): Uint8Array {
  const payload = typeof lengthOrPayload === "number" ? null : lengthOrPayload;
  const out = new Uint8Array(headerBytes + (payload?.length ?? 0));
  encodeHeader(
    out,
    0,
    type,
    flags,
    streamId,
    payload ? payload.length : lengthOrPayload as number,
  );
  if (payload) out.set(payload, headerBytes);
  return out;
}

function u32(b: Uint8Array, o: number): number {
  return ((b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]) >>> 0;
}

/** Read a header from `buf[off..off+12)` without validating it. */
export function decodeHeader(buf: Uint8Array, off = 0): FrameHeader {
  return {
    version: buf[off],
    type: buf[off + 1],
    flags: (buf[off + 2] << 8) | buf[off + 3],
    streamId: u32(buf, off + 4),
    length: u32(buf, off + 8),
  };
}

/** Receiver of decoded frames, called synchronously from {@linkcode FrameDecoder.push}. */
export interface FrameSink {
  /** A validated header. For data frames `length` payload bytes follow via `onPayload`. */
  onFrame(type: number, flags: number, streamId: number, length: number): void;
  /**
   * A piece of the current data frame's payload; `last` marks its final piece. The view is
   * only valid during the call (the decoder's caller reuses its buffer): copy what you keep.
   */
  onPayload(chunk: Uint8Array, last: boolean): void;
}

/**
 * Incremental yamux frame decoder. Feed it whatever a read returned; it calls the sink per
 * header and per payload piece, never buffering payloads (so memory is bounded by 12 bytes
 * whatever the peer sends). Throws {@linkcode MuxError} on a bad version, type or length;
 * the decoder is unusable afterwards (the session goes away).
 */
export class FrameDecoder {
  #hdr = new Uint8Array(headerBytes);
  #hdrLen = 0;
  #payloadLeft = 0;

  /** @param maxFrameBytes largest data payload accepted. */
  constructor(readonly maxFrameBytes: number) {}

  /** Payload bytes of the current data frame still to come (0 between frames). */
  get payloadLeft(): number {
    return this.#payloadLeft;
  }

  /** Bytes still to come until the next header is complete: this frame's payload left plus
   * the header's missing bytes. Reading exactly this many never reads into the next payload. */
  get toNextHeader(): number {
    return this.#payloadLeft + headerBytes - this.#hdrLen;
  }

  /**
   * Account `n` payload bytes of the current data frame that the caller read itself (straight
   * into a stream reader's buffer). Returns whether the frame is now complete.
   */
  skipPayload(n: number): boolean {
    if (n > this.#payloadLeft) throw new RangeError("skipPayload past the frame");
    this.#payloadLeft -= n;
    return this.#payloadLeft === 0;
  }

  /**
   * Decode `chunk[start..end)` completely, calling `sink` for every header and payload piece.
   * (Bounds instead of a subarray: the session decodes a part of its read buffer per read.)
   */
  push(chunk: Uint8Array, sink: FrameSink, start = 0, end: number = chunk.length): void {
    let off = start;
    while (off < end) {
      if (this.#payloadLeft > 0) {
        const take = Math.min(this.#payloadLeft, end - off);
        this.#payloadLeft -= take;
        sink.onPayload(chunk.subarray(off, off + take), this.#payloadLeft === 0);
        off += take;
        continue;
      }
      let h: Uint8Array;
      let ho: number;
      if (this.#hdrLen === 0 && end - off >= headerBytes) {
        h = chunk;
        ho = off;
        off += headerBytes;
      } else {
        const take = Math.min(headerBytes - this.#hdrLen, end - off);
        this.#hdr.set(chunk.subarray(off, off + take), this.#hdrLen);
        this.#hdrLen += take;
        off += take;
        if (this.#hdrLen < headerBytes) return;
        this.#hdrLen = 0;
        h = this.#hdr;
        ho = 0;
      }
      const version = h[ho];
      const type = h[ho + 1];
      if (version !== protoVersion) {
        throw new MuxError("bad-version", `unsupported protocol version ${version}`);
      }
      if (type > FrameType.goAway) throw new MuxError("bad-type", `unknown frame type ${type}`);
      const flags = (h[ho + 2] << 8) | h[ho + 3];
      const streamId = u32(h, ho + 4);
      const length = u32(h, ho + 8);
      if (type === FrameType.data) {
        if (length > this.maxFrameBytes) {
          throw new MuxError(
            "frame-too-large",
            `data frame of ${length} bytes exceeds ${this.maxFrameBytes}`,
          );
        }
        this.#payloadLeft = length;
      }
      sink.onFrame(type, flags, streamId, length);
    }
  }
}
