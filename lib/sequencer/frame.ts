/**
 * The sequencer's wire vocabulary: frame types, sizes, limits, encoders and an incremental
 * decoder. Every integer is big-endian; 64-bit fields hold JS-safe integers (< 2^53).
 * See README.md for the table.
 * @module
 */

import { ProtocolError } from "../net/errors.ts";

/** Frame type byte. */
export const SeqFrameType = {
  /** A numbered chunk of one direction's byte stream. */
  data: 0,
  /** The end of one direction (half-close); numbered like data so it is reliable. */
  fin: 1,
  /** Path-level received bytes, session-level cumulative seq and NACKed ranges. */
  ack: 2,
  /** Liveness and RTT: a timestamp echoed back with the reply flag. */
  heartbeat: 3,
  /** First frame of a path (client to server): session id, token, path id. */
  hello: 4,
  /** The server's answer to hello: a status byte. */
  welcome: 5,
  /** Abort the whole session (sent on every path before closing). */
  reset: 6,
} as const;
/** One of {@linkcode SeqFrameType}'s values. */
export type SeqFrameTypeCode = typeof SeqFrameType[keyof typeof SeqFrameType];

/** Protocol version carried in hello. */
export const sequencerVersion: number = 1;
/** Session id length: 128 random bits. */
export const sessionIdBytes: number = 16;
/** Header of a data frame: type u8 | seq u64 | len u32. */
export const dataHeaderBytes: number = 1 + 8 + 4;
/** A fin frame: type u8 | seq u64. */
export const finFrameBytes: number = 1 + 8;
/** Fixed part of an ack: type u8 | pathBytes u64 | cum u64 | count u16. */
export const ackHeaderBytes: number = 1 + 8 + 8 + 2;
/** One NACKed range in an ack: from u64 | to u64 (exclusive). */
export const nackRangeBytes: number = 16;
/** A heartbeat: type u8 | flags u8 | timestamp f64 (ms). */
export const heartbeatFrameBytes: number = 1 + 1 + 8;
/**
 * Fixed part of hello: type | version | flags | session id | path id u32 | receive bound
 * u32 | token len u16.
 */
export const helloHeaderBytes: number = 1 + 1 + 1 + sessionIdBytes + 4 + 4 + 2;
/** welcome: type u8 | status u8 | receive bound u32. */
export const welcomeFrameBytes: number = 1 + 1 + 4;
/** reset: type u8 | code u8. */
export const codeFrameBytes: number = 2;

/** Largest data payload a decoder accepts. @default 1 MiB */
export const defaultMaxDataBytes: number = 1 << 20;
/** Most NACK ranges in one ack. */
export const maxNackRanges: number = 1024;
/** Longest token in hello. */
export const maxTokenBytes: number = 1024;

/** Heartbeat flag: this heartbeat answers one of ours (its timestamp is our own). */
export const heartbeatReply: number = 1;
/** Hello flag: this path rejoins a session the server already accepted (never creates one). */
export const helloRejoin: number = 1;

/** Status in a welcome frame. */
export const WelcomeStatus = {
  ok: 0,
  badToken: 1,
  unknownSession: 2,
  limit: 3,
  badVersion: 4,
} as const;
/** One of {@linkcode WelcomeStatus}'s values. */
export type WelcomeStatusCode = typeof WelcomeStatus[keyof typeof WelcomeStatus];

/** Code in a reset frame. */
export const ResetCode = {
  /** The application closed the session before both directions finished. */
  aborted: 0,
  /** The peer broke the protocol. */
  protocol: 1,
  /** The server could not reach the target. */
  targetFailed: 2,
  /** The session had no path for longer than its grace period. */
  noPaths: 3,
} as const;

/** A half-open range of sequence numbers [from, to). */
export interface SeqRange {
  /** First missing seq. */
  from: number;
  /** Seq after the last missing one. */
  to: number;
}

/** A decoded frame. */
export type Frame =
  | { type: typeof SeqFrameType.data; seq: number; data: Uint8Array }
  | { type: typeof SeqFrameType.fin; seq: number }
  | { type: typeof SeqFrameType.ack; pathBytes: number; cum: number; nacks: SeqRange[] }
  | { type: typeof SeqFrameType.heartbeat; reply: boolean; ts: number }
  | {
    type: typeof SeqFrameType.hello;
    version: number;
    rejoin: boolean;
    sessionId: Uint8Array;
    pathId: number;
    /** Bytes the client buffers per session at most (the server's send window obeys it). */
    receiveBound: number;
    token: Uint8Array;
  }
  | { type: typeof SeqFrameType.welcome; status: number; receiveBound: number }
  | { type: typeof SeqFrameType.reset; code: number };

const two32 = 0x1_0000_0000;

function setU64(v: DataView, off: number, n: number): void {
  v.setUint32(off, Math.floor(n / two32));
  v.setUint32(off + 4, n >>> 0);
}

