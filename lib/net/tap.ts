/**
 * A Duplex that shows every piece it reads to an observer, for tools that watch a relay
 * (the tunnel client's inspector) without changing, delaying or buffering what it relays.
 * @module
 */

import { type Duplex, framedWriter, viewReader } from "./duplex.ts";

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
    const framed = framedWriter(inner);
    if (framed) {
      this.headroomBytes = framed.headroomBytes;
      this.writeFramed = (p) => framed.writeFramed(p);
    }
    const views = viewReader(inner);
    if (views) {
      this.readView = async () => {
        const v = await views.readView();
        if (v !== null && v.length > 0) this.onRead(v);
        return v;
      };
      this.releaseView = () => views.releaseView();
    }
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
