/** An in-memory Duplex that yields `data` in chunks of the given sizes (split-read tests). */
import type { Duplex } from "../lib/net/mod.ts";

export class ChunkedSource implements Duplex {
  #data: Uint8Array;
  #off = 0;
  #sizes: () => number;
  written: Uint8Array[] = [];
  closed = false;
  writeClosed = false;
  /** `split`: a fixed chunk size, or a function giving the next chunk size. */
  constructor(data: Uint8Array, split: number | (() => number)) {
    this.#data = data;
    this.#sizes = typeof split === "number" ? () => split : split;
  }
  read(p: Uint8Array): Promise<number | null> {
    if (this.#off >= this.#data.length) return Promise.resolve(null);
    const n = Math.max(1, Math.min(p.length, this.#sizes(), this.#data.length - this.#off));
    p.set(this.#data.subarray(this.#off, this.#off + n));
    this.#off += n;
    return Promise.resolve(n);
  }
  write(p: Uint8Array): Promise<number> {
    this.written.push(p.slice());
    return Promise.resolve(p.length);
  }
  closeWrite(): Promise<void> {
    this.writeClosed = true;
    return Promise.resolve();
  }
  close(): void {
    this.closed = true;
  }
  /** Everything written so far, concatenated. */
  output(): Uint8Array {
    const out = new Uint8Array(this.written.reduce((s, p) => s + p.length, 0));
    let o = 0;
    for (const p of this.written) (out.set(p, o), o += p.length);
    return out;
  }
}

/** Split sizes to run every codec test with: byte by byte, small, random, whole. */
export const splits: [string, number | (() => number)][] = [
  ["1-byte reads", 1],
  ["3-byte reads", 3],
  ["random reads", () => 1 + Math.floor(Math.random() * 17)],
  ["whole", 1 << 20],
];