function getU64(v: DataView, off: number): number {
  const hi = v.getUint32(off);
  if (hi > 0x1f_ffff) throw new ProtocolError("64-bit field beyond 2^53", "bad-frame");
  return hi * two32 + v.getUint32(off + 4);
}

function view(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

/** Wire size of a data frame carrying `len` bytes (what path acks count). */
export function dataFrameBytes(len: number): number {
  return dataHeaderBytes + len;
}

/** Write a data frame into `out` at `off`; returns the bytes written. */
export function encodeDataInto(
  out: Uint8Array,
  off: number,
  seq: number,
  data: Uint8Array,
): number {
  const v = view(out);
  v.setUint8(off, SeqFrameType.data);
  setU64(v, off + 1, seq);
  v.setUint32(off + 9, data.length);
  out.set(data, off + dataHeaderBytes);
  return dataHeaderBytes + data.length;
}

/** A data frame. */
export function encodeData(seq: number, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(dataHeaderBytes + data.length);
  encodeDataInto(out, 0, seq, data);
  return out;
}

/** Write a fin frame into `out` at `off`; returns the bytes written. */
export function encodeFinInto(out: Uint8Array, off: number, seq: number): number {
  const v = view(out);
  v.setUint8(off, SeqFrameType.fin);
  setU64(v, off + 1, seq);
  return finFrameBytes;
}

/** A fin frame: `seq` is the number after the last data frame of this direction. */
export function encodeFin(seq: number): Uint8Array {
  const out = new Uint8Array(finFrameBytes);
  encodeFinInto(out, 0, seq);
  return out;
}

/** An ack frame. */
export function encodeAck(pathBytes: number, cum: number, nacks: readonly SeqRange[]): Uint8Array {
  const count = Math.min(nacks.length, maxNackRanges);
  const out = new Uint8Array(ackHeaderBytes + count * nackRangeBytes);
  const v = view(out);
  v.setUint8(0, SeqFrameType.ack);
  setU64(v, 1, pathBytes);
  setU64(v, 9, cum);
  v.setUint16(17, count);
  for (let i = 0; i < count; i++) {
    setU64(v, ackHeaderBytes + i * 16, nacks[i].from);
    setU64(v, ackHeaderBytes + i * 16 + 8, nacks[i].to);
  }
  return out;
}

/** A heartbeat frame; `ts` in milliseconds of the sender's clock (or echoed). */
export function encodeHeartbeat(ts: number, reply: boolean): Uint8Array {
  const out = new Uint8Array(heartbeatFrameBytes);
  const v = view(out);
  v.setUint8(0, SeqFrameType.heartbeat);
  v.setUint8(1, reply ? heartbeatReply : 0);
  v.setFloat64(2, ts);
  return out;
}

/** A hello frame; `receiveBound` is the client's receive buffer bound in bytes. */
export function encodeHello(
  sessionId: Uint8Array,
  pathId: number,
  token: Uint8Array,
  rejoin: boolean,
  receiveBound = 0xffff_ffff,
): Uint8Array {
  if (sessionId.length !== sessionIdBytes) throw new RangeError("session id must be 16 bytes");
  if (token.length > maxTokenBytes) throw new RangeError("token too long");
  const out = new Uint8Array(helloHeaderBytes + token.length);
  const v = view(out);
  v.setUint8(0, SeqFrameType.hello);
  v.setUint8(1, sequencerVersion);
  v.setUint8(2, rejoin ? helloRejoin : 0);
  out.set(sessionId, 3);
  v.setUint32(3 + sessionIdBytes, pathId);
  v.setUint32(7 + sessionIdBytes, Math.min(receiveBound, 0xffff_ffff));
  v.setUint16(11 + sessionIdBytes, token.length);
  out.set(token, helloHeaderBytes);
  return out;
}

/** A welcome frame; `receiveBound` is the server's receive buffer bound in bytes. */
export function encodeWelcome(status: number, receiveBound = 0xffff_ffff): Uint8Array {
  const out = new Uint8Array(welcomeFrameBytes);
  const v = view(out);
  v.setUint8(0, SeqFrameType.welcome);
  v.setUint8(1, status);
  v.setUint32(2, Math.min(receiveBound, 0xffff_ffff));
  return out;
}

/** A reset frame. */
export function encodeReset(code: number): Uint8Array {
  return Uint8Array.of(SeqFrameType.reset, code);
}

/**
 * Incremental frame decoder, correct on any split of its input.
 *
 * Fill it either with `push(chunk)` or, to save a copy, by reading into `reserve(n)` and
 * calling `commit(bytesRead)`; then call `next()` until it returns null.
 */
export class FrameDecoder {
  #buf: Uint8Array;
  #start = 0;
  #end = 0;
  /** Largest data payload accepted. */
  readonly maxDataBytes: number;

  /** `maxDataBytes` bounds data frames; `initialBytes` sizes the buffer. */
  constructor(maxDataBytes: number = defaultMaxDataBytes, initialBytes = 256 * 1024) {
    this.maxDataBytes = maxDataBytes;
    this.#buf = new Uint8Array(initialBytes);
  }

  /** Bytes held that do not yet form a whole frame. */
  get buffered(): number {
    return this.#end - this.#start;
  }

  /** Free space of at least `min` bytes to read into; then call `commit`. */
  reserve(min = 64 * 1024): Uint8Array {
    if (this.#start === this.#end) this.#start = this.#end = 0;
    if (this.#buf.length - this.#end < min) {
      const live = this.#end - this.#start;
      if (this.#start > 0 && this.#buf.length - live >= min) {
        this.#buf.copyWithin(0, this.#start, this.#end);
      } else {
        const bigger = new Uint8Array(Math.max(this.#buf.length * 2, live + min));
        bigger.set(this.#buf.subarray(this.#start, this.#end));
        this.#buf = bigger;
      }
      this.#start = 0;
      this.#end = live;
    }
    return this.#buf.subarray(this.#end);
  }

  /** Account `n` bytes written into the last `reserve()` area. */
  commit(n: number): void {
    this.#end += n;
  }

  /** Append a chunk. */
  push(chunk: Uint8Array): void {
    this.reserve(chunk.length).set(chunk);
    this.commit(chunk.length);
  }

  /** The next whole frame, or null if more bytes are needed. Throws ProtocolError. */
  next(): Frame | null {
    const avail = this.#end - this.#start;
    if (avail < 1) return null;
    const b = this.#buf;
    const s = this.#start;
    const v = new DataView(b.buffer, b.byteOffset + s, avail);
    const type = b[s];
    switch (type) {
      case SeqFrameType.data: {
        if (avail < dataHeaderBytes) return null;
        const len = v.getUint32(9);
        if (len > this.maxDataBytes) {
          throw new ProtocolError(`data frame of ${len} bytes`, "too-long");
        }
        if (avail < dataHeaderBytes + len) return null;
        const seq = getU64(v, 1);
        const data = b.slice(s + dataHeaderBytes, s + dataHeaderBytes + len);
        this.#start += dataHeaderBytes + len;
        return { type, seq, data };
      }
      case SeqFrameType.fin: {
        if (avail < finFrameBytes) return null;
        const seq = getU64(v, 1);
        this.#start += finFrameBytes;
        return { type, seq };
      }
      case SeqFrameType.ack: {
        if (avail < ackHeaderBytes) return null;
        const count = v.getUint16(17);
        if (count > maxNackRanges) throw new ProtocolError("too many NACK ranges", "too-long");
        const size = ackHeaderBytes + count * nackRangeBytes;
        if (avail < size) return null;
        const pathBytes = getU64(v, 1);
        const cum = getU64(v, 9);
        const nacks: SeqRange[] = [];
        for (let i = 0; i < count; i++) {
          const from = getU64(v, ackHeaderBytes + i * 16);
          const to = getU64(v, ackHeaderBytes + i * 16 + 8);
          if (to <= from) throw new ProtocolError("empty NACK range", "bad-frame");
          nacks.push({ from, to });
        }
        this.#start += size;
        return { type, pathBytes, cum, nacks };
      }
      case SeqFrameType.heartbeat: {
        if (avail < heartbeatFrameBytes) return null;
        const flags = v.getUint8(1);
        const ts = v.getFloat64(2);
        if (!Number.isFinite(ts)) throw new ProtocolError("bad heartbeat timestamp", "bad-frame");
        this.#start += heartbeatFrameBytes;
        return { type, reply: (flags & heartbeatReply) !== 0, ts };
      }
      case SeqFrameType.hello: {
        if (avail < helloHeaderBytes) return null;
        const tokenLen = v.getUint16(11 + sessionIdBytes);
        if (tokenLen > maxTokenBytes) throw new ProtocolError("token too long", "too-long");
        if (avail < helloHeaderBytes + tokenLen) return null;
        const frame: Frame = {
          type,
          version: v.getUint8(1),
          rejoin: (v.getUint8(2) & helloRejoin) !== 0,
          sessionId: b.slice(s + 3, s + 3 + sessionIdBytes),
          pathId: v.getUint32(3 + sessionIdBytes),
          receiveBound: v.getUint32(7 + sessionIdBytes),
          token: b.slice(s + helloHeaderBytes, s + helloHeaderBytes + tokenLen),
        };
        this.#start += helloHeaderBytes + tokenLen;
        return frame;
      }
      case SeqFrameType.welcome: {
        if (avail < welcomeFrameBytes) return null;
        const status = v.getUint8(1);
        const receiveBound = v.getUint32(2);
        this.#start += welcomeFrameBytes;
        return { type, status, receiveBound };
      }
      case SeqFrameType.reset: {
        if (avail < codeFrameBytes) return null;
        const code = v.getUint8(1);
        this.#start += codeFrameBytes;
        return { type, code };
      }
      default:
        throw new ProtocolError(`unknown frame type ${type}`, "bad-frame");
    }
  }
}
