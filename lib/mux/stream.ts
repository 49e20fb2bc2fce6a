/**
 * One multiplexed stream: its seed-004 state byte, receive buffer and window, send window.
 * A Stream is a `Duplex`, so `relay()` works on it unchanged.
 * @module
 */

import { type Deadline, deadlines } from "../net/deadline.ts";
import type { Duplex, FramedWriter, ViewReader } from "../net/duplex.ts";
import { defaultWindowBytes, Flag, FrameType, headerBytes, MuxError } from "./frame.ts";
import { RecvBuffer } from "./recv_buffer.ts";
import {
  canReceive,
  canWrite,
  FIN_ACK_RX,
  FIN_ACK_TX,
  FIN_RX,
  FIN_TX,
  StreamState,
  SYN_ACK_RX,
  SYN_ACK_TX,
  SYN_RX,
  SYN_TX,
} from "./state.ts";

/**
 * Writes up to this size are copied and resolve as soon as they are queued (so a following
 * `closeWrite()` can ride on the same frame); larger ones are sent from the caller's buffer
 * without a copy and resolve once written to the transport.
 */
export const copyWriteMaxBytes = 16 * 1024;
/**
 * Most payload bytes one transport read puts into a stream's receive buffer. 1 MiB (was 4):
 * a relayed bulk stream's read-ahead then fills 1 MiB buffers that the pool hands out again
 * while their bytes are still in the CPU's cache, where reads of up to 4 MiB went through
 * several 4 MiB buffers and the kernel's copy into them cost depot-server (a `--mux` download)
 * 1.5x plain depot's per byte (perf: `_copy_to_iter` samples 1,329 vs 879; with 1 MiB 876).
 */
const maxQueueReadBytes = 1024 * 1024;
/** Free room at the end of the receive buffer that is read into as it is (not made bigger). */
const minQueueReadBytes = 64 * 1024;
/** Most bytes one `readView` lends. */
const maxViewBytes = 4 * 1024 * 1024;
/**
 * Payloads up to this size that arrive for a waiting `readView` are lent as a copy in the
 * session's small-view arena (see Session.lendSmall) instead of through the receive queue.
 */
export const smallViewMaxBytes = 4 * 1024;
/**
 * Data bytes of one stream queued but not yet written to the transport above which a copied
 * (small) write waits for its frame to be written: without it a peer that grants huge
 * windows and never reads would have us buffer every write in memory.
 */
export const maxUnflushedWriteBytes = 256 * 1024;

/** A frame waiting in the session's write queue. @internal */
export interface OutFrame {
  type: number;
  flags: number;
  id: number;
  length: number;
  payload: Uint8Array | null;
  /**
   * The `headerBytes` in front of `payload` (in its buffer) are ours to write the header into
   * once the frames before it are written: header and payload go out in one write.
   */
  framed: boolean;
  stream: Stream | null;
  /** Set once the header has been encoded: flags can no longer be added. */
  encoded: boolean;
  /** Settled when the frame has been written to the transport (or the session failed). */
  done: Deferred | null;
}

/** A promise with its settle functions. @internal */
export interface Deferred {
  promise: Promise<void>;
  resolve: () => void;
  reject: (e: Error) => void;
}

/** Make a {@linkcode Deferred}. @internal */
export function deferred(): Deferred {
  let resolve!: () => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  // Only some of these are awaited (e.g. the last frame of a write); a session failure must
  // not turn the others into unhandled rejections. Awaiting `promise` still sees the error.
  promise.catch(() => {
    // Seen by whoever awaits `promise`; the others need not hear of it.
  });
  return { promise, resolve, reject };
}

