/**
 * Opening a path: the client sends hello (session id, path id, token, rejoin flag) and
 * waits for welcome; the server reads hello and answers. Bytes read past the handshake stay
 * in the returned decoder and belong to the path.
 * @module
 */

import { type Duplex, writeAll } from "../net/duplex.ts";
import { errorMessage, ProtocolError, TimeoutError } from "../net/errors.ts";
import {
  encodeHello,
  type Frame,
  FrameDecoder,
  SeqFrameType,
  WelcomeStatus,
} from "../sequencer/frame.ts";

/** Default time for a path handshake. */
export const defaultPathHandshakeTimeoutMs = 5_000;

/** Why the server refused a path. */
export type RefusalReason = "bad-token" | "unknown-session" | "limit" | "bad-version";

/** The server refused the path; `reason` says why. */
export class PathRefusedError extends Error {
  /** Error name. */
  override name = "PathRefusedError";
  /** `reason`: why the server refused. */
  constructor(readonly reason: RefusalReason) {
    super(`path refused: ${reason}`);
  }
}

const refusals: Record<number, RefusalReason> = {
  [WelcomeStatus.badToken]: "bad-token",
  [WelcomeStatus.unknownSession]: "unknown-session",
  [WelcomeStatus.limit]: "limit",
  [WelcomeStatus.badVersion]: "bad-version",
};

/** A decoded hello frame. */
export type HelloFrame = Extract<Frame, { type: typeof SeqFrameType.hello }>;

/**
 * Decoder buffer of a path until its hello is read: a hello or welcome is at most a few
 * hundred bytes plus a 1 KiB token, so a silent pre-auth connection holds 2 KiB here, not the
 * 256 KiB a joined path grows to (the session's read loop reserves that after the welcome).
 */
export const handshakeBufferBytes = 2048;

async function readFrame(conn: Duplex, dec: FrameDecoder, timeoutMs: number): Promise<Frame> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      reject(new TimeoutError(`path handshake timed out after ${timeoutMs} ms`));
    }, timeoutMs);
  });
  const loop = async (): Promise<Frame> => {
    while (true) {
      const f = dec.next();
      if (f) return f;
      const buf = dec.reserve(handshakeBufferBytes / 2);
      const n = await conn.read(buf);
      if (n === null) throw new ProtocolError("path closed during handshake", "eof");
      dec.commit(n);
    }
  };
  const reading = loop();
  // If the timer wins, the pending read fails once the caller closes the connection.
  reading.catch(() => {
    // The timeout below is what the caller hears about.
  });
  try {
    return await Promise.race([reading, timeout]);
  } catch (err) {
    // The read may still be pending: closing the connection is the caller's job, and it
    // will do so on any rejection from here.
    throw err instanceof Error ? err : new Error(errorMessage(err));
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Client side: send hello, await welcome. Returns the decoder holding any later bytes and
 * the server's receive bound.
 */
export async function clientHandshake(
  conn: Duplex,
  opts: {
    sessionId: Uint8Array;
    pathId: number;
    token: Uint8Array;
    rejoin: boolean;
    /** Our receive bound, bytes. */
    receiveBound: number;
    timeoutMs?: number;
    maxDataBytes?: number;
  },
): Promise<{ decoder: FrameDecoder; peerReceiveBound: number }> {
  await writeAll(
    conn,
    encodeHello(opts.sessionId, opts.pathId, opts.token, opts.rejoin, opts.receiveBound),
  );
  const dec = new FrameDecoder(opts.maxDataBytes, handshakeBufferBytes);
  const f = await readFrame(conn, dec, opts.timeoutMs ?? defaultPathHandshakeTimeoutMs);
  if (f.type !== SeqFrameType.welcome) {
    throw new ProtocolError(`expected welcome, got frame type ${f.type}`, "bad-frame");
  }
  if (f.status !== WelcomeStatus.ok) {
    throw new PathRefusedError(refusals[f.status] ?? "bad-version");
  }
  return { decoder: dec, peerReceiveBound: f.receiveBound };
}

/** Server side: read the hello. The caller checks it and writes the welcome. */
export async function readHello(
  conn: Duplex,
  opts: { timeoutMs?: number; maxDataBytes?: number } = {},
): Promise<{ hello: HelloFrame; decoder: FrameDecoder }> {
  const dec = new FrameDecoder(opts.maxDataBytes, handshakeBufferBytes);
  const f = await readFrame(conn, dec, opts.timeoutMs ?? defaultPathHandshakeTimeoutMs);
  if (f.type !== SeqFrameType.hello) {
    throw new ProtocolError(`expected hello, got frame type ${f.type}`, "bad-frame");
  }
  return { hello: f, decoder: dec };
}
