/**
 * One path's send-side bookkeeping: bytes assigned vs acknowledged on it, the frames in
 * flight on it (to resend when it dies), and the estimates that size its in-flight cap:
 * delivery rate (windowed max) and minimum ack round trip.
 * @module
 */

import type { PathView } from "./scheduler.ts";

/** Tuning of the per-path in-flight cap. */
export interface PathCapOptions {
  /** Cap while nothing is measured yet. @default 256 KiB */
  initialCapBytes?: number;
  /** Floor of the cap. @default 128 KiB */
  minCapBytes?: number;
  /** Ceiling of the cap. @default 8 MiB */
  maxCapBytes?: number;
  /** Cap = gain × rate × (minRtt + slack). @default 2 */
  gain?: number;
  /** Added to the minimum RTT: covers ack delay and event-loop jitter. @default 50 */
  slackMs?: number;
  /** Window of the delivery-rate max filter. @default 2000 */
  rateWindowMs?: number;
}

/**
 * A delivery-rate sample spans at least this long: acks come in bursts when the receiver
 * reads late, and a short interval would turn a burst into a wildly high rate.
 */
const rateIntervalMs = 100;
/** A young path gives its first sample once this much ack history exists. */
const minRateIntervalMs = 20;
/** Rate samples are kept as one max per bucket of this length. */
const rateBucketMs = 50;

/** A frame assigned to a path, in assignment order. */
interface InFlight {
  seq: number;
  /** The path's assigned-byte counter after this frame. */
  end: number;
  sentAt: number;
}

/** Send-side state of one path. */
export class PathTx {
  /** Wire bytes of sequenced frames assigned to this path. */
  assignedBytes = 0;
  /** Wire bytes the peer acknowledged receiving on this path. */
  ackedBytes = 0;
  /** Frames sent on this path that were resends. */
  resentFrames = 0;
  /** Wire bytes of those resends. */
  resentBytes = 0;
  /** Last time the path's ack advanced (or it was created). */
  lastProgressAt: number;
  /** Lowest ack RTT sample, ms (0 = none yet). */
  minRttMs = 0;
  /** Smoothed heartbeat RTT, ms (0 = none yet): includes the queue on the path. */
  srttMs = 0;
  #fifo: InFlight[] = [];
  #head = 0;
  /** Max rate per bucket, oldest first. */
  #buckets: { at: number; rate: number }[] = [];
  #rate = 0;
  /** Ack history (time, bytes acknowledged) over the last rate interval or so. */
  #history: { at: number; acked: number }[] = [];
  readonly #o: Required<PathCapOptions>;

  /** State of path `id`, created at `now`. */
  constructor(readonly id: number, now: number, opts: PathCapOptions = {}) {
    this.lastProgressAt = now;
    this.#history.push({ at: now, acked: 0 });
    this.#o = {
      initialCapBytes: opts.initialCapBytes ?? 256 * 1024,
      minCapBytes: opts.minCapBytes ?? 128 * 1024,
      maxCapBytes: opts.maxCapBytes ?? 8 * 1024 * 1024,
      gain: opts.gain ?? 2,
      slackMs: opts.slackMs ?? 50,
      rateWindowMs: opts.rateWindowMs ?? 2000,
    };
  }

  /** Bytes in flight (assigned, not acknowledged). */
  get inflightBytes(): number {
    return this.assignedBytes - this.ackedBytes;
  }

  /** Windowed-max delivery rate, bytes/s (0 while unknown). */
  get rateBytesPerSec(): number {
    return this.#rate;
  }

  /** The in-flight cap: about `gain` bandwidth-delay products. */
  get capBytes(): number {
    const rate = this.rateBytesPerSec;
    if (rate === 0) return this.#o.initialCapBytes;
    const bdp = this.#o.gain * rate * (this.minRttMs + this.#o.slackMs) / 1000;
    return Math.round(Math.min(this.#o.maxCapBytes, Math.max(this.#o.minCapBytes, bdp)));
  }

  /** Time the oldest unacknowledged frame on this path was sent, or -1 if none. */
  get oldestSentAt(): number {
    return this.#head < this.#fifo.length ? this.#fifo[this.#head].sentAt : -1;
  }

  /** Record a frame of `bytes` wire bytes assigned to this path. */
  assign(seq: number, bytes: number, now: number): void {
    if (this.inflightBytes === 0) {
      // Idle until now: restart the history so idle time does not dilute samples.
      this.#history = [{ at: now, acked: this.ackedBytes }];
      this.lastProgressAt = now;
    }
    this.assignedBytes += bytes;
    this.#fifo.push({ seq, end: this.assignedBytes, sentAt: now });
  }

  /**
   * The peer says it received `ackedBytes` in total on this path. Returns false if that is
   * more than was ever sent (a broken peer).
   */
  onAck(ackedBytes: number, now: number): boolean {
    if (ackedBytes > this.assignedBytes) return false;
    if (ackedBytes <= this.ackedBytes) return true;
    this.ackedBytes = ackedBytes;
    this.lastProgressAt = now;
    while (this.#head < this.#fifo.length && this.#fifo[this.#head].end <= ackedBytes) {
      const f = this.#fifo[this.#head++];
      const rtt = now - f.sentAt;
      if (this.minRttMs === 0 || rtt < this.minRttMs) this.minRttMs = Math.max(0.05, rtt);
    }
    if (this.#head > 256 && this.#head * 2 > this.#fifo.length) {
      this.#fifo = this.#fifo.slice(this.#head);
      this.#head = 0;
    }
    // Delivery rate over the last >= rateIntervalMs of ack history.
    const h = this.#history;
    while (h.length > 1 && now - h[1].at >= rateIntervalMs) h.shift();
    const span = now - h[0].at;
    if (span >= minRateIntervalMs) {
      this.#addRateSample((ackedBytes - h[0].acked) / span * 1000, now);
    }
    h.push({ at: now, acked: ackedBytes });
    return true;
  }

  #addRateSample(rate: number, now: number): void {
    const b = this.#buckets;
    const tail = b[b.length - 1];
    if (tail && now - tail.at < rateBucketMs) {
      if (rate > tail.rate) tail.rate = rate;
    } else {
      b.push({ at: now, rate });
    }
    while (b.length > 1 && now - b[0].at > this.#o.rateWindowMs) b.shift();
    let m = 0;
    for (const x of b) if (x.rate > m) m = x.rate;
    this.#rate = m;
  }

  /** A heartbeat round trip was measured. */
  onHeartbeatRtt(rttMs: number): void {
    this.srttMs = this.srttMs === 0 ? rttMs : this.srttMs * 0.875 + rttMs * 0.125;
  }

  /** Seqs still unacknowledged on this path, oldest first (to resend when it dies). */
  unacked(): number[] {
    const out: number[] = [];
    for (let i = this.#head; i < this.#fifo.length; i++) out.push(this.#fifo[i].seq);
    return out;
  }

  /** The scheduler's view. */
  view(): PathView {
    return {
      id: this.id,
      inflightBytes: this.inflightBytes,
      capBytes: this.capBytes,
      rateBytesPerSec: this.rateBytesPerSec,
      minRttMs: this.minRttMs,
    };
  }
}
