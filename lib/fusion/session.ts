/**
 * FusionSession: one byte stream carried over N paths at once, exposed as a lib/net Duplex
 * so `relay()` joins it to an accepted client or a target connection.
 *
 * Each path is itself a Duplex (a TCP connection) with a read loop (frames in) and a write
 * loop (a control queue -- acks, heartbeats -- ahead of the data frames the scheduler gave
 * it). lib/sequencer decides what goes where; this file does the I/O and the timers:
 * delayed acks, heartbeats, silence detection, NACK checks, the no-path grace period, and
 * the clean end (both fins acknowledged, paths shut down write side first, then closed).
 * @module
 */

import { type Logger, silentLogger } from "../log.ts";
import { closeQuietly, type Duplex, noDelay, writeAll } from "../net/duplex.ts";
import { errorMessage, isDisconnect, ProtocolError } from "../net/errors.ts";
import {
  dataHeaderBytes,
  encodeAck,
  encodeDataInto,
  encodeFinInto,
  encodeHeartbeat,
  encodeReset,
  finFrameBytes,
  type Frame,
  FrameDecoder,
  ResetCode,
  SeqFrameType,
  type SeqRange,
} from "../sequencer/frame.ts";
import type { PathCapOptions } from "../sequencer/path.ts";
import { Receiver, SequenceError } from "../sequencer/receiver.ts";
import { makeScheduler, type Scheduler, type SchedulerName } from "../sequencer/scheduler.ts";
import { Sender, type StoredFrame } from "../sequencer/sender.ts";
import { fusionMetrics } from "./metrics.ts";

/** Default largest payload of one data frame. @default 32 KiB */
export const defaultMaxFrameDataBytes = 32 * 1024;
/** Default send window and receive bound, bytes. @default 16 MiB */
export const defaultSessionWindowBytes = 16 * 1024 * 1024;
/** Default interval between heartbeats on each path. */
export const defaultPathHeartbeatIntervalMs = 250;
/** Default silence after which a path is dead. */
export const defaultSilenceTimeoutMs = 3_000;
/** Default time a session survives with no path at all. */
export const defaultGraceMs = 30_000;
/** Default time the clean shutdown of paths may take before they are cut. */
export const defaultLingerMs = 2_000;
/** Default delay of an ack when no threshold forces one out. */
export const defaultAckDelayMs = 5;
/** Default received bytes on a path that force an ack on it. */
export const defaultAckEveryBytes = 64 * 1024;
/** Bytes written to a path socket at most per write call. */
const maxWriteBatchBytes = 256 * 1024;

/** Options of {@linkcode FusionSession}. */
export interface FusionSessionOptions {
  /** Scheduler by name or instance. @default "weighted" */
  scheduler?: SchedulerName | Scheduler;
  /** Send window and receive bound: bytes kept per direction at most. @default 16 MiB */
  windowBytes?: number;
  /** Largest payload per data frame. @default 32 KiB */
  maxFrameDataBytes?: number;
  /** Gap (frames received beyond a hole) that triggers a NACK. @default 10 */
  nackGapFrames?: number;
  /** Age of a hole that triggers a NACK. @default 300 */
  nackTimeoutMs?: number;
  /** Heartbeat period on every path (liveness and RTT). @default 250 */
  heartbeatIntervalMs?: number;
  /** A path that delivered nothing (not even a heartbeat) for this long is dead. @default 3000 */
  silenceTimeoutMs?: number;
  /** The session ends when it had no path for this long. @default 30000 */
  graceMs?: number;
  /** Longest the clean shutdown of paths may take. @default 2000 */
  lingerMs?: number;
  /** Delay of an ack that no threshold forced out. @default 5 */
  ackDelayMs?: number;
  /** Bytes received on a path that force an ack on it. @default 64 KiB */
  ackEveryBytes?: number;
  /** A NACKed frame is resent from a live path that made no progress this long. @default 200 */
  stallMs?: number;
  /** Per-path in-flight cap tuning. */
  pathCap?: PathCapOptions;
  /** Where the session logs; silent by default. */
  log?: Logger;
  /**
   * Which end this is, for the direction words of its log line (`up` = from the client's
   * application toward the target). @default "client"
   */
  side?: "client" | "server";
}

/** Why a session failed. */
export type SessionFailure =
  | "aborted" // the application closed it before both directions finished
  | "peer-reset" // the peer sent reset
  | "no-paths" // no path for longer than the grace period
  | "protocol" // the peer broke the protocol
  | "target-failed"; // the server could not reach the target

