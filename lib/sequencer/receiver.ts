/**
 * The receiving half of a sequenced direction: in-order delivery, a bounded reorder buffer,
 * duplicate drop, and NACKs for gaps that persist. Pure logic: time is passed in.
 *
 * A peer is trusted for nothing: a conforming sender keeps at most `windowFrames` frames (plus
 * the fin) and its window of bytes unacknowledged, so a frame numbered further ahead of the
 * cumulative ack, or in-order bytes far past the bound, can only come from a broken or hostile
 * peer; `accept()` refuses them with a {@linkcode SequenceError} and the caller cuts the peer.
 * That bounds the frames held (whatever their length, zero included) and the NACK scan.
 * @module
 */

import { ProtocolError } from "../net/errors.ts";
import { maxNackRanges, type SeqRange } from "./frame.ts";
import { defaultSendWindowFrames } from "./sender.ts";

/** Default bound on bytes held (reordered plus ready, not yet read). @default 16 MiB */
export const defaultReceiveBufferBytes = 16 * 1024 * 1024;
/** Default gap size, in frames received beyond the hole, that triggers a NACK. */
export const defaultNackGapFrames = 10;
/** Default age of a hole that triggers a NACK even if few frames arrived beyond it. */
export const defaultNackTimeoutMs = 300;
/** Default pause between two NACKs (so a hole in flight is not NACKed on every frame). */
export const defaultNackRepeatMs = 200;

/**
 * Default distance, in frames, a frame may be ahead of the cumulative ack: the sender's frame
 * window plus its fin.
 */
export const defaultMaxFramesAhead = defaultSendWindowFrames + 1;

/**
 * In-order frames are never dropped (nothing would NACK them), but held bytes past this many
 * times the bound can only come from a sender ignoring its window: a {@linkcode SequenceError}.
 */
export const inOrderOverrunFactor = 2;

/** A frame no conforming sender sends (too far ahead, or overrunning the window): cut the peer. */
export class SequenceError extends ProtocolError {
  override name = "SequenceError";
  /** A frame outside the bounds; `reason` says which: "seq-too-far" or "window-overrun". */
  constructor(message: string, reason: "seq-too-far" | "window-overrun") {
    super(message, reason);
  }
}

/** Options of {@linkcode Receiver}. */
export interface ReceiverOptions {
  /** Bytes held at most; frames beyond are dropped (the sender's window keeps under it). */
  maxBufferedBytes?: number;
  /** A hole with at least this many sequence numbers received beyond it is NACKed. @default 10 */
  nackGapFrames?: number;
  /** A hole older than this is NACKed. @default 300 */
  nackTimeoutMs?: number;
  /** Minimum time between NACKs. @default 200 */
  nackRepeatMs?: number;
  /** Frames a seq may be ahead of the cumulative ack. @default defaultMaxFramesAhead */
  maxFramesAhead?: number;
}

/** One in-order item: a data chunk, or `null` for the direction's end (fin). */
export interface ReceivedItem {
  /** Sequence number. */
  seq: number;
  /** The bytes, or null for the fin. */
  data: Uint8Array | null;
}

/** What became of an accepted frame. */
export type AcceptResult = "delivered" | "buffered" | "duplicate" | "dropped";

/** Counters of a receiver. */
export interface ReceiverStats {
  /** Frames accepted (including duplicates and drops). */
  framesReceived: number;
  /** Frames seen before and dropped. */
  duplicates: number;
  /** Frames dropped because the buffer bound was reached (recovered by NACK). */
  dropped: number;
  /** Highest bytes held out of order at once. */
  reorderPeakBytes: number;
  /** NACKs produced. */
  nacksSent: number;
  /** Sequence numbers examined by NACK scans (the work they cost, at most `maxFramesAhead` each). */
  nackScanSteps: number;
  /** Highest frames held at once (out of order plus ready). */
  heldFramesPeak: number;
}

