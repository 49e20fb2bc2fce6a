/**
 * `RecvBuffer`: the bytes a stream received while no reader was waiting.
 *
 * Why not a list of copied chunks: every `slice()` is a fresh, zero-filled allocation that the
 * GC frees again; in bulk transfers through a busy relay that was a sixth of a process's CPU
 * (memset, page faults). Why not one contiguous buffer (as before): keeping it contiguous moved
 * or regrew the waiting bytes whenever the session needed room at its end (`makeRoom`, 6 % of
 * a relaying depot-server's busy time), and a window past 4 MiB meant unpooled buffers. Here
 * the bytes wait in a queue of buffers from a shared pool, which the session reads the
 * transport straight into, nothing is ever moved, each buffer goes back as soon as it has been
 * read, and an idle stream holds nothing. `takeView` lends the waiting bytes themselves to a
 * reader that writes them on (`relay()`): no copy out either.
 * @module
 */

import { BufferPool } from "../net/pool.ts";

/** Smallest buffer a stream takes from the pool. */
const minRecvBufferBytes = 16 * 1024;
/** Largest pooled class. */
const maxPooledRecvBufferBytes = 4 * 1024 * 1024;
/** Free plus lent bytes the shared pool may hold before it stops keeping freed buffers. */
const recvPoolBudgetBytes = 64 * 1024 * 1024;

/** The pool all streams of the process share. */
const recvPool = new BufferPool(
  recvPoolBudgetBytes,
  minRecvBufferBytes,
  maxPooledRecvBufferBytes,
);

/** One buffer of the queue: bytes `[start, end)` wait, `[end, buf.length)` is free. */
interface Chunk {
  buf: Uint8Array;
  /** Whether `buf` came from the pool (an unpooled one is left to the GC). */
  pooled: boolean;
  start: number;
  end: number;
}

function newChunk(want: number, atLeast: number): Chunk {
  const buf = recvPool.acquire(want);
  if (buf.length >= atLeast) return { buf, pooled: true, start: 0, end: 0 };
  // Over the pool's budget: the pool granted a smaller class than the caller needs.
  recvPool.release(buf);
  return { buf: new Uint8Array(atLeast), pooled: false, start: 0, end: 0 };
}

function freeChunk(c: Chunk): void {
  if (c.pooled) recvPool.release(c.buf);
}

/**
 * A FIFO of bytes in pooled buffers: `push` copies in, `take` copies out; `reserve` +
 * `commit` read the transport straight into it, `takeView` lends waiting bytes out.
 */
export class RecvBuffer {
  #chunks: Chunk[] = [];
  #length = 0;
  /** The chunk lent to a read in flight (`reserve`): it must not go back to the pool. */
  #reserved: Chunk | null = null;
  /** `clear()` came during a reservation: drop what the read brings at `commit`. */
  #dropAtCommit = false;
  /** The chunk the last `takeView` lent out: back to the pool only at `releaseView`. */
  #lent: Chunk | null = null;
  /** Whether `#lent` has left the queue (consumed or cleared) and waits only for release. */
  #lentDetached = false;

  /** Bytes waiting. */
  get length(): number {
    return this.#length;
  }

