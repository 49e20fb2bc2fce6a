/**
 * Relay buffers in size classes under one global memory budget.
 *
 * Why: on loopback a Deno read loop gains most from fewer, larger reads (16 KiB buffers
 * reach ~0.4 of direct TCP, 4 MiB ~0.9), but 1,000 idle connections must still cost little.
 * So relays start small, grow while reads fill the buffer, shrink when they stop, and every
 * byte held counts against `budgetBytes`: past it, a relay simply does not grow.
 * @module
 */

/**
 * Smallest buffer a relay direction holds; what an idle connection costs per direction.
 * 4 KiB (was 16 KiB): 1,000 idle relayed connections cost seaprox ~18 MiB less RSS.
 */
export const minRelayBufferBytes = 4 * 1024;
/** Largest buffer one relay direction may grow to. */
export const maxRelayBufferBytes = 4 * 1024 * 1024;
/**
 * Default cap on bytes held by all relay buffers together (in use plus pooled): sixteen
 * connections at the largest class. 64 MiB (was 256): with 100 busy connections seaprox's
 * RSS peaked near 480 MiB at 256, about 210 MiB at 64, at the same aggregate throughput.
 */
export const defaultRelayBudgetBytes = 64 * 1024 * 1024;
/**
 * Free bytes kept per size class for reuse (more are dropped to the GC), and the least
 * number of free buffers of any class. With 1 MiB, 256 of the smallest class wait for the
 * next connections: 8 were too few for 32 concurrent short connections (two buffers each),
 * which then allocated (and collected) a fresh 4 KiB pair per connection.
 */
const maxFreeBytesPerClass = 1024 * 1024;
const minFreePerClass = 8;

/** A budgeted pool of power-of-four sized buffers. */
export class BufferPool {
  #free = new Map<number, Uint8Array[]>();
  #heldBytes = 0; // in use + pooled
  #peakBytes = 0;

  constructor(
    public budgetBytes: number = defaultRelayBudgetBytes,
    readonly minBytes: number = minRelayBufferBytes,
    readonly maxBytes: number = maxRelayBufferBytes,
  ) {}

  /** Bytes currently held by relays and the free lists. */
  get heldBytes(): number {
    return this.#heldBytes;
  }
  /** Highest `heldBytes` seen, for metrics. */
  get peakBytes(): number {
    return this.#peakBytes;
  }

  /** Round `n` up to a size class, clamped to [minBytes, maxBytes]. */
  classFor(n: number): number {
    let c = this.minBytes;
    while (c < n && c < this.maxBytes) c *= 4;
    return Math.min(c, this.maxBytes);
  }

  /**
   * A buffer of class `classFor(want)`, or the largest smaller class the budget allows.
   * The minimum class is always granted so a connection can make progress.
   */
  acquire(want: number): Uint8Array {
    let size = this.classFor(want);
    while (size > this.minBytes && !this.#fits(size)) size /= 4;
    const list = this.#free.get(size);
    const buf = list?.pop();
    if (buf) return buf;
    this.#heldBytes += size;
    if (this.#heldBytes > this.#peakBytes) this.#peakBytes = this.#heldBytes;
    return new Uint8Array(size);
  }

  /** Give a buffer back; it is pooled for reuse or dropped if its class list is full. */
  release(buf: Uint8Array): void {
    const list = this.#free.get(buf.length) ?? [];
    const keep = Math.max(minFreePerClass, maxFreeBytesPerClass / buf.length);
    if (list.length < keep && buf.length >= this.minBytes) {
      list.push(buf);
      this.#free.set(buf.length, list);
    } else {
      this.#heldBytes -= buf.length;
    }
  }

  /**
   * Give a buffer's budget back without pooling it: for one that a read may still write into
   * (its owner failed with the read pending), so it must never be handed out again. The GC
   * takes it once the read settles; kept counted, it held the budget for good.
   */
  forget(buf: Uint8Array): void {
    this.#heldBytes -= buf.length;
  }

  /** Drop pooled buffers, e.g. after a burst, so RSS can fall back. */
  trim(): void {
    for (const list of this.#free.values()) {
      for (const b of list) this.#heldBytes -= b.length;
    }
    this.#free.clear();
  }

  #fits(size: number): boolean {
    if ((this.#free.get(size)?.length ?? 0) > 0) return true;
    if (this.#heldBytes + size <= this.budgetBytes) return true;
    this.trim(); // pooled buffers of other classes must not starve a growing relay
    return this.#heldBytes + size <= this.budgetBytes;
  }
}

/** The process-wide pool all relays share unless given their own. */
export const relayPool: BufferPool = new BufferPool();