/** The session failed; `reason` says why. */
export class SessionError extends Error {
  /** Error name. */
  override name = "SessionError";
  /** `reason`: machine-readable cause. */
  constructor(readonly reason: SessionFailure, message: string) {
    super(message);
  }
}

/** Counters of one path, reported when it ends. */
export interface PathSummary {
  /** Path id within the session. */
  id: number;
  /** Where the path goes, for logs. */
  label: string;
  /** Why it ended: "eof", "error", "silent", "protocol", "closed" (session end). */
  end: string;
  /** Wire bytes read from the path. */
  bytesIn: number;
  /** Wire bytes written to the path. */
  bytesOut: number;
  /** Frames this path carried that were resends. */
  resentFrames: number;
  /** Wire bytes of those resends. */
  resentBytes: number;
  /** Smoothed heartbeat RTT, ms (queue included). */
  rttMs: number;
  /** Lowest assign-to-ack time, ms. */
  minRttMs: number;
  /** Windowed-max delivery rate, bytes/s. */
  rateBytesPerSec: number;
  /** How long the path lived. */
  durationMs: number;
}

/** Counters of a session, reported when it ends. */
export interface SessionSummary {
  /** Session id, hex. */
  id: string;
  /** "done" after a clean end, else the failure reason. */
  end: "done" | SessionFailure;
  /** Application bytes written into the session (sent) and read from it (received). */
  bytesOut: number;
  /** Application bytes read from the session. */
  bytesIn: number;
  /** Frames sent again (NACK or path death). */
  framesResent: number;
  /** Wire bytes sent again. */
  bytesResent: number;
  /** Highest bytes held out of order. */
  reorderPeakBytes: number;
  /** Frames received twice and dropped. */
  duplicates: number;
  /** NACKs sent. */
  nacksSent: number;
  /** Every path the session had. */
  paths: PathSummary[];
  /** How long the session lived. */
  durationMs: number;
}

/** Live view of one path, for status pages. */
export interface PathStatus {
  /** Path id within the session. */
  id: number;
  /** Where the path goes. */
  label: string;
  /** Wire bytes read. */
  bytesIn: number;
  /** Wire bytes written. */
  bytesOut: number;
  /** Bytes assigned and not acknowledged on the path. */
  inflightBytes: number;
  /** The path's in-flight cap now. */
  capBytes: number;
  /** Windowed-max delivery rate, bytes/s. */
  rateBytesPerSec: number;
  /** Smoothed heartbeat RTT, ms. */
  rttMs: number;
  /** Lowest assign-to-ack time, ms. */
  minRttMs: number;
  /** Frames this path carried as resends. */
  resentFrames: number;
}

/** Live view of a session, for status pages. */
export interface SessionStatus {
  /** Session id, hex. */
  id: string;
  /** open, finishing, done or failed. */
  state: string;
  /** Application bytes written into the session. */
  bytesOut: number;
  /** Application bytes read from the session. */
  bytesIn: number;
  /** Bytes kept for resending, unacknowledged. */
  sendBufferedBytes: number;
  /** Bytes received, not yet read. */
  receiveBufferedBytes: number;
  /** Frames sent again. */
  framesResent: number;
  /** Highest bytes held out of order. */
  reorderPeakBytes: number;
  /** The live paths. */
  paths: PathStatus[];
}

/** Options of {@linkcode FusionSession.addPath}. */
export interface AddPathOptions {
  /** Path id, unique within the session. */
  id: number;
  /** A decoder that may already hold bytes read past the handshake. */
  decoder?: FrameDecoder;
  /** For logs: e.g. "198.18.1.1>198.18.1.2:5022". */
  label?: string;
}

interface PathConn {
  id: number;
  label: string;
  conn: Duplex;
  decoder: FrameDecoder;
  ctl: Uint8Array[];
  data: StoredFrame[];
  wake: (() => void) | null;
  alive: boolean;
  /** Write side: shut it down once the queues are empty (clean end). */
  shutWrite: boolean;
  recvBytes: number;
  ackedRecvBytes: number;
  ackTimer: ReturnType<typeof setTimeout> | undefined;
  lastRecvAt: number;
  lastHeartbeatAt: number;
  bytesIn: number;
  bytesOut: number;
  startedAt: number;
  end: string;
  ended: Promise<string>;
  resolveEnded: (why: string) => void;
}

/** Life of a session: open, finishing (both ends done, paths closing), done, failed. */
export type SessionState = "open" | "finishing" | "done" | "failed";

const hex = (b: Uint8Array): string =>
  Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