/** What a stream needs from its session. @internal */
export interface StreamHost {
  /** Queue a frame; `priority` frames (pure window updates, pings) may overtake data. */
  enqueue(f: OutFrame, priority: boolean): void;
  /** The stream reached CLOSED: drop it from the session. */
  freeStream(s: Stream): void;
  /** Latest RTT estimate in ms, if any. */
  readonly rttMs: number | undefined;
  /** Ask for `bytes` more receive window beyond the initial one; false if over budget. */
  reserveWindow(bytes: number): boolean;
  /** Return window budget when a stream is freed. */
  releaseWindow(bytes: number): void;
  /** The stream was closed before the peer's FIN: reset it if the FIN never comes. */
  lingerStream(s: Stream): void;
  /**
   * Encode a frame (no waiter; payload at most `copyWriteMaxBytes`, copied) into the batch the
   * writer sends next: its offset there, or -1 when it must be queued (see Session.encodeNow).
   */
  encodeNow(
    s: Stream,
    type: number,
    flags: number,
    length: number,
    payload: Uint8Array | null,
  ): number;
  /** The number of the batch `encodeNow` encodes into now. */
  readonly batch: number;
  /** Add FIN to the frame `encodeNow` put at `at` in batch `batch`, if not yet written. */
  addFin(s: Stream, at: number, batch: number): boolean;
  /** A copy of a small payload, valid until its frame has been encoded (see Session.stage). */
  stage(p: Uint8Array): Uint8Array;
  /** A copy of a received payload of at most `smallViewMaxBytes`, never overwritten. */
  lendSmall(p: Uint8Array): Uint8Array;
  readonly maxWindowBytes: number;
  readonly maxSendFrameBytes: number;
  /** Data a stream queues at most before it waits for the transport to take it. */
  readonly streamQueueBytes: number;
}

/** Floor of the RTT used for window growth, so timer jitter on loopback still counts. */
const minTuningRttMs = 2;
/** RTT assumed for window growth before any measurement. */
const defaultTuningRttMs = 10;

interface PendingRead {
  /** The reader's buffer, or null for a `readView` reader (lent the queued bytes instead). */
  p: Uint8Array | null;
  resolve: (n: number | null) => void;
  resolveView: (v: Uint8Array | null) => void;
  reject: (e: Error) => void;
}

/** A direct read's pending reader: one with a buffer. */
type BufferRead = PendingRead & { p: Uint8Array };

const noView = (): void => {
  throw new Error("a buffer read resolved as a view");
};
const noCount = (): void => {
  throw new Error("a view read resolved as a count");
};

/**
 * A held-back ACK on the shared deadline wheel: one small object per accepted stream, no
 * closure. The stream takes it off the wheel as soon as the ACK goes out on another frame
 * (or the stream ends), so a finished stream is not kept reachable for `synAckDelayMs`.
 */
class HeldAck implements Deadline {
  constructor(public due: number, readonly stream: Stream) {}

  fire(): void {
    this.stream._sendAck();
  }
}

/**
 * A closed stream's wait for the peer's FIN (`closeLingerMs`) on the shared deadline wheel: one
 * small object, no closure, taken off as soon as the stream is freed (the FIN came, or a reset),
 * so a stream closed early is not kept reachable for the whole linger.
 */
class Linger implements Deadline {
  constructor(public due: number, readonly stream: Stream) {}

  fire(): void {
    this.stream._lingerExpired();
  }
}

/**
 * A yamux stream. Create through `Session.open()` / `Session.accept()`.
 *
 * Guarantees: reads return data in order, then `null` after the peer's FIN; writes wait for
 * send window (never buffer unboundedly); `closeWrite()` half-closes (reads continue);
 * `close()` sends FIN if needed and stops reading; `reset()` aborts both directions, and a
 * reset (local or by the peer) makes pending and later reads and writes reject with
 * `MuxError` reason "reset".
 */
export class Stream implements Duplex, FramedWriter, ViewReader {
  #host: StreamHost;
  #state: number;
  #opener: boolean;
  #err: MuxError | null = null;
  /** What reads report once the buffer is empty: set unless the peer's FIN came first. */
  #readErr: MuxError | null = null;
  #localClosed = false;
  #freed = false;

  // receive side
  /** Bytes no reader has taken yet; created on first use (an idle stream holds none). */
  #rx: RecvBuffer | null = null;
  #reader: PendingRead | null = null;
  /** A reader whose buffer the session is reading the transport into right now. */
  #direct: BufferRead | null = null;
  /** Credit the peer still has (bytes it may send before our next window update). */
  #recvWindow = defaultWindowBytes;
  /** Target window: recvWindow + buffered + pendingCredit (+ bytes in flight). */
  #windowSize: number;
  /** Consumed (or never granted) bytes not yet credited back to the peer. */
  #pendingCredit: number;
  /**
   * When we last sent credit, or (before the first update) when bulk data first came; 0:
   * neither yet. Not the stream's open time: a clock read per stream (~0.3 µs, an op call)
   * for streams that mostly never send an update.
   */
  #lastUpdateAt = 0;
  #grownBytes = 0;