/**
 * Reassembles one direction. `accept()` each arriving frame; `shift()` takes the next
 * in-order item (that is what the cumulative ack counts); `nacks(now)` says which holes to
 * ask for, when it is time to.
 */
export class Receiver {
  /** Bytes held at most (reordered plus ready). */
  readonly maxBufferedBytes: number;
  /** Frames beyond a hole that trigger a NACK. */
  readonly nackGapFrames: number;
  /** Age of a hole that triggers a NACK. */
  readonly nackTimeoutMs: number;
  /** Minimum time between NACKs. */
  readonly nackRepeatMs: number;
  /** Frames a seq may be ahead of the cumulative ack. */
  readonly maxFramesAhead: number;
  /** Counters. */
  readonly stats: ReceiverStats = {
    framesReceived: 0,
    duplicates: 0,
    dropped: 0,
    reorderPeakBytes: 0,
    nacksSent: 0,
    nackScanSteps: 0,
    heldFramesPeak: 0,
  };

  #next = 0; // next seq to move to the ready queue
  #ooo = new Map<number, Uint8Array | null>();
  #oooBytes = 0;
  #highest = -1;
  #ready: ReceivedItem[] = [];
  #readyHead = 0;
  #readyBytes = 0;
  #consumed = 0; // every seq below this was shifted out
  #finSeq = -1;
  #gapSeq = -1;
  #gapSince = 0;
  #lastNackAt = -Infinity;

  /** A receiver expecting seq 0. */
  constructor(opts: ReceiverOptions = {}) {
    this.maxBufferedBytes = opts.maxBufferedBytes ?? defaultReceiveBufferBytes;
    this.nackGapFrames = opts.nackGapFrames ?? defaultNackGapFrames;
    this.nackTimeoutMs = opts.nackTimeoutMs ?? defaultNackTimeoutMs;
    this.nackRepeatMs = opts.nackRepeatMs ?? defaultNackRepeatMs;
    this.maxFramesAhead = opts.maxFramesAhead ?? defaultMaxFramesAhead;
  }

  /** The cumulative ack: every seq below it was handed to the application. */
  get cumAck(): number {
    return this.#consumed;
  }
  /** Next seq expected in order. */
  get nextSeq(): number {
    return this.#next;
  }
  /** Bytes held out of order now. */
  get reorderBytes(): number {
    return this.#oooBytes;
  }
  /** Bytes ready in order, not yet shifted. */
  get readyBytes(): number {
    return this.#readyBytes;
  }
  /** Frames held now (out of order plus ready, fin included). */
  get heldFrames(): number {
    return this.#ooo.size + this.#ready.length - this.#readyHead;
  }
  /** Whether an in-order item is waiting. */
  get hasReady(): boolean {
    return this.#readyHead < this.#ready.length;
  }
  /** Whether the fin was shifted out (the direction is finished). */
  get finished(): boolean {
    return this.#finSeq >= 0 && this.#consumed > this.#finSeq;
  }