/**
 * A byte stream over several paths. Symmetric: client and server sessions behave the same
 * once paths are attached with `addPath`.
 *
 * Guarantees: bytes are delivered once, in order, whatever the paths do, as long as one
 * path remains (or returns within `graceMs`); memory per direction is bounded by
 * `windowBytes`; `closeWrite()` resolves when the peer's application has read every byte;
 * `close()` after both directions finished shuts paths down cleanly, before that it
 * resets the session at the peer too.
 */
export class FusionSession implements Duplex {
  /** 16 random bytes identifying the session. */
  readonly id: Uint8Array;
  /** Hex of `id`, short form for logs. */
  readonly idHex: string;
  /** Resolves with the counters when the session is over (paths closed, timers stopped). */
  readonly closed: Promise<SessionSummary>;
  /** Aborted when the session ends (done or failed). */
  readonly signal: AbortSignal;

  readonly #o: Required<Omit<FusionSessionOptions, "log" | "scheduler" | "pathCap" | "side">>;
  readonly #log: Logger;
  readonly #sender: Sender;
  readonly #receiver: Receiver;
  readonly #paths = new Map<number, PathConn>();
  readonly #pathSummaries: PathSummary[] = [];
  readonly #startedAt = Date.now();
  readonly #ac = new AbortController();
  #state: SessionState = "open";
  #error: SessionError | null = null;
  #resolveClosed!: (s: SessionSummary) => void;
  #readWaiter: (() => void) | null = null;
  #windowWaiters: (() => void)[] = [];
  #finWaiters: { resolve: () => void; reject: (e: Error) => void }[] = [];
  #cur: Uint8Array | null = null;
  #curOff = 0;
  #eofRead = false;
  #writeClosed = false;
  #bytesIn = 0;
  #bytesOut = 0;
  #lastCumSent = 0;
  #lastCumSentAt = 0;
  #consumedSinceAck = 0;
  #cumTimer: ReturnType<typeof setTimeout> | undefined;
  #ticker: ReturnType<typeof setInterval>;
  #lingerTimer: ReturnType<typeof setTimeout> | undefined;
  #noPathsSince: number;
  #everHadPath = false;

  /** A session with id `id` and no path yet; attach paths with `addPath`. */
  readonly #side: "client" | "server";