  /**
   * Append a copy of `chunk` (a view the caller may reuse afterwards). `expect`: the bytes
   * this one starts, when more follow at once (the rest of a frame's payload, which the
   * session hands over in slices): a fresh buffer is sized for them all, so the slices lie
   * together and leave in one view instead of one each.
   */
  push(chunk: Uint8Array, expect: number = chunk.length): void {
    if (this.#reserved) throw new Error("RecvBuffer: push during a reservation");
    let off = 0;
    while (off < chunk.length) {
      let tail = this.#tail();
      if (tail === undefined || tail.end === tail.buf.length) {
        tail = newChunk(Math.max(expect, chunk.length) - off, minRecvBufferBytes);
        this.#chunks.push(tail);
      }
      const k = Math.min(chunk.length - off, tail.buf.length - tail.end);
      tail.buf.set(chunk.subarray(off, off + k), tail.end);
      tail.end += k;
      off += k;
    }
    this.#length += chunk.length;
  }

  /**
   * Append `bytes` themselves, not a copy: a buffer the queue may keep until they are read and
   * that nothing writes again (a small payload's copy in the session's arena), so a small
   * request waiting for its reader holds a buffer of its size, not a pooled 16 KiB one. Later
   * pushes and reservations never write into it (it has no free room).
   */
  pushOwned(bytes: Uint8Array): void {
    if (this.#reserved) throw new Error("RecvBuffer: push during a reservation");
    if (bytes.length === 0) return;
    this.#chunks.push({ buf: bytes, pooled: false, start: 0, end: bytes.length });
    this.#length += bytes.length;
  }

  /** Move up to `p.length` waiting bytes into `p`; returns how many. */
  take(p: Uint8Array): number {
    let n = 0;
    while (n < p.length && this.#length > 0) {
      const c = this.#chunks[0];
      const k = Math.min(p.length - n, c.end - c.start);
      p.set(c.buf.subarray(c.start, c.start + k), n);
      n += k;
      this.#consume(c, k);
    }
    return n;
  }

  /**
   * Lend up to `max` waiting bytes as they lie (one buffer's worth at most): valid until
   * `releaseView`, which must come before the next `takeView` and once the borrower is done
   * with them. Empty when nothing waits.
   */
  takeView(max: number): Uint8Array {
    if (this.#lent) throw new Error("RecvBuffer: takeView before releaseView");
    const c = this.#chunks[0];
    if (!c || this.#length === 0) return new Uint8Array(0);
    const k = Math.min(max, c.end - c.start);
    const view = c.buf.subarray(c.start, c.start + k);
    this.#lent = c;
    this.#consume(c, k);
    return view;
  }

  /** The borrower of the last `takeView` is done with it. */
  releaseView(): void {
    const c = this.#lent;
    if (!c) return;
    this.#lent = null;
    if (this.#lentDetached && c !== this.#reserved) freeChunk(c);
    this.#lentDetached = false;
  }

  /**
   * Room for up to `n` more bytes at the end, to read into: what the last buffer has free if
   * that is at least `min(n, minBytes)` (a transport read rarely fills a big room), else a
   * fresh buffer of about `n`. Until `commit`, that buffer stays put (and `clear` is
   * deferred to it).
   */
  reserve(n: number, minBytes: number = n): Uint8Array {
    if (this.#reserved) throw new Error("RecvBuffer: already reserved");
    const need = Math.min(n, minBytes);
    let tail = this.#tail();
    if (tail === undefined || tail.buf.length - tail.end < need) {
      tail = newChunk(n, need);
      this.#chunks.push(tail);
    }
    this.#reserved = tail;
    return tail.buf.subarray(tail.end, Math.min(tail.buf.length, tail.end + n));
  }

  /** The read into the reserved room ended with `n` bytes (0: none). */
  commit(n: number): void {
    const c = this.#reserved;
    if (!c) return;
    this.#reserved = null;
    if (this.#dropAtCommit) {
      this.#dropAtCommit = false;
      if (c === this.#lent) this.#lentDetached = true;
      else freeChunk(c);
      return;
    }
    c.end += Math.max(0, n);
    this.#length += Math.max(0, n);
    if (this.#length === 0) this.clear();
    else if (c.start === c.end && this.#tail() === c) {
      // Nothing came and nothing waits in it: a later buffer must not queue behind an empty
      // one (a view of it would be empty while bytes wait).
      this.#chunks.pop();
      if (c === this.#lent) this.#lentDetached = true;
      else freeChunk(c);
    }
  }

  /** Drop what waits and give the buffers back (a lent or reserved one once it returns). */
  clear(): void {
    for (const c of this.#chunks) {
      if (c === this.#reserved) this.#dropAtCommit = true;
      else if (c === this.#lent) this.#lentDetached = true;
      else freeChunk(c);
    }
    this.#chunks = [];
    this.#length = 0;
  }

  /**
   * The last chunk, if any. (Not `chunks[length - 1]` on an empty queue, its usual state: an
   * index out of bounds takes V8's slow path, a lookup of the property "-1" up the prototype
   * chain: the hottest line of a small frame's receive path in a profile.)
   */
  #tail(): Chunk | undefined {
    const n = this.#chunks.length;
    return n > 0 ? this.#chunks[n - 1] : undefined;
  }

  /** `k` bytes of the head chunk `c` were read: a drained chunk leaves the queue. */
  #consume(c: Chunk, k: number): void {
    c.start += k;
    this.#length -= k;
    if (c.start < c.end) return;
    if (c === this.#reserved) return; // the read in flight fills it next: it stays the tail
    this.#chunks.shift();
    if (c === this.#lent) this.#lentDetached = true;
    else freeChunk(c);
  }
}
