/**
 * The sending half of a sequenced direction: numbers frames, keeps them until the peer's
 * cumulative ack, bounds them (backpressure), assigns each to a path through a scheduler
 * and each path's in-flight cap, and resends on NACK or path death -- on another path when
 * one can take it. Pure logic: time is passed in, I/O is the caller's.
 * @module
 */

import { dataFrameBytes, finFrameBytes, type SeqRange } from "./frame.ts";
import { type PathCapOptions, PathTx } from "./path.ts";
import { hasRoom, type PathView, type Scheduler, WeightedScheduler } from "./scheduler.ts";

/** Default bound on unacknowledged payload bytes. @default 16 MiB */
export const defaultSendWindowBytes = 16 * 1024 * 1024;
/** Default bound on unacknowledged frames (keeps gap scans short with tiny writes). */
export const defaultSendWindowFrames = 8192;
/** A NACKed frame on a live path is resent only if the path made no progress this long. */
export const defaultStallMs = 200;

/** Options of {@linkcode Sender}. */
export interface SenderOptions {
  /** Unacknowledged payload bytes at most. @default 16 MiB */
  windowBytes?: number;
  /** Unacknowledged frames at most. @default 8192 */
  windowFrames?: number;
  /** Path choice. @default WeightedScheduler */
  scheduler?: Scheduler;
  /** Minimum time without progress before a live path counts as stalled. @default 200 */
  stallMs?: number;
  /** Per-path in-flight cap tuning. */
  pathCap?: PathCapOptions;
}

/** A frame kept until acknowledged. */
export interface StoredFrame {
  /** Sequence number. */
  seq: number;
  /** Payload, or null for the fin. */
  data: Uint8Array | null;
  /** Wire size. */
  bytes: number;
  /** Path it was last assigned to (-1: never sent). */
  path: number;
  /** Waiting in the resend queue. */
  queued: boolean;
  /** Times sent. */
  sends: number;
  /** The path's assigned-byte counter after this frame (acked on it once reached). */
  pathEnd: number;
}

/** One scheduling decision: send `frame` on path `path`. */
export interface Assignment {
  /** Path id to send on. */
  path: number;
  /** The frame. */
  frame: StoredFrame;
  /** Whether it is a resend. */
  resend: boolean;
}

/** Counters of a sender. */
export interface SenderStats {
  /** Frames assigned to paths (first sends and resends). */
  framesSent: number;
  /** Wire bytes assigned to paths. */
  bytesSent: number;
  /** Frames sent again. */
  resentFrames: number;
  /** Wire bytes sent again. */
  resentBytes: number;
  /** NACKed frames not resent because their path was still delivering. */
  nacksIgnored: number;
}

/** A peer acknowledged something never sent. */
export class AckError extends Error {
  /** Error name. */
  override name = "AckError";
  /** Machine-readable reason. */
  readonly reason = "bad-ack";
}

/**
 * Sender state of one direction.
 *
 * Flow: `push()` data while `hasRoom()`; call `next(now)` until null and write each
 * assignment's frame on its path; feed back `onPathAck`, `onCumAck`, `onNack`,
 * `removePath`.
 */
export class Sender {
  /** Current window: the configured one, or less if the peer buffers less. */
  windowBytes: number;
  /** Unacknowledged frames at most. */
  readonly windowFrames: number;
  /** Path choice. */
  readonly scheduler: Scheduler;
  /** Time without progress after which a live path counts as stalled. */
  readonly stallMs: number;
  /** Counters. */
  readonly stats: SenderStats = {
    framesSent: 0,
    bytesSent: 0,
    resentFrames: 0,
    resentBytes: 0,
    nacksIgnored: 0,
  };
  #pathCap: PathCapOptions;
  #store: StoredFrame[] = [];
  #storeHead = 0;
  #base = 0; // lowest unacknowledged seq
  #next = 0; // next seq to number
  #unsent = 0; // lowest seq never sent
  #unackedBytes = 0;
  #resend: number[] = [];
  #paths = new Map<number, PathTx>();
  #finSeq = -1;

