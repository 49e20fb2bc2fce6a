/**
 * A Duplex that shows every piece it reads to an observer, for tools that watch a relay
 * (the tunnel client's inspector) without changing, delaying or buffering what it relays.
 * @module
 */

import { type Duplex, framedWriter, type ViewReader, viewReader } from "./duplex.ts";

/**
 * `inner`, with `onRead` called synchronously with each piece read (a view valid only during
 * the call: copy what you keep). It must not throw: the relay is not its business.
 *
 * It keeps the inner Duplex's `FramedWriter` and `ViewReader` sides (a mux stream's), the
 * lent bytes shown to `onRead` like read ones, so a watched relay still writes one frame per
 * write and reads without a copy.
 */
export class TappedDuplex implements Duplex {
  /** The inner Duplex's `FramedWriter` side, if it has one (see the class doc). */
  readonly headroomBytes?: number;
  readonly writeFramed?: (p: Uint8Array) => Promise<number>;
  /** The inner Duplex's `ViewReader` side, if it has one (see the class doc). */
  readonly readView?: () => Promise<Uint8Array | null>;
  readonly releaseView?: () => void;
  /** Wrap `inner`. */
  constructor(readonly inner: Duplex, readonly onRead: (p: Uint8Array) => void) {
    // Bound functions, not arrows: an arrow assigned to a property is made in V8's old
    // generation and keeps its context (this, the stream) through every scavenge until the
    // next full GC (PrefixedDuplex in duplex.ts says more).
    const framed = framedWriter(inner);
    if (framed) {
      this.headroomBytes = framed.headroomBytes;
      this.writeFramed = framed.writeFramed.bind(framed);
    }
    const views = viewReader(inner);
    if (views) {
      this.readView = this.#readView.bind(this, views);
      this.releaseView = views.releaseView.bind(views);
    }
  }
  /** `readView` over an inner ViewReader: the lent bytes shown to `onRead`. */
  async #readView(views: ViewReader): Promise<Uint8Array | null> {
    const v = await views.readView();
    if (v !== null && v.length > 0) this.onRead(v);
    return v;
  }
  async read(p: Uint8Array): Promise<number | null> {
    const n = await this.inner.read(p);
    if (n !== null && n > 0) this.onRead(p.subarray(0, n));
    return n;
  }
  write(p: Uint8Array): Promise<number> {
    return this.inner.write(p);
  }
  closeWrite(): Promise<void> {
    return this.inner.closeWrite();
  }
  close(): void {
    this.inner.close();
  }
}
