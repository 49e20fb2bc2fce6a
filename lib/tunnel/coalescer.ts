/**
 * Write gathering for the standalone front's tunnel streams: small request pieces
 * (chunk-size lines, small chunks, pipelined heads) go out as one write, fewer and larger
 * mux frames, without holding back anything the app waits for (the front flushes before
 * every read that may block). The gathering buffer is borrowed only while bytes wait in
 * it, so an idle connection holds none.
 * @module
 */

import { type Duplex, framedWriter, writeAll } from "../net/mod.ts";
import type { ImmediateWriter } from "./tunnel_stream.ts";

/** Bytes bigger than this skip the coalescing buffer (after flushing it). */
const coalesceMaxCopyBytes = 16 * 1024;
/** Size of the coalescing buffer. */
const coalesceBufferBytes = 64 * 1024;
/** Free coalescing buffers kept for the next connection (the rest go to the GC). */
const maxFreeBuffers = 64;

const free: Uint8Array[] = [];

/** What `add` returns for a piece it queued at once. */
const queued: Promise<void> = Promise.resolve();

/**
 * Gathers small writes for the current tunnel stream; `flush()` sends them as one write.
 * Large writes go straight through (after what is gathered), so order is kept.
 */
export class WriteCoalescer {
  /** Where gathered bytes go; writes fail while there is none. */
  target: (Duplex & Partial<ImmediateWriter>) | undefined;
  #buf: Uint8Array | undefined;
  #len = 0;

  /**
   * Queue `p` (copied) or, when large, send what is queued and then `p`. Queued at once (the
   * usual small piece), it returns a settled promise of no async function of its own. `room`:
   * free bytes in front of `p` in its buffer, ours until this settles (see lib/http's `Sink`):
   * with at least the target's `headroomBytes` a large `p` leaves with its frame header in one
   * write (`writeFramed`) instead of two.
   */
  add(p: Uint8Array, room = 0): Promise<void> {
    return this.addNow(p) ? queued : this.#addLater(p, room);
  }

  /** Room a {@linkcode add} caller leaves in front of large pieces: the target's headroom. */
  get headroomBytes(): number {
    return this.target ? framedWriter(this.target)?.headroomBytes ?? 0 : 0;
  }

  /** {@linkcode add} when `p` could not be queued at once. */
  async #addLater(p: Uint8Array, room: number): Promise<void> {
    if (!this.target) throw new Deno.errors.BrokenPipe("no tunnel stream");
    if (p.length > coalesceMaxCopyBytes) {
      await this.flush();
      const framed = framedWriter(this.target);
      if (framed && room >= framed.headroomBytes) {
        // The header goes into the free bytes in front of the payload.
        const h = framed.headroomBytes;
        await framed.writeFramed(new Uint8Array(p.buffer, p.byteOffset - h, p.length + h));
      } else await writeAll(this.target, p);
      return;
    }
    if (this.#len + p.length > coalesceBufferBytes) await this.flush();
    this.#buf ??= free.pop() ?? new Uint8Array(coalesceBufferBytes);
    this.#buf.set(p, this.#len);
    this.#len += p.length;
  }

  /**
   * Queue `p`, and `then` after it (copied), when that needs no write first: true; false when
   * they are large, would not fit, or there is no target (nothing done: call `add`). The usual
   * request head is queued so, with no promise, from its own bytes and the X-Forwarded-* lines.
   */
  addNow(p: Uint8Array, then?: Uint8Array): boolean {
    const n = p.length + (then?.length ?? 0);
    if (!this.target || n > coalesceMaxCopyBytes) return false;
    if (this.#len + n > coalesceBufferBytes) return false;
    const buf = this.#buf ??= free.pop() ?? new Uint8Array(coalesceBufferBytes);
    buf.set(p, this.#len);
    if (then) buf.set(then, this.#len + p.length);
    this.#len += n;
    return true;
  }

  /** Whether bytes wait to be flushed. */
  get pending(): boolean {
    return this.#buf !== undefined;
  }

  /**
   * Send what is queued at once if the target takes it so (its `writeNow`): true, the buffer is
   * given back; false when it must wait (nothing done: call `flush`).
   */
  flushNow(): boolean {
    const buf = this.#buf;
    if (!buf) return true;
    if (this.#len > 0 && !this.target?.writeNow?.(buf.subarray(0, this.#len))) return false;
    this.#buf = undefined;
    this.#len = 0;
    if (free.length < maxFreeBuffers) free.push(buf);
    return true;
  }

  /** Send what is queued as one write, then give the buffer back. */
  async flush(): Promise<void> {
    const buf = this.#buf;
    if (!buf) return;
    const n = this.#len;
    this.#buf = undefined;
    this.#len = 0;
    try {
      if (n > 0 && this.target) await writeAll(this.target, buf.subarray(0, n));
    } finally {
      // writeAll resolves once the mux took the bytes: the buffer is free again after it.
      if (free.length < maxFreeBuffers) free.push(buf);
    }
  }
}
