/**
 * How fast a session's transport drains, from the time its large writes take: what decides
 * whether TCP_NOTSENT_LOWAT is on (bench/RESULTS.md mhol, mlow). On a slow link the kernel's
 * send buffer (autotuned to megabytes) would hold a bulk stream's data ahead of every other
 * stream's frames for a second or more, and the option keeps it small; on a fast transport
 * (loopback, a LAN) that buffer drains in a few ms anyway and the option only costs the sender
 * CPU (more partial writes and wake-ups: about a third more per GiB on loopback).
 * @module
 */

/** Writes at least this long are timed (smaller ones never wait long for the kernel). */
export const drainSampleMinBytes = 64 * 1024;
/** A verdict is taken once the timed writes add up to this many bytes... */
const drainWindowBytes = 1024 * 1024;
/** ...or to this much time spent in them (a link too slow to take a window soon). */
const drainWindowMs = 100;
/**
 * Below this rate (bytes per ms: 128 MiB/s, about a 1 Gbit link) the transport counts as slow:
 * a full send buffer (4 MiB by default on Linux) would then hold a small frame for 30 ms or more.
 */
const slowBytesPerMs = 128 * 1024 * 1024 / 1000;
/**
 * Above this rate (384 MiB/s) the transport counts as fast. Between the two the verdict stays
 * as it was, so a transport near one rate does not switch the option at every window.
 */
const fastBytesPerMs = 384 * 1024 * 1024 / 1000;

/**
 * The drain rate of a transport's large writes, window by window: the bytes the writes took
 * over the time spent waiting for them (time between writes does not count, so a sender that
 * pauses is not taken for a slow link). A write the kernel takes at once adds bytes and almost
 * no time; one that waits for room in a full send buffer adds the time the link needed to
 * drain that room, so a window's rate is the link's once its buffer is full.
 */
export class DrainWatch {
  #bytes = 0;
  #ms = 0;
  /** Whether the transport counts as slow now; undefined until a window says which. */
  slow: boolean | undefined = undefined;

  /** A write of `bytes` took `ms`; true when the window it closed changed {@linkcode slow}. */
  sample(bytes: number, ms: number): boolean {
    this.#bytes += bytes;
    this.#ms += ms;
    if (this.#bytes < drainWindowBytes && this.#ms < drainWindowMs) return false;
    const rate = this.#bytes / Math.max(this.#ms, 1e-3);
    this.#bytes = 0;
    this.#ms = 0;
    const slow = rate < slowBytesPerMs ? true : rate > fastBytesPerMs ? false : this.slow;
    if (slow === this.slow) return false;
    this.slow = slow;
    return true;
  }
}
