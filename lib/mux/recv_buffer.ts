/**
 * `RecvBuffer`: the bytes a stream received while no reader was waiting.
 *
 * Why not a list of copied chunks: every `slice()` is a fresh, zero-filled allocation that the
 * GC frees again; in bulk transfers through a busy relay that was a sixth of a process's CPU
 * (memset, page faults). Here a stream holds one contiguous buffer from a shared pool while
 * data waits, and gives it back as soon as the reader has drained it, so an idle stream
 * holds nothing.
 * @module
 */

import { BufferPool } from "../net/pool.ts";

/** Smallest receive buffer a stream takes from the pool. */
const minRecvBufferBytes = 16 * 1024;
/** Largest pooled class; bigger needs (a window past it) are allocated unpooled. */
const maxPooledRecvBufferBytes = 4 * 1024 * 1024;
/** Free plus lent bytes the shared pool may hold before it stops keeping freed buffers. */
const recvPoolBudgetBytes = 64 * 1024 * 1024;

/** The pool all streams of the process share. */
const recvPool = new BufferPool(
  recvPoolBudgetBytes,
  minRecvBufferBytes,
  maxPooledRecvBufferBytes,
);

const empty = new Uint8Array(0);

/**
 * A FIFO of bytes in one reusable buffer: `push` copies in, `take` copies out; or
 * `reserve` + `commit` to read the transport straight into the buffer (one copy fewer).
 */
export class RecvBuffer {
  #buf: Uint8Array = empty;
  /** Whether `#buf` came from the pool (an unpooled one is left to the GC). */
  #pooled = false;
  #start = 0;
  #end = 0;
  /** Bytes at `#end` lent to a read in flight: the buffer must not move or go back. */
  #reserved = 0;
  /** `clear()` came during a reservation: drop everything at `commit`. */
  #dropAtCommit = false;

  /** Bytes waiting. */
  get length(): number {
    return this.#end - this.#start;
  }

  /** Append a copy of `chunk` (a view the caller may reuse afterwards). */
  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    if (this.#reserved > 0) throw new Error("RecvBuffer: push during a reservation");
    if (this.#end + chunk.length > this.#buf.length) this.#makeRoom(chunk.length);
    this.#buf.set(chunk, this.#end);
    this.#end += chunk.length;
  }

  /** Move up to `p.length` waiting bytes into `p`; returns how many. */
  take(p: Uint8Array): number {
    const n = Math.min(p.length, this.#end - this.#start);
    p.set(this.#buf.subarray(this.#start, this.#start + n));
    this.#start += n;
    if (this.#start === this.#end && this.#reserved === 0) this.clear();
    return n;
  }

  /**
   * Room for up to `n` more bytes at the end, to read into: what the buffer has free there if
   * that is at least `minBytes` (a transport read rarely fills a big room, and making room
   * moves or regrows the waiting bytes: that copy was a sixth of a relaying process's CPU),
   * else `n` bytes made room for. Until `commit`, the buffer stays put (and `clear` is
   * deferred to it).
   */
  reserve(n: number, minBytes: number = n): Uint8Array {
    if (this.#reserved > 0) throw new Error("RecvBuffer: already reserved");
    const free = this.#buf.length - this.#end;
    if (free < Math.min(n, minBytes)) this.#makeRoom(n);
    const room = Math.min(n, this.#buf.length - this.#end);
    this.#reserved = room;
    return this.#buf.subarray(this.#end, this.#end + room);
  }

  /** The read into the reserved room ended with `n` bytes (0: none). */
  commit(n: number): void {
    this.#reserved = 0;
    if (this.#dropAtCommit) {
      this.#dropAtCommit = false;
      this.clear();
      return;
    }
    this.#end += Math.max(0, n);
    if (this.#start === this.#end) this.clear();
  }

  /** Drop what waits and give the buffer back. */
  clear(): void {
    if (this.#reserved > 0) {
      // A read is writing into the buffer: forget the data now, hand it back at commit.
      this.#start = this.#end;
      this.#dropAtCommit = true;
      return;
    }
    if (this.#pooled) recvPool.release(this.#buf);
    this.#buf = empty;
    this.#pooled = false;
    this.#start = this.#end = 0;
  }

  #makeRoom(more: number): void {
    const len = this.#end - this.#start;
    const need = len + more;
    if (need <= this.#buf.length && len <= this.#start) {
      // Moves no more bytes than it frees: each byte is moved O(1) times overall.
      this.#buf.copyWithin(0, this.#start, this.#end);
    } else {
      // Doubling: a backlog that keeps growing is copied O(1) times per byte.
      const want = Math.max(need, this.#buf.length * 2);
      let next = recvPool.acquire(want);
      let pooled = true;
      if (next.length < need) {
        // Over the pool's budget, or past its largest class: an unpooled buffer.
        recvPool.release(next);
        next = new Uint8Array(want);
        pooled = false;
      }
      next.set(this.#buf.subarray(this.#start, this.#end));
      if (this.#pooled) recvPool.release(this.#buf);
      this.#buf = next;
      this.#pooled = pooled;
    }
    this.#start = 0;
    this.#end = len;
  }
}