  /** A sender numbering from seq 0, with no path yet. */
  constructor(opts: SenderOptions = {}) {
    this.windowBytes = opts.windowBytes ?? defaultSendWindowBytes;
    this.windowFrames = opts.windowFrames ?? defaultSendWindowFrames;
    this.scheduler = opts.scheduler ?? new WeightedScheduler();
    this.stallMs = opts.stallMs ?? defaultStallMs;
    this.#pathCap = opts.pathCap ?? {};
  }

  /** Never keep more than `bytes` unacknowledged (the peer's receive bound). */
  limitWindow(bytes: number): void {
    if (bytes > 0 && bytes < this.windowBytes) this.windowBytes = bytes;
  }

  /** Payload bytes kept, unacknowledged. */
  get unackedBytes(): number {
    return this.#unackedBytes;
  }
  /** Frames kept, unacknowledged. */
  get unackedFrames(): number {
    return this.#next - this.#base;
  }
  /** Next seq to be numbered. */
  get nextSeq(): number {
    return this.#next;
  }
  /** Whether the fin was pushed. */
  get finPushed(): boolean {
    return this.#finSeq >= 0;
  }
  /** Whether the fin (and so every byte) was acknowledged. */
  get finAcked(): boolean {
    return this.#finSeq >= 0 && this.#base > this.#finSeq;
  }
  /** Whether there is something to send that no path took yet. */
  get pending(): boolean {
    return this.#unsent < this.#next || this.#resend.length > 0;
  }

