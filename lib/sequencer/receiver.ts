/**
 * The receiving half of a sequenced direction: in-order delivery, a bounded reorder buffer,
 * duplicate drop, and NACKs for gaps that persist. Pure logic: time is passed in.
 * @module
 */

import { maxNackRanges, type SeqRange } from "./frame.ts";

/** Default bound on bytes held (reordered plus ready, not yet read). @default 16 MiB */
export const defaultReceiveBufferBytes = 16 * 1024 * 1024;
/** Default gap size, in frames received beyond the hole, that triggers a NACK. */
export const defaultNackGapFrames = 10;
/** Default age of a hole that triggers a NACK even if few frames arrived beyond it. */
export const defaultNackTimeoutMs = 300;
/** Default pause between two NACKs (so a hole in flight is not NACKed on every frame). */
export const defaultNackRepeatMs = 200;

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
  /** Counters. */
  readonly stats: ReceiverStats = {
    framesReceived: 0,
    duplicates: 0,
    dropped: 0,
    reorderPeakBytes: 0,
    nacksSent: 0,
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
   */
  accept(seq: number, data: Uint8Array | null, now: number): AcceptResult {
    this.stats.framesReceived++;
    if (seq < this.#next || this.#ooo.has(seq) || (this.#finSeq >= 0 && seq > this.#finSeq)) {
      this.stats.duplicates++;
      return "duplicate";
    }
    const len = data?.length ?? 0;
    if (seq !== this.#next && this.#oooBytes + this.#readyBytes + len > this.maxBufferedBytes) {
      this.stats.dropped++;
      return "dropped";
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
    return "delivered";
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
   * went out in the last `nackRepeatMs`.
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
    let s = this.#next;
    while (s < this.#highest && out.length < maxNackRanges) {
      if (this.#ooo.has(s)) {
        s++;
        continue;
      }
      const from = s;
      while (s < this.#highest && !this.#ooo.has(s)) s++;
      out.push({ from, to: s });
    }
    this.#lastNackAt = now;
    this.stats.nacksSent++;
    return out;
  }
}