  constructor(id: Uint8Array, opts: FusionSessionOptions = {}) {
    this.id = id;
    this.idHex = hex(id);
    this.#o = {
      windowBytes: opts.windowBytes ?? defaultSessionWindowBytes,
      maxFrameDataBytes: opts.maxFrameDataBytes ?? defaultMaxFrameDataBytes,
      nackGapFrames: opts.nackGapFrames ?? 10,
      nackTimeoutMs: opts.nackTimeoutMs ?? 300,
      heartbeatIntervalMs: opts.heartbeatIntervalMs ?? defaultPathHeartbeatIntervalMs,
      silenceTimeoutMs: opts.silenceTimeoutMs ?? defaultSilenceTimeoutMs,
      graceMs: opts.graceMs ?? defaultGraceMs,
      lingerMs: opts.lingerMs ?? defaultLingerMs,
      ackDelayMs: opts.ackDelayMs ?? defaultAckDelayMs,
      ackEveryBytes: opts.ackEveryBytes ?? defaultAckEveryBytes,
      stallMs: opts.stallMs ?? 200,
    };
    this.#log = (opts.log ?? silentLogger).child({ session: this.idHex.slice(0, 12) });
    this.#side = opts.side ?? "client";
    const scheduler = typeof opts.scheduler === "object"
      ? opts.scheduler
      : makeScheduler(opts.scheduler ?? "weighted");
    this.#sender = new Sender({
      windowBytes: this.#o.windowBytes,
      scheduler,
      stallMs: this.#o.stallMs,
      pathCap: opts.pathCap,
    });
    this.#receiver = new Receiver({
      // The peer's window bounds what it sends; a little slack covers frame rounding.
      maxBufferedBytes: this.#o.windowBytes + this.#o.maxFrameDataBytes,
      nackGapFrames: this.#o.nackGapFrames,
      nackTimeoutMs: this.#o.nackTimeoutMs,
    });
    this.closed = new Promise((r) => this.#resolveClosed = r);
    this.signal = this.#ac.signal;
    this.#noPathsSince = Date.now();
    const tickMs = Math.max(10, Math.min(100, this.#o.heartbeatIntervalMs / 2));
    this.#ticker = setInterval(() => this.#tick(), tickMs);
    fusionMetrics().sessionsActive.inc();
  }

  /** "open", "finishing" (both ends done, paths shutting down), "done" or "failed". */
  get state(): SessionState {
    return this.#state;
  }
  /** Live paths. */
  get pathCount(): number {
    return this.#paths.size;
  }
  /** Whether any path ever joined (a client rejoins rather than creates after that). */
  get everHadPath(): boolean {
    return this.#everHadPath;
  }
  /** Bytes written and not yet read by the peer's application (bounded by the window). */
  get sendBufferedBytes(): number {
    return this.#sender.unackedBytes;
  }
  /** Bytes received and not yet read by our application (reordered plus ready). */
  get receiveBufferedBytes(): number {
    return this.#receiver.reorderBytes + this.#receiver.readyBytes;
  }
  /** Bytes this end buffers per direction at most; told to the peer in hello/welcome. */
  get receiveBound(): number {
    return this.#receiver.maxBufferedBytes;
  }

  /** The peer buffers at most `bytes`: never keep more than that unacknowledged. */
  limitPeerWindow(bytes: number): void {
    this.#sender.limitWindow(
      Math.max(this.#o.maxFrameDataBytes, bytes - this.#o.maxFrameDataBytes),
    );
  }

  /** A snapshot of the session's and its live paths' counters. */
  status(): SessionStatus {
    return {
      id: this.idHex,
      state: this.#state,
      bytesOut: this.#bytesOut,
      bytesIn: this.#bytesIn,
      sendBufferedBytes: this.sendBufferedBytes,
      receiveBufferedBytes: this.receiveBufferedBytes,
      framesResent: this.#sender.stats.resentFrames,
      reorderPeakBytes: this.#receiver.stats.reorderPeakBytes,
      paths: [...this.#paths.values()].map((pc) => {
        const tx = this.#sender.path(pc.id);
        return {
          id: pc.id,
          label: pc.label,
          bytesIn: pc.bytesIn,
          bytesOut: pc.bytesOut,
          inflightBytes: tx?.inflightBytes ?? 0,
          capBytes: tx?.capBytes ?? 0,
          rateBytesPerSec: Math.round(tx?.rateBytesPerSec ?? 0),
          rttMs: round(tx?.srttMs ?? 0),
          minRttMs: round(tx?.minRttMs ?? 0),
          resentFrames: tx?.resentFrames ?? 0,
        };
      }),
    };
  }

  /** The failure, once failed. */
  get error(): SessionError | null {
    return this.#error;
  }

  /**
   * Attach a connected, handshaken path. Resolves with why the path ended; the path's
   * connection is closed by then.
   */
  addPath(conn: Duplex, opts: AddPathOptions): Promise<string> {
    if (this.#state !== "open" || this.#paths.has(opts.id)) {
      closeQuietly(conn);
      return Promise.resolve(this.#state !== "open" ? "session-over" : "duplicate-id");
    }
    const now = Date.now();
    let resolveEnded!: (why: string) => void;
    const pc: PathConn = {
      id: opts.id,
      label: opts.label ?? String(opts.id),
      conn,
      decoder: opts.decoder ?? new FrameDecoder(this.#o.maxFrameDataBytes),
      ctl: [],
      data: [],
      wake: null,
      alive: true,
      shutWrite: false,
      recvBytes: 0,
      ackedRecvBytes: 0,
      ackTimer: undefined,
      lastRecvAt: now,
      lastHeartbeatAt: now,
      bytesIn: 0,
      bytesOut: 0,
      startedAt: now,
      end: "",
      ended: new Promise((r) => resolveEnded = r),
      resolveEnded: (why) => resolveEnded(why),
    };
    // Frames are small and latency matters (interactive ssh): never wait for Nagle.
    noDelay(conn);
    this.#paths.set(pc.id, pc);
    this.#everHadPath = true;
    this.#sender.addPath(pc.id, now);
    fusionMetrics().pathsActive.inc();
    this.#log.info("path up", { path: pc.id, via: pc.label, paths: this.#paths.size });
    // Tell the peer our clock right away: the first RTT sample comes before any data.
    this.#enqueueCtl(pc, encodeHeartbeat(performance.now(), false));
    // Neither loop rejects: each ends the path on its own errors.
    void this.#readLoop(pc);
    void this.#writeLoop(pc);
    this.#pump();
    return pc.ended;
  }

  // ---- Duplex -------------------------------------------------------------------------

  /** Read in-order bytes; null once the peer's fin was reached. Rejects when failed. */
  async read(p: Uint8Array): Promise<number | null> {
    while (true) {
      if (this.#cur !== null) {
        const n = Math.min(p.length, this.#cur.length - this.#curOff);
        p.set(this.#cur.subarray(this.#curOff, this.#curOff + n));
        this.#curOff += n;
        if (this.#curOff >= this.#cur.length) this.#cur = null;
        this.#bytesIn += n;
        return n;
      }
      if (this.#eofRead) return null;
      if (this.#error) throw this.#error;
      const item = this.#receiver.shift();
      if (item) {
        this.#consumedSinceAck += item.data?.length ?? 0;
        this.#cumAdvanced(item.data === null);
        if (item.data === null) {
          this.#eofRead = true;
          this.#checkDone();
          return null;
        }
        if (item.data.length > 0) {
          this.#cur = item.data;
          this.#curOff = 0;
        }
        continue;
      }
      if (this.#state !== "open") return null;
      await new Promise<void>((r) => this.#readWaiter = r);
    }
  }

  /** Queue `p` (copied) for sending; waits while the send window is full. */
  async write(p: Uint8Array): Promise<number> {
    if (this.#error) throw this.#error;
    if (this.#writeClosed) {
      throw new Deno.errors.BrokenPipe("fusion session: write after closeWrite");
    }
    let off = 0;
    while (off < p.length) {
      const n = Math.min(this.#o.maxFrameDataBytes, p.length - off);
      while (!this.#sender.hasRoom(n)) {
        this.#pump();
        await new Promise<void>((r) => this.#windowWaiters.push(r));
        if (this.#error) throw this.#error;
      }
      this.#sender.push(p.slice(off, off + n));
      off += n;
    }
    this.#bytesOut += p.length;
    this.#pump();
    return p.length;
  }

  /** Send our fin; resolves when the peer's application has read everything we sent. */
  closeWrite(): Promise<void> {
    if (this.#error) return Promise.reject(this.#error);
    if (!this.#writeClosed) {
      this.#writeClosed = true;
      this.#sender.pushFin();
      this.#pump();
    }
    if (this.#sender.finAcked) return Promise.resolve();
    return new Promise((resolve, reject) => this.#finWaiters.push({ resolve, reject }));
  }

  /**
   * Release the session. After both directions finished this lets the clean shutdown run;
   * before, it aborts: the peer gets a reset and every path is closed.
   */
  close(): void {
    if (this.#state !== "open") return;
    if (this.#sender.finAcked && this.#receiver.finished) {
      this.#checkDone();
      return;
    }
    this.#fail(new SessionError("aborted", "session closed by the application"), ResetCode.aborted);
  }

  /** Fail the session with `reason`, resetting it at the peer. */
  abort(reason: SessionFailure, message: string): void {
    const code = reason === "target-failed"
      ? ResetCode.targetFailed
      : reason === "protocol"
      ? ResetCode.protocol
      : reason === "no-paths"
      ? ResetCode.noPaths
      : ResetCode.aborted;
    this.#fail(new SessionError(reason, message), code);
  }

  // ---- paths --------------------------------------------------------------------------

  async #readLoop(pc: PathConn): Promise<void> {
    try {
      this.#drainFrames(pc);
      while (pc.alive) {
        const buf = pc.decoder.reserve(64 * 1024);
        const n = await pc.conn.read(buf);
        if (n === null) return this.#pathDown(pc, "eof");
        pc.decoder.commit(n);
        pc.bytesIn += n;
        pc.lastRecvAt = Date.now();
        this.#drainFrames(pc);
      }
    } catch (err) {
      if (!pc.alive) return;
      if (err instanceof ProtocolError) {
        this.#log.warn("path protocol error", { path: pc.id, error: err });
        return this.#pathDown(pc, "protocol");
      }
      if (!isDisconnect(err)) {
        this.#log.debug("path read failed", { path: pc.id, error: errorMessage(err) });
      }
      this.#pathDown(pc, "error");
    }
  }

  #drainFrames(pc: PathConn): void {
    let delivered = false;
    for (let f = pc.decoder.next(); f; f = pc.decoder.next()) {
      if (this.#onFrame(pc, f)) delivered = true;
      if (!pc.alive || this.#state === "failed") return;
    }
    if (delivered) this.#wakeReader();
    if (pc.recvBytes - pc.ackedRecvBytes >= this.#o.ackEveryBytes) this.#sendAck(pc);
    else if (pc.recvBytes > pc.ackedRecvBytes) this.#scheduleAck(pc);
  }

  /** Handle one frame; true when it made data readable. */
  #onFrame(pc: PathConn, f: Frame): boolean {
    const now = Date.now();
    switch (f.type) {
      case SeqFrameType.data:
      case SeqFrameType.fin: {
        const data = f.type === SeqFrameType.data ? f.data : null;
        pc.recvBytes += data ? dataHeaderBytes + data.length : finFrameBytes;
        if (this.#state === "failed") return false; // nothing more is delivered
        try {
          return this.#receiver.accept(f.seq, data, now) === "delivered";
        } catch (err) {
          if (!(err instanceof SequenceError)) throw err;
          // No conforming peer sends this: cut the whole session, not just the path.
          this.#log.warn("peer broke the sequence bounds, cutting the session", {
            path: pc.id,
            failure: err.reason,
            error: err.message,
          });
          this.abort("protocol", err.message);
          return false;
        }
      }
      case SeqFrameType.ack: {
        try {
          this.#sender.onPathAck(pc.id, f.pathBytes, now);
          const freed = this.#sender.onCumAck(f.cum);
          if (f.nacks.length > 0) this.#sender.onNack(f.nacks, now);
          if (freed > 0 || this.#sender.finAcked) this.#wakeWriters();
        } catch (err) {
          throw new ProtocolError(errorMessage(err), "bad-ack");
        }
        this.#pump();
        return false;
      }
      case SeqFrameType.heartbeat: {
        if (f.reply) {
          const rttMs = Math.max(0, performance.now() - f.ts);
          this.#sender.path(pc.id)?.onHeartbeatRtt(rttMs);
          fusionMetrics().rtt.observe(rttMs / 1000);
        } else if (!pc.shutWrite) {
          this.#enqueueCtl(pc, encodeHeartbeat(f.ts, true));
        }
        return false;
      }
      case SeqFrameType.reset: {
        this.#fail(new SessionError("peer-reset", `peer reset the session (code ${f.code})`), -1);
        return false;
      }
      default:
        throw new ProtocolError(`unexpected frame type ${f.type} on a joined path`, "bad-frame");
    }
  }

  async #writeLoop(pc: PathConn): Promise<void> {
    try {
      while (true) {
        if (pc.ctl.length === 0 && pc.data.length === 0) {
          if (!pc.alive) return;
          if (pc.shutWrite) {
            await pc.conn.closeWrite();
            return;
          }
          await new Promise<void>((r) => pc.wake = r);
          pc.wake = null;
          continue;
        }
        const batch = this.#buildBatch(pc);
        await writeAll(pc.conn, batch);
        pc.bytesOut += batch.length;
      }
    } catch (err) {
      if (!pc.alive) return;
      if (!isDisconnect(err)) {
        this.#log.debug("path write failed", { path: pc.id, error: errorMessage(err) });
      }
      this.#pathDown(pc, "error");
    }
  }

  #buildBatch(pc: PathConn): Uint8Array {
    let size = 0;
    let nCtl = 0;
    while (nCtl < pc.ctl.length && size < maxWriteBatchBytes) size += pc.ctl[nCtl++].length;
    let nData = 0;
    while (nData < pc.data.length && (size < maxWriteBatchBytes || nData === 0 && nCtl === 0)) {
      const f = pc.data[nData++];
      size += f.bytes;
    }
    const out = new Uint8Array(size);
    let off = 0;
    for (const c of pc.ctl.splice(0, nCtl)) (out.set(c, off), off += c.length);
    for (const f of pc.data.splice(0, nData)) {
      off += f.data === null
        ? encodeFinInto(out, off, f.seq)
        : encodeDataInto(out, off, f.seq, f.data);
    }
    return out;
  }

  #enqueueCtl(pc: PathConn, frame: Uint8Array): void {
    if (!pc.alive || pc.shutWrite) return;
    pc.ctl.push(frame);
    pc.wake?.();
  }

  #pathDown(pc: PathConn, why: string): void {
    if (!pc.alive) return;
    pc.alive = false;
    pc.end = why;
    this.#paths.delete(pc.id);
    if (pc.ackTimer !== undefined) clearTimeout(pc.ackTimer);
    pc.ackTimer = undefined;
    closeQuietly(pc.conn);
    pc.wake?.();
    const tx = this.#sender.path(pc.id);
    const summary: PathSummary = {
      id: pc.id,
      label: pc.label,
      end: why,
      bytesIn: pc.bytesIn,
      bytesOut: pc.bytesOut,
      resentFrames: tx?.resentFrames ?? 0,
      resentBytes: tx?.resentBytes ?? 0,
      rttMs: round(tx?.srttMs ?? 0),
      minRttMs: round(tx?.minRttMs ?? 0),
      rateBytesPerSec: Math.round(tx?.rateBytesPerSec ?? 0),
      durationMs: Date.now() - pc.startedAt,
    };
    this.#pathSummaries.push(summary);
    const m = fusionMetrics();
    m.pathsActive.dec();
    m.pathEnds.inc({ end: why });
    const requeued = this.#sender.removePath(pc.id);
    if (this.#state === "open") {
      this.#log.info("path down", { ...summary, requeued, paths: this.#paths.size });
      if (this.#paths.size === 0) this.#noPathsSince = Date.now();
      // The last cumulative ack may have gone down with the path: repeat it elsewhere.
      this.#sendCumAck();
      this.#pump();
    } else {
      this.#log.debug("path closed", { ...summary });
    }
    pc.resolveEnded(why);
    if (this.#state !== "open" && this.#paths.size === 0) this.#terminate();
  }

  // ---- scheduling and acks ------------------------------------------------------------

  #pump(): void {
    if (this.#state !== "open") return;
    const now = Date.now();
    for (let a = this.#sender.next(now); a; a = this.#sender.next(now)) {
      const pc = this.#paths.get(a.path)!;
      pc.data.push(a.frame);
      pc.wake?.();
    }
  }

  #scheduleAck(pc: PathConn): void {
    if (pc.ackTimer !== undefined) return;
    pc.ackTimer = setTimeout(() => {
      pc.ackTimer = undefined;
      if (pc.alive && pc.recvBytes > pc.ackedRecvBytes) this.#sendAck(pc);
    }, this.#o.ackDelayMs);
  }

  #sendAck(pc: PathConn, nacks: SeqRange[] = []): void {
    if (!pc.alive || pc.shutWrite) return;
    const cum = this.#receiver.cumAck;
    pc.ackedRecvBytes = pc.recvBytes;
    this.#lastCumSent = cum;
    this.#lastCumSentAt = Date.now();
    this.#consumedSinceAck = 0;
    this.#enqueueCtl(pc, encodeAck(pc.recvBytes, cum, nacks));
  }

  /** The application consumed an item: tell the peer soon, at once past a threshold. */
  #cumAdvanced(urgent: boolean): void {
    if (urgent || this.#consumedSinceAck >= this.#o.windowBytes / 8) {
      this.#sendCumAck();
      return;
    }
    if (this.#cumTimer !== undefined) return;
    this.#cumTimer = setTimeout(() => {
      this.#cumTimer = undefined;
      if (this.#receiver.cumAck !== this.#lastCumSent) this.#sendCumAck();
    }, this.#o.ackDelayMs);
  }

  #sendCumAck(nacks: SeqRange[] = []): void {
    const pc = this.#bestPath();
    if (pc) this.#sendAck(pc, nacks);
  }

  /**
   * The live path with the shortest heartbeat RTT (for acks and NACKs), avoiding paths
   * that look stalled (our frames unacknowledged) or quiet (no heartbeat from the peer
   * lately): an ack sent into a black hole would leave the peer's window shut.
   */
  #bestPath(): PathConn | undefined {
    let best: PathConn | undefined;
    let bestScore = Infinity;
    const now = Date.now();
    for (const pc of this.#paths.values()) {
      if (!pc.alive || pc.shutWrite) continue;
      const tx = this.#sender.path(pc.id);
      const stalled = tx ? this.#sender.isStalled(tx, now) : false;
      const quiet = now - pc.lastRecvAt > 2 * this.#o.heartbeatIntervalMs + 50;
      const score = (tx?.srttMs || 1e6) + (stalled || quiet ? 1e9 : 0);
      if (score < bestScore) {
        bestScore = score;
        best = pc;
      }
    }
    return best;
  }

  #tick(): void {
    const now = Date.now();
    if (this.#state === "open") {
      for (const pc of [...this.#paths.values()]) {
        if (now - pc.lastRecvAt > this.#o.silenceTimeoutMs) {
          this.#log.warn("path silent, dropping it", {
            path: pc.id,
            silentMs: now - pc.lastRecvAt,
          });
          this.#pathDown(pc, "silent");
          continue;
        }
        if (now - pc.lastHeartbeatAt >= this.#o.heartbeatIntervalMs) {
          pc.lastHeartbeatAt = now;
          this.#enqueueCtl(pc, encodeHeartbeat(performance.now(), false));
        }
      }
      const nacks = this.#receiver.nacks(now);
      if (nacks.length > 0) this.#sendCumAck(nacks);
      // A periodic repeat of the cumulative ack on every path: one lost with a silent path
      // would otherwise leave the peer's window shut until that path is declared dead.
      if (now - this.#lastCumSentAt >= this.#o.heartbeatIntervalMs) {
        for (const pc of this.#paths.values()) this.#sendAck(pc);
      }
      if (this.#paths.size === 0 && now - this.#noPathsSince > this.#o.graceMs) {
        this.#fail(
          new SessionError("no-paths", `no path for ${this.#o.graceMs} ms`),
          ResetCode.noPaths,
        );
      }
    }
  }

  // ---- end ----------------------------------------------------------------------------

  #wakeReader(): void {
    const w = this.#readWaiter;
    this.#readWaiter = null;
    w?.();
  }

  #wakeWriters(): void {
    const ws = this.#windowWaiters;
    this.#windowWaiters = [];
    for (const w of ws) w();
    if (this.#sender.finAcked) {
      const fs = this.#finWaiters;
      this.#finWaiters = [];
      for (const f of fs) f.resolve();
      this.#checkDone();
    }
  }

  /** Both directions finished: acknowledge, shut every path's write side, linger. */
  #checkDone(): void {
    if (this.#state !== "open" || !this.#sender.finAcked || !this.#receiver.finished) return;
    this.#state = "finishing";
    for (const pc of this.#paths.values()) {
      this.#sendAck(pc);
      pc.shutWrite = true;
      pc.wake?.();
    }
    if (this.#paths.size === 0) return this.#terminate();
    this.#lingerTimer = setTimeout(() => {
      this.#lingerTimer = undefined;
      for (const pc of [...this.#paths.values()]) this.#pathDown(pc, "linger");
    }, this.#o.lingerMs);
  }

  #fail(err: SessionError, resetCode: number): void {
    // Once both directions finished nothing can be lost any more: let the clean end run.
    if (this.#state !== "open") return;
    this.#state = "failed";
    this.#error = err;
    this.#log.info("session failed", { failure: err.reason, error: err.message });
    for (const pc of this.#paths.values()) {
      if (resetCode >= 0) this.#enqueueCtl(pc, encodeReset(resetCode));
      pc.data = [];
      pc.shutWrite = true;
      pc.wake?.();
    }
    this.#wakeReader();
    const ws = this.#windowWaiters;
    this.#windowWaiters = [];
    for (const w of ws) w();
    const fs = this.#finWaiters;
    this.#finWaiters = [];
    for (const f of fs) f.reject(err);
    if (this.#paths.size === 0) return this.#terminate();
    // Give the reset a moment to leave, then cut whatever is left.
    this.#lingerTimer = setTimeout(() => {
      this.#lingerTimer = undefined;
      for (const pc of [...this.#paths.values()]) this.#pathDown(pc, "closed");
    }, Math.min(this.#o.lingerMs, 500));
  }

  #terminate(): void {
    if (this.#ac.signal.aborted) return;
    const failed = this.#state === "failed";
    if (!failed) this.#state = "done";
    clearInterval(this.#ticker);
    if (this.#cumTimer !== undefined) clearTimeout(this.#cumTimer);
    if (this.#lingerTimer !== undefined) clearTimeout(this.#lingerTimer);
    this.#ac.abort();
    this.#wakeReader();
    const ss = this.#sender.stats;
    const rs = this.#receiver.stats;
    const summary: SessionSummary = {
      id: this.idHex,
      end: failed ? this.#error!.reason : "done",
      bytesOut: this.#bytesOut,
      bytesIn: this.#bytesIn,
      framesResent: ss.resentFrames,
      bytesResent: ss.resentBytes,
      reorderPeakBytes: rs.reorderPeakBytes,
      duplicates: rs.duplicates,
      nacksSent: rs.nacksSent,
      paths: this.#pathSummaries,
      durationMs: Date.now() - this.#startedAt,
    };
    const m = fusionMetrics();
    m.sessionsActive.dec();
    m.sessionEnds.inc({ end: summary.end });
    m.bytes.inc({ direction: "out" }, summary.bytesOut);
    m.bytes.inc({ direction: "in" }, summary.bytesIn);
    m.resentFrames.inc(summary.framesResent);
    m.resentBytes.inc(summary.bytesResent);
    m.reorderPeak.set(Math.max(summary.reorderPeakBytes, 0));
    const client = this.#side === "client";
    this.#log.info("session closed", {
      end: summary.end,
      up: client ? summary.bytesOut : summary.bytesIn,
      down: client ? summary.bytesIn : summary.bytesOut,
      ms: summary.durationMs,
      framesResent: summary.framesResent,
      bytesResent: summary.bytesResent,
      reorderPeakBytes: summary.reorderPeakBytes,
      duplicates: summary.duplicates,
      nacksSent: summary.nacksSent,
      paths: this.#pathSummaries.length,
    });
    this.#resolveClosed(summary);
  }
}

function round(x: number): number {
  return Math.round(x * 100) / 100;
}