  /**
   * Take one arriving frame (`data === null` is the fin). Duplicates and frames past the
   * fin are dropped; frames that would exceed the bound are dropped and NACKed later.
   * Throws {@linkcode SequenceError} (state unchanged) for a seq `maxFramesAhead` or more past
   * the cumulative ack, or an in-order frame overrunning the bound `inOrderOverrunFactor` times.
   */
  accept(seq: number, data: Uint8Array | null, now: number): AcceptResult {
    this.stats.framesReceived++;
    if (seq - this.#consumed >= this.maxFramesAhead) {
      throw new SequenceError(
        `frame seq ${seq} is ${seq - this.#consumed} ahead of the acknowledged ${this.#consumed} ` +
          `(at most ${this.maxFramesAhead - 1})`,
        "seq-too-far",
      );
    }
    if (seq < this.#next || this.#ooo.has(seq) || (this.#finSeq >= 0 && seq > this.#finSeq)) {
      this.stats.duplicates++;
      return "duplicate";
    }
    const len = data?.length ?? 0;
    const held = this.#oooBytes + this.#readyBytes + len;
    if (seq !== this.#next && held > this.maxBufferedBytes) {
      this.stats.dropped++;
      return "dropped";
    }
    if (held > inOrderOverrunFactor * this.maxBufferedBytes) {
      throw new SequenceError(
        `${held} bytes held with frame ${seq}, over ${inOrderOverrunFactor} x the bound ` +
          `${this.maxBufferedBytes}: the sender ignores its window`,
        "window-overrun",
      );
    }
    if (data === null) this.#finSeq = seq;
    if (seq !== this.#next) {
      this.#ooo.set(seq, data);
      this.#oooBytes += len;
      if (this.#oooBytes > this.stats.reorderPeakBytes) {
        this.stats.reorderPeakBytes = this.#oooBytes;
      }
      if (seq > this.#highest) this.#highest = seq;
      if (this.#gapSeq !== this.#next) {
        this.#gapSeq = this.#next;
        this.#gapSince = now;
      }
      this.#notePeak();
      return "buffered";
    }
    this.#pushReady(seq, data);
    this.#next++;
    while (this.#ooo.has(this.#next)) {
      const d = this.#ooo.get(this.#next)!;
      this.#ooo.delete(this.#next);
      this.#oooBytes -= d?.length ?? 0;
      this.#pushReady(this.#next, d);
      this.#next++;
    }
    if (this.#highest < this.#next - 1) this.#highest = this.#next - 1;
    if (this.#ooo.size > 0 && this.#gapSeq !== this.#next) {
      this.#gapSeq = this.#next;
      this.#gapSince = now;
    }
    this.#notePeak();
    return "delivered";
  }

  #notePeak(): void {
    const held = this.heldFrames;
    if (held > this.stats.heldFramesPeak) this.stats.heldFramesPeak = held;
  }

  #pushReady(seq: number, data: Uint8Array | null): void {
    this.#ready.push({ seq, data });
    this.#readyBytes += data?.length ?? 0;
  }

  /** The next in-order item, counted as consumed (the cumulative ack moves past it). */
  shift(): ReceivedItem | undefined {
    if (this.#readyHead >= this.#ready.length) return undefined;
    const item = this.#ready[this.#readyHead++];
    if (this.#readyHead > 1024 && this.#readyHead * 2 > this.#ready.length) {
      this.#ready = this.#ready.slice(this.#readyHead);
      this.#readyHead = 0;
    }
    this.#readyBytes -= item.data?.length ?? 0;
    this.#consumed = item.seq + 1;
    return item;
  }

  /**
   * Holes to NACK now, or an empty list. A hole is NACKed when at least `nackGapFrames`
   * sequence numbers beyond it arrived or it is older than `nackTimeoutMs`, and no NACK
   * went out in the last `nackRepeatMs`. The scan covers at most `maxFramesAhead` seqs
   * (everything held lies within that distance of the cumulative ack).
   */
  nacks(now: number): SeqRange[] {
    if (this.#ooo.size === 0) return [];
    if (this.#gapSeq !== this.#next) {
      this.#gapSeq = this.#next;
      this.#gapSince = now;
    }
    const due = this.#highest - this.#next >= this.nackGapFrames ||
      now - this.#gapSince >= this.nackTimeoutMs;
    if (!due || now - this.#lastNackAt < this.nackRepeatMs) return [];
    const out: SeqRange[] = [];
    const start = this.#next;
    let s = start;
    while (s < this.#highest && out.length < maxNackRanges) {
      if (this.#ooo.has(s)) {
        s++;
        continue;
      }
      const from = s;
      while (s < this.#highest && !this.#ooo.has(s)) s++;
      out.push({ from, to: s });
    }
    this.stats.nackScanSteps += s - start;
    this.#lastNackAt = now;
    this.stats.nacksSent++;
    return out;
  }
}