  // send side
  #sendWindow = defaultWindowBytes;
  /** Data bytes queued with the session and not yet written to the transport. */
  #unflushedBytes = 0;
  #windowWaiter: Deferred | null = null;
  #writeBusy = false;
  /** Writers waiting for the lock; created by the first one (most streams never have one). */
  #writeWaiters: (() => void)[] | null = null;
  #lastQueued: OutFrame | null = null;
  /**
   * Where `encodeNow` put our last frame (offset, batch number) when it was not queued: a FIN
   * may still be added to it there. -1: our last frame is `#lastQueued` (or none).
   */
  #lastAt = -1;
  #lastBatch = 0;
  /** The held-back ACK's deadline while it is pending (accepted streams, synAckDelayMs). */
  #heldAck: HeldAck | null = null;
  /** The linger's deadline while our close() waits for the peer's FIN. */
  #linger: Linger | null = null;
  /** When we sent our SYN (streams we open): the ACK gives an RTT sample. @internal */
  _openedAt: number | undefined;

  /** @internal Use Session.open()/accept(). */
  constructor(host: StreamHost, readonly id: number, opener: boolean, windowBytes: number) {
    this.#host = host;
    this.#opener = opener;
    this.#state = opener ? StreamState.LISTEN : SYN_RX;
    this.#windowSize = Math.max(defaultWindowBytes, windowBytes);
    this.#pendingCredit = this.#windowSize - defaultWindowBytes;
  }

  /** The seed-004 state byte (see state.ts). */
  get state(): number {
    return this.#state;
  }

  /** The error that ended the stream (reset or session end), if any. */
  get error(): MuxError | null {
    return this.#err;
  }

  /** Current receive window target in bytes (grows while the reader keeps up). */
  get windowBytes(): number {
    return this.#windowSize;
  }

  /** Bytes received and not yet read. */
  get bufferedBytes(): number {
    return this.#queued;
  }