  /** Whether a frame of `len` payload bytes fits the window (always, when nothing is kept). */
  hasRoom(len: number): boolean {
    if (this.#next === this.#base) return true;
    return this.#unackedBytes + len <= this.windowBytes && this.unackedFrames < this.windowFrames;
  }

  /** Number a data frame; the caller must not reuse `data`. Returns its seq. */
  push(data: Uint8Array): number {
    if (this.#finSeq >= 0) throw new Error("push after fin");
    return this.#add(data, dataFrameBytes(data.length));
  }

  /** Number the fin (end of this direction). */
  pushFin(): number {
    if (this.#finSeq >= 0) return this.#finSeq;
    this.#finSeq = this.#add(null, finFrameBytes);
    return this.#finSeq;
  }

  #add(data: Uint8Array | null, bytes: number): number {
    const seq = this.#next++;
    this.#store.push({ seq, data, bytes, path: -1, queued: false, sends: 0, pathEnd: 0 });
    this.#unackedBytes += data?.length ?? 0;
    return seq;
  }

  #get(seq: number): StoredFrame | undefined {
    if (seq < this.#base || seq >= this.#next) return undefined;
    return this.#store[this.#storeHead + (seq - this.#base)];
  }

  /** Start using path `id`. */
  addPath(id: number, now: number): PathTx {
    const p = new PathTx(id, now, this.#pathCap);
    this.#paths.set(id, p);
    return p;
  }

  /** The send-side state of path `id`. */
  path(id: number): PathTx | undefined {
    return this.#paths.get(id);
  }

  /** Ids of live paths. */
  get pathIds(): number[] {
    return [...this.#paths.keys()];
  }

  /**
   * Stop using path `id`: its unacknowledged frames go to the resend queue. Returns how
   * many were queued.
   */
  removePath(id: number): number {
    const p = this.#paths.get(id);
    if (!p) return 0;
    this.#paths.delete(id);
    let n = 0;
    for (const seq of p.unacked()) {
      const f = this.#get(seq);
      if (f && f.path === id && !f.queued) {
        this.#queueResend(f);
        n++;
      }
    }
    return n;
  }

  #queueResend(f: StoredFrame): void {
    f.queued = true;
    // Keep the queue sorted: the lowest hole blocks delivery the longest.
    let i = this.#resend.length;
    while (i > 0 && this.#resend[i - 1] > f.seq) i--;
    this.#resend.splice(i, 0, f.seq);
  }

  /** The next frame to send and its path, or null (nothing to send, or no path has room). */
  next(now: number): Assignment | null {
    while (this.#resend.length > 0) {
      const f = this.#get(this.#resend[0]);
      if (!f || !f.queued) {
        this.#resend.shift(); // acknowledged meanwhile
        continue;
      }
      const path = this.#pick(f, f.path);
      if (path === undefined) return null;
      this.#resend.shift();
      f.queued = false;
      this.stats.resentFrames++;
      this.stats.resentBytes += f.bytes;
      path.resentFrames++;
      path.resentBytes += f.bytes;
      return this.#assign(f, path, now, true);
    }
    if (this.#unsent < this.#next) {
      const f = this.#get(this.#unsent)!;
      const path = this.#pick(f, -1);
      if (path === undefined) return null;
      this.#unsent++;
      return this.#assign(f, path, now, false);
    }
    return null;
  }

  #assign(f: StoredFrame, path: PathTx, now: number, resend: boolean): Assignment {
    f.path = path.id;
    f.sends++;
    path.assign(f.seq, f.bytes, now);
    f.pathEnd = path.assignedBytes;
    this.stats.framesSent++;
    this.stats.bytesSent += f.bytes;
    return { path: path.id, frame: f, resend };
  }

  /** Pick a path for `f`, avoiding path `avoid` when another live path exists. */
  #pick(f: StoredFrame, avoid: number): PathTx | undefined {
    let live = [...this.#paths.values()];
    if (live.length === 0) return undefined;
    if (avoid >= 0 && live.length > 1) live = live.filter((p) => p.id !== avoid);
    const views: PathView[] = live.map((p) => p.view());
    const i = this.scheduler.pick(views, f.bytes);
    if (i < 0 || !hasRoom(views[i], f.bytes)) return undefined;
    return live[i];
  }

  /** The peer received `bytes` in total on path `id`. Throws AckError if impossible. */
  onPathAck(id: number, bytes: number, now: number): void {
    const p = this.#paths.get(id);
    if (p && !p.onAck(bytes, now)) throw new AckError(`path ${id} acked ${bytes} bytes`);
  }

  /** The peer consumed every seq below `cum`. Returns the payload bytes freed. */
  onCumAck(cum: number): number {
    if (cum > this.#next) throw new AckError(`cumulative ack ${cum} beyond ${this.#next}`);
    let freed = 0;
    while (this.#base < cum) {
      const f = this.#store[this.#storeHead];
      freed += f.data?.length ?? 0;
      f.queued = false;
      this.#storeHead++;
      this.#base++;
    }
    if (this.#unsent < this.#base) this.#unsent = this.#base;
    this.#unackedBytes -= freed;
    if (this.#storeHead > 1024 && this.#storeHead * 2 > this.#store.length) {
      this.#store = this.#store.slice(this.#storeHead);
      this.#storeHead = 0;
    }
    return freed;
  }

  /**
   * The peer is missing `ranges`. A frame is resent when its path is gone or stalled
   * (nothing acknowledged on it for `stallMs` or 3 heartbeat RTTs, whichever is longer);
   * a frame still travelling on a delivering path would only arrive twice.
   */
  onNack(ranges: readonly SeqRange[], now: number): number {
    let n = 0;
    for (const r of ranges) {
      const to = Math.min(r.to, this.#unsent);
      for (let seq = Math.max(r.from, this.#base); seq < to; seq++) {
        const f = this.#get(seq);
        if (!f || f.queued || f.path < 0) continue;
        const p = this.#paths.get(f.path);
        // Acknowledged on its path but still missing: the peer dropped it (buffer bound).
        const arrived = p !== undefined && p.ackedBytes >= f.pathEnd;
        if (p && !arrived && !this.isStalled(p, now)) {
          this.stats.nacksIgnored++;
          continue;
        }
        this.#queueResend(f);
        n++;
      }
    }
    return n;
  }

  /** Whether live path `p` has frames in flight and acknowledged none of them lately. */
  isStalled(p: PathTx, now: number): boolean {
    if (p.inflightBytes === 0) return false;
    const since = Math.max(p.lastProgressAt, p.oldestSentAt);
    return now - since > Math.max(this.stallMs, 3 * p.srttMs);
  }
}
