/**
 * A Duplex that shows every piece it reads to an observer, for tools that watch a relay
 * (the tunnel client's inspector) without changing, delaying or buffering what it relays.
 * @module
 */

import type { Duplex } from "./duplex.ts";

/**
 * `inner`, with `onRead` called synchronously with each piece read (a view valid only during
 * the call: copy what you keep). It must not throw: the relay is not its business.
 */
export class TappedDuplex implements Duplex {
  /** Wrap `inner`. */
  constructor(readonly inner: Duplex, readonly onRead: (p: Uint8Array) => void) {}
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