  get #queued(): number {
    return this.#rx?.length ?? 0;
  }

  // ---------------------------------------------------------------- Duplex

  /** Read into `p`; `null` at the peer's FIN (or after `close()`). */
  read(p: Uint8Array): Promise<number | null> {
    if (p.length === 0) return Promise.resolve(0);
    this.#rx?.releaseView();
    if (this.#queued > 0) {
      const n = this.#rx!.take(p);
      this.#consumed(n);
      return Promise.resolve(n);
    }
    if (this.#localClosed) return Promise.resolve(null);
    if (this.#readErr) return Promise.reject(this.#readErr);
    if (!canReceive(this.#state)) return Promise.resolve(null);
    if (this.#reader) {
      return Promise.reject(new MuxError("protocol", "concurrent read on one stream"));
    }
    return new Promise((resolve, reject) => {
      this.#reader = { p, resolve, resolveView: noView, reject };
    });
  }

  /**
   * Read without a buffer of one's own: the received bytes themselves, as they wait in the
   * stream's receive queue (what the session read the transport into): no copy. The view is
   * valid until `releaseView()`, the next `readView()` or `read()`; `null` at the peer's FIN
   * (or after `close()`). `relay()` reads a stream this way.
   */
  readView(): Promise<Uint8Array | null> {
    this.#rx?.releaseView();
    if (this.#queued > 0) return Promise.resolve(this.#lend());
    if (this.#localClosed) return Promise.resolve(null);
    if (this.#readErr) return Promise.reject(this.#readErr);
    if (!canReceive(this.#state)) return Promise.resolve(null);
    if (this.#reader) {
      return Promise.reject(new MuxError("protocol", "concurrent read on one stream"));
    }
    return new Promise((resolve, reject) => {
      this.#reader = { p: null, resolve: noCount, resolveView: resolve, reject };
    });
  }

  /**
   * What `readView()` would lend, without waiting: the queued bytes, or `null` when none are
   * queued now (then `readView()` waits for them, or reports the end). The view is valid as
   * `readView()`'s is. For a first read that must not cost a turn (see `Session.serveEach`).
   */
  takeView(): Uint8Array | null {
    this.#rx?.releaseView();
    return this.#queued > 0 ? this.#lend() : null;
  }

  /** The last `readView`'s bytes are no longer needed (they may be reused). */
  releaseView(): void {
    this.#rx?.releaseView();
  }

  /** Write all of `p`, waiting for send window; resolves with `p.length`. */
  write(p: Uint8Array): Promise<number> {
    if (this.#queueSmall(p)) return Promise.resolve(p.length);
    return this.#write(p, false);
  }

  /**
   * Queue `p` now, as {@linkcode write} does when it can take a write at once (a small write
   * the window and the transport's backlog take whole: copied, no promise); false when it
   * cannot, and nothing was done: call `write`. For a writer that gathers small pieces and
   * flushes them before each read (the tunnel front), so a request costs no promise here.
   */
  writeNow(p: Uint8Array): boolean {
    return this.#queueSmall(p);
  }

  /** Room a {@linkcode writeFramed} caller leaves in front of the payload: one header. */
  readonly headroomBytes: number = headerBytes;

  /**
   * Write all of `p.subarray(headroomBytes)` as {@linkcode write} does, each frame's header in
   * the bytes in front of its payload (the headroom, or payload already written), so header and
   * payload leave in one transport write. `p` is ours until this settles.
   */
  writeFramed(p: Uint8Array): Promise<number> {
    const payload = p.subarray(headerBytes);
    if (this.#queueSmall(payload)) return Promise.resolve(payload.length);
    return this.#write(payload, true);
  }

  /**
   * The common small write, done at once: no writer ahead of it, the window takes it whole,
   * the stream is writable and not too far ahead of the transport. Its bytes are copied into
   * the session's staging buffer and queued as one frame, with no async frame or promise of
   * its own (a relay or an HTTP front writes one such piece per request). False: take the
   * general path (which also reports why a write cannot go).
   */
  #queueSmall(p: Uint8Array): boolean {
    const n = p.length;
    if (
      this.#writeBusy || n === 0 || n > copyWriteMaxBytes || n > this.#sendWindow ||
      n > this.#host.maxSendFrameBytes || this.#unflushedBytes + n > maxUnflushedWriteBytes ||
      this.#err !== null || this.#localClosed || !canWrite(this.#state)
    ) {
      return false;
    }
    this.#sendWindow -= n;
    this.#enqueue(FrameType.data, 0, n, p, false, false, true);
    return true;
  }

  async #write(p: Uint8Array, framed: boolean): Promise<number> {
    if (this.#writeBusy) await new Promise<void>((r) => (this.#writeWaiters ??= []).push(r));
    this.#writeBusy = true;
    try {
      return await this.#writeChunks(p, framed);
    } finally {
      this.#unlockWrite();
    }
  }

  /** Half-close: send FIN after everything written so far; reads continue. */
  closeWrite(): Promise<void> {
    if (this.#writeBusy) {
      return new Promise<void>((r) => (this.#writeWaiters ??= []).push(r)).then(() => {
        this.#writeBusy = true;
        try {
          this.#sendFin();
        } finally {
          this.#unlockWrite();
        }
      });
    }
    this.#sendFin();
    return Promise.resolve();
  }

  /**
   * Full close: send FIN if not yet sent and stop reading. Buffered and later data from the
   * peer is discarded (data arriving after close is answered with RST, as TCP does); the
   * stream is freed when both FINs are done or after a reset. Safe to call twice.
   *
   * Closing with unread data while the peer is still sending aborts (RST), as TCP does
   * (RFC 1122 §4.2.2.13): that peer has likely filled its window and would otherwise wait
   * for credit that never comes, holding its end open until `closeLingerMs`.
   */
  close(): void {
    if (this.#localClosed) return;
    if (this.#queued > 0 && canReceive(this.#state) && !this.#err) {
      this.#localClosed = true;
      this.reset();
      return;
    }
    this.#localClosed = true;
    if (!this.#err) this.#sendFin();
    this.#windowWaiter?.reject(new MuxError("stream-closed", "stream closed"));
    this.#windowWaiter = null;
    this.#dropBuffered();
    const r = this.#reader;
    this.#reader = null;
    if (r) this.#endRead(r);
    this.#maybeFree();
    if (!this.#freed && canReceive(this.#state)) this.#host.lingerStream(this);
  }

  /** Abort both directions: send RST; pending and later reads/writes reject ("reset"). */
  reset(): void {
    if (this.#err) return;
    this.#enqueue(FrameType.windowUpdate, Flag.rst, 0, null, false);
    this.#fail(new MuxError("reset", `stream ${this.id} reset locally`));
  }

  // ------------------------------------------------------------- internals

  #unlockWrite(): void {
    const next = this.#writeWaiters?.shift();
    if (next) next(); // the lock passes straight to the next writer
    else this.#writeBusy = false;
  }

  #checkWritable(): void {
    if (this.#err) throw this.#err;
    if (this.#localClosed || !canWrite(this.#state)) {
      throw new MuxError("stream-closed", `write on stream ${this.id} after its FIN`);
    }
  }

  /** `framed`: `p` has `headerBytes` of headroom in front of it (see writeFramed). */
  async #writeChunks(p: Uint8Array, framed: boolean): Promise<number> {
    this.#checkWritable();
    const copy = p.length <= copyWriteMaxBytes;
    let off = 0;
    let last: Deferred | null = null;
    while (off < p.length) {
      this.#checkWritable();
      if (this.#sendWindow <= 0) {
        this.#windowWaiter = deferred();
        await this.#windowWaiter.promise;
        continue;
      }
      // Not the whole window at once: other streams' frames queued meanwhile go out between.
      if (last !== null && this.#unflushedBytes >= this.#host.streamQueueBytes) {
        await last.promise;
        last = null;
        continue;
      }
      const n = Math.min(this.#sendWindow, p.length - off, this.#host.maxSendFrameBytes);
      this.#sendWindow -= n;
      last = this.#enqueue(
        FrameType.data,
        0,
        n,
        p.subarray(off, off + n),
        !copy || this.#unflushedBytes + n > maxUnflushedWriteBytes,
        framed && !copy,
        copy,
      );
      off += n;
    }
    if (last !== null) await last.promise;
    return p.length;
  }

  /** Flags owed on our next frame: SYN (opener's first frame) or ACK (accepted stream). */
  #takeFlags(): number {
    const s = this.#state;
    if (this.#opener) {
      if ((s & SYN_TX) === 0) {
        this.#state = s | SYN_TX;
        return Flag.syn;
      }
    } else if ((s & SYN_ACK_TX) === 0) {
      this.#state = s | SYN_ACK_TX | SYN_TX;
      if (this.#heldAck) this.#dropHeldAck(); // the ACK goes out on this frame
      return Flag.ack;
    }
    return 0;
  }

  /**
   * Send a frame: straight into the session's batch when it takes it (no waiter wanted, not
   * framed; payload small), else queued. `copy`: `payload` is the caller's, copied if queued.
   */
  #enqueue(
    type: number,
    flags: number,
    length: number,
    payload: Uint8Array | null,
    wantDone: boolean,
    framed = false,
    copy = false,
  ): Deferred | null {
    flags |= this.#takeFlags();
    const priority = type === FrameType.windowUpdate && flags === 0;
    if (!wantDone && !framed) {
      const at = this.#host.encodeNow(this, type, flags, length, payload);
      if (at >= 0) {
        if (!priority) {
          this.#lastQueued = null;
          this.#lastAt = at;
          this.#lastBatch = this.#host.batch;
        }
        return null;
      }
    }
    if (copy && payload !== null) payload = this.#host.stage(payload);
    if (type === FrameType.data) this.#unflushedBytes += length;
    const f: OutFrame = {
      type,
      flags,
      id: this.id,
      length,
      payload,
      framed,
      stream: this,
      encoded: false,
      done: wantDone ? deferred() : null,
    };
    if (!priority) {
      this.#lastQueued = f;
      this.#lastAt = -1;
    }
    this.#host.enqueue(f, priority);
    return f.done;
  }

  #sendFin(): void {
    if (this.#err || !canWrite(this.#state)) return;
    this.#state |= FIN_TX;
    const lq = this.#lastQueued;
    if (lq && !lq.encoded) lq.flags |= Flag.fin;
    else if (this.#lastAt < 0 || !this.#host.addFin(this, this.#lastAt, this.#lastBatch)) {
      this.#enqueue(FrameType.windowUpdate, Flag.fin, this.#takeCredit(), null, false);
    }
  }

  /** Ungranted credit to attach to a window update we are sending anyway. */
  #takeCredit(): number {
    if (!canReceive(this.#state) || this.#localClosed) return 0;
    const c = this.#pendingCredit;
    this.#pendingCredit = 0;
    this.#recvWindow += c;
    return c;
  }

  /** Send SYN now (open without data): a window update carrying any extra initial window. */
  _sendSyn(): void {
    if ((this.#state & SYN_TX) !== 0) return;
    this.#enqueue(FrameType.windowUpdate, 0, this.#takeCredit(), null, false);
  }

  /** Send the ACK now unless it already rode on another frame (accept / delayed-ACK timer). */
  _sendAck(): void {
    if (this.#opener || this.#err || (this.#state & SYN_ACK_TX) !== 0) return;
    this.#enqueue(FrameType.windowUpdate, 0, this.#takeCredit(), null, false);
  }

  /**
   * @internal Send the ACK alone at about `dueMs` (the wheel's clock) unless it rides on a
   * frame first (data, window update, FIN or RST) or the stream ends: either takes the
   * deadline off the wheel.
   */
  _holdAck(dueMs: number): void {
    if (!this._ackOwed || this.#heldAck) return;
    this.#heldAck = new HeldAck(dueMs, this);
    deadlines.add(this.#heldAck);
  }

  #dropHeldAck(): void {
    const d = this.#heldAck!;
    this.#heldAck = null;
    deadlines.delete(d); // nothing happens if it fired (it left the wheel then)
  }

  /** Whether our ACK for the peer's SYN is still owed. */
  get _ackOwed(): boolean {
    return !this.#opener && !this.#err && (this.#state & SYN_ACK_TX) === 0;
  }

  #dropBuffered(): void {
    this.#rx?.clear();
  }

  /** Lend the head of the receive queue (which must not be empty) and credit it. */
  #lend(): Uint8Array {
    const v = this.#rx!.takeView(maxViewBytes);
    this.#consumed(v.length);
    return v;
  }

  /** Settle the waiting read `r` with queued bytes (there must be some). */
  #deliver(r: PendingRead): void {
    if (r.p === null) {
      r.resolveView(this.#lend());
      return;
    }
    const n = this.#rx!.take(r.p);
    this.#consumed(n);
    r.resolve(n);
  }

  /** Settle the waiting read `r` with the end of the stream. */
  #endRead(r: PendingRead): void {
    if (r.p === null) r.resolveView(null);
    else r.resolve(null);
  }

  /** The application took `n` bytes: credit them back, growing the window if drained fast. */
  #consumed(n: number): void {
    this.#pendingCredit += n;
    if (this.#pendingCredit < this.#windowSize / 2) return;
    if (!canReceive(this.#state) || this.#localClosed || this.#err) return;
    const now = performance.now();
    const max = this.#host.maxWindowBytes;
    if (this.#windowSize < max) {
      const rtt = Math.max(this.#host.rttMs ?? defaultTuningRttMs, minTuningRttMs);
      if (this.#lastUpdateAt > 0 && now - this.#lastUpdateAt < 2 * rtt) {
        const grow = Math.min(this.#windowSize, max - this.#windowSize);
        if (this.#host.reserveWindow(grow)) {
          this.#windowSize += grow;
          this.#grownBytes += grow;
          this.#pendingCredit += grow;
        }
      }
    }
    this.#lastUpdateAt = now;
    this.#enqueue(FrameType.windowUpdate, 0, this.#takeCredit(), null, false);
  }

  #fail(err: MuxError): void {
    if (!this.#err) this.#err = err;
    if (err.reason === "reset" || canReceive(this.#state)) this.#readErr ??= err;
    this.#state = StreamState.CLOSED;
    if (err.reason === "reset") this.#dropBuffered();
    const r = this.#reader;
    this.#reader = null;
    if (r) {
      if (this.#queued > 0) this.#deliver(r);
      else if (this.#readErr) r.reject(this.#readErr);
      else this.#endRead(r);
    }
    this.#windowWaiter?.reject(err);
    this.#windowWaiter = null;
    this.#maybeFree();
  }

  #maybeFree(): void {
    if (this.#freed || this.#state !== StreamState.CLOSED) return;
    this.#freed = true;
    this.#lastQueued = null;
    if (this.#heldAck) this.#dropHeldAck(); // ended (reset, session end) with the ACK unsent
    if (this.#linger) {
      deadlines.delete(this.#linger); // the FIN (or a reset) came in time
      this.#linger = null;
    }
    if (this.#grownBytes > 0) this.#host.releaseWindow(this.#grownBytes);
    this.#grownBytes = 0;
    this.#host.freeStream(this);
  }

  // ------------------------------------------------- called by the session

  /** Whether the SYN nibble is complete. */
  get _established(): boolean {
    return (this.#state & 0x0f) === 0x0f;
  }

  /** ACK flag received (or implied by the peer's first frame on a stream we opened). */
  _rxAck(): void {
    if (this.#opener) this.#state |= SYN_ACK_RX | SYN_RX | SYN_ACK_TX;
  }

  /**
   * A data frame header of `length` bytes: "ok" to deliver its payload, "discard" (stream
   * closed locally or already finished: drop silently), or "overrun" (window exceeded).
   */
  _rxData(length: number): "ok" | "discard" | "overrun" | "after-fin" {
    if (this.#err) return "discard";
    if (length > this.#recvWindow) return "overrun";
    this.#recvWindow -= length;
    if (!canReceive(this.#state)) return "after-fin";
    if (this.#localClosed) return "discard";
    return "ok";
  }

  /**
   * A piece of payload (a view valid only during the call), and how many bytes of its frame
   * follow it: queued pieces of one frame are laid together (see RecvBuffer.push).
   */
  _rxPayload(chunk: Uint8Array, rest: number): void {
    if (this.#localClosed || this.#err) return; // closed mid-frame: the rest is discarded
    const r = this.#reader;
    if (r === null || this.#queued > 0) {
      // (A reader waits only while nothing is queued; if bytes were, they go first.)
      this.#queue(chunk, rest);
      if (r !== null) {
        this.#reader = null;
        this.#deliver(r);
      }
      return;
    }
    this.#reader = null;
    if (r.p !== null) {
      const n = Math.min(chunk.length, r.p.length);
      r.p.set(n === chunk.length ? chunk : chunk.subarray(0, n));
      if (n < chunk.length) this.#queue(chunk.subarray(n), rest);
      this.#consumed(n);
      r.resolve(n);
    } else if (chunk.length <= smallViewMaxBytes) {
      // A view reader and a small payload (a request, a response): lent a copy from the
      // session's arena, with no pooled buffer taken, queued and given back per frame.
      const v = this.#host.lendSmall(chunk);
      this.#consumed(v.length);
      r.resolveView(v);
    } else {
      this.#queue(chunk, rest);
      this.#deliver(r); // lent what was just queued
    }
  }

  /**
   * Queue a copy of `chunk`, `rest` more bytes of its frame to come. A small whole payload
   * into an empty queue (a request on the SYN, waiting while its stream is accepted and its
   * target dialled) is copied into the session's small-view arena, its own size, instead of a
   * pooled 16 KiB buffer: bench/mux_mem.ts, streams accepted with a 100-byte request unread,
   * 15.9 KB of buffers per stream before this.
   */
  #queue(chunk: Uint8Array, rest: number): void {
    const rx = this.#rx ??= new RecvBuffer();
    if (rest === 0 && chunk.length <= smallViewMaxBytes && rx.length === 0) {
      rx.pushOwned(this.#host.lendSmall(chunk));
    } else rx.push(chunk, chunk.length + rest);
  }

  /** Whether a read is waiting (and nothing is queued). */
  get _readerWaiting(): boolean {
    return this.#reader !== null && this.#queued === 0;
  }

  /**
   * Hand the waiting reader's buffer (at most `max` bytes of it) to the session, which reads
   * the transport straight into it: no copy for bulk data (the session may also read the next
   * frame's header into it, past what it reports, and takes that back out). Null when no
   * reader waits with an empty queue, or its buffer is under `min(max, minBytes)`. Until
   * `_directDone`, close/reset leave that reader alone (its buffer is still being written),
   * and `_directDone` settles it. A peer stalled mid-frame delays that until
   * keepalive ends the session.
   */
  _takeDirect(max: number, minBytes: number): Uint8Array | null {
    const r = this.#reader;
    if (!r || !r.p || this.#queued > 0 || this.#localClosed || this.#err) return null;
    if (r.p.length < Math.min(max, minBytes)) return null; // many small reads cost more
    this.#bulkStarts();
    this.#reader = null;
    this.#direct = r as BufferRead;
    return r.p.length > max ? r.p.subarray(0, max) : r.p;
  }

  /**
   * Room at the end of the receive buffer for the session to read up to `max` bytes into
   * when no reader waits (one copy instead of two): payload of this stream, and perhaps the
   * next frame's header past it, which the session takes back out before `_queueDone`. Null
   * when the stream takes no more data. Must be followed by `_queueDone`.
   */
  _reserveQueue(max: number): Uint8Array | null {
    if (this.#localClosed || this.#err) return null;
    this.#bulkStarts();
    return (this.#rx ??= new RecvBuffer()).reserve(
      Math.min(max, maxQueueReadBytes),
      minQueueReadBytes,
    );
  }

  /** A bulk payload is being read for us: the first is where window growth starts timing. */
  #bulkStarts(): void {
    if (this.#lastUpdateAt === 0) this.#lastUpdateAt = performance.now();
  }

  /** The read into the reserved room ended with `n` bytes (0: none, failed). */
  _queueDone(n: number): void {
    this.#rx?.commit(n);
    const r = this.#reader;
    if (n <= 0 || !r || this.#queued === 0) return;
    this.#reader = null;
    this.#deliver(r);
  }

  /** The direct read into the reader's buffer ended with `n` bytes (0: none, failed). */
  _directDone(n: number): void {
    const r = this.#direct;
    this.#direct = null;
    if (!r) return;
    if (n > 0 && !this.#localClosed && !this.#err) {
      this.#consumed(n);
      r.resolve(n);
      return;
    }
    if (this.#localClosed) r.resolve(null);
    else if (this.#readErr) r.reject(this.#readErr);
    else if (this.#err || !canReceive(this.#state)) r.resolve(null);
    else this.#reader = r; // nothing arrived: it is simply still waiting
  }

  /** FIN received (after any payload of the same frame). */
  _rxFin(): void {
    if (this.#err || !canReceive(this.#state)) return;
    this.#state |= FIN_RX | FIN_ACK_TX;
    const r = this.#reader;
    if (r && this.#queued === 0) {
      this.#reader = null;
      this.#endRead(r);
    }
    this.#maybeFree();
  }

  /** RST received. */
  _rxReset(): void {
    this.#fail(new MuxError("reset", `stream ${this.id} reset by peer`));
  }

  /** Window update received. */
  _rxWindow(delta: number): void {
    if (delta === 0) return;
    this.#sendWindow += delta;
    const w = this.#windowWaiter;
    this.#windowWaiter = null;
    w?.resolve();
  }

  /** Our queued frame `f` reached the transport. */
  _flushed(f: OutFrame): void {
    if (this.#lastQueued === f) this.#lastQueued = null;
    if (f.type === FrameType.data) this.#unflushedBytes -= f.length;
    this._batchWritten(f.flags);
  }

  /** A frame of ours with these flags reached the transport: an ACK or FIN is done. */
  _batchWritten(flags: number): void {
    if (this.#freed) return;
    let s = this.#state;
    if ((flags & Flag.ack) !== 0) s |= SYN_ACK_RX;
    if ((flags & Flag.fin) !== 0) s |= FIN_ACK_RX;
    if (s !== this.#state) {
      this.#state = s;
      this.#maybeFree();
    }
  }

  /** The session ended: fail everything still pending (buffered data stays readable). */
  _abort(err: MuxError): void {
    if (this.#freed) return;
    this.#fail(err);
  }

  /** Whether the peer's frames still matter (for the session's RST-after-close logic). */
  get _localClosed(): boolean {
    return this.#localClosed;
  }

  /** @internal Reset the stream at `dueMs` (the wheel's clock) unless it is freed first. */
  _linger(dueMs: number): void {
    if (this.#freed || this.#linger) return;
    this.#linger = new Linger(dueMs, this);
    deadlines.add(this.#linger);
  }

  /** The peer's FIN did not come within closeLingerMs of our close(): give up on it. */
  _lingerExpired(): void {
    this.#linger = null; // off the wheel: it fired
    if (this.#freed || this.#err) return;
    this.#enqueue(FrameType.windowUpdate, Flag.rst, 0, null, false);
    this.#fail(new MuxError("reset", `stream ${this.id}: no FIN from the peer after close`));
  }

  /** Mark that we answered late data with RST: the stream is over. */
  _resetAfterClose(): void {
    if (this.#err) return;
    this.#enqueue(FrameType.windowUpdate, Flag.rst, 0, null, false);
    this.#fail(new MuxError("reset", `stream ${this.id} got data after close`));
  }
}
