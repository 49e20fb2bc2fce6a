/**
 * `relay(a, b)`: copy both directions between two Duplexes, keeping half-close.
 *
 * A read loop, not `pipeTo`: `ReadableStream.pipeTo` closes the whole destination at EOF,
 * while a proxy must turn the source's FIN into `closeWrite()` on the destination and keep
 * the other direction flowing (a client that shuts down its write side still receives the
 * full reply). Buffers come from the shared budgeted pool and adapt to the traffic. A source
 * that lends its bytes (`ViewReader`: a mux stream) needs no buffer of ours, and a destination
 * that frames (`FramedWriter`: a mux stream) gets room for its header in front of what we read.
 * @module
 */

import {
  closeQuietly,
  type Duplex,
  type FramedWriter,
  framedWriter,
  resetQuietly,
  type ViewReader,
  viewReader,
  writeAll,
} from "./duplex.ts";
import { errorMessage, isDisconnect } from "./errors.ts";
import { type BufferPool, relayPool } from "./pool.ts";
import { type Deadline, deadlines } from "./deadline.ts";
import { type Abortable, type AbortListener, listenAbort, unlistenAbort } from "./abort.ts";

/** Live byte counters of a relay; readable while it runs (metrics, status pages). */
export interface RelayStats {
  /** Bytes read from `a` and written to `b`. */
  aToB: number;
  /** Bytes read from `b` and written to `a`. */
  bToA: number;
}

/** Options of {@linkcode relay}. */
export interface RelayOptions {
  /** Close both sides when no byte moved either way for this long. @default 0 (never) */
  idleTimeoutMs?: number;
  /**
   * Abort the relay: both sides are closed and it resolves with reason "aborted". serve()'s
   * connection context will do (no AbortSignal made for it).
   */
  signal?: Abortable;
  /** Counters updated in place as bytes move. */
  stats?: RelayStats;
  /** Buffer pool; the process-wide one by default. */
  pool?: BufferPool;
}

/** How a relay ended. */
export type RelayEnd = "done" | "idle" | "aborted" | "error";

/** Outcome of {@linkcode relay}. */
export interface RelayResult extends RelayStats {
  /** "done": both directions reached EOF; otherwise why it was cut short. */
  end: RelayEnd;
  /** The first error that ended it, when `end` is "error". */
  error?: Error;
}

/**
 * Copy `a`->`b` and `b`->`a` until both directions reach EOF, then close both.
 *
 * Guarantees: EOF on one side becomes `closeWrite()` on the other; any error in either
 * direction or the signal resets both sides (see `resetQuietly`: a peer must not take a cut
 * stream for a complete one), the idle timeout closes them; both are always closed when the
 * promise resolves, and it never rejects.
 *
 * @example
 * ```ts
 * import { dial, relay, writeAll } from "./mod.ts";
 * // An upstream that answers what it reads, and a client on the other side of the relay.
 * const upstreamL = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const front = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const echoing = (async () => {
 *   const c = await upstreamL.accept();
 *   const buf = new Uint8Array(1024);
 *   for (let n = await c.read(buf); n !== null; n = await c.read(buf)) {
 *     await writeAll(c, buf.subarray(0, n));
 *   }
 *   await c.closeWrite();
 *   c.close();
 * })();
 * const user = await Deno.connect({ hostname: "127.0.0.1", port: front.addr.port });
 * const client = await front.accept();
 * const upstream = await dial("127.0.0.1", upstreamL.addr.port);
 * const relaying = relay(client, upstream, { idleTimeoutMs: 300_000 });
 * await writeAll(user, new TextEncoder().encode("ping"));
 * await user.closeWrite(); // half-close travels through: the upstream ends its side too
 * const got = new Uint8Array(4);
 * while ((await user.read(got)) !== null) continue; // read to the end
 * const r = await relaying;
 * console.log(r.aToB, r.bToA, r.end); // 4 4 "done"
 * await echoing;
 * user.close();
 * upstreamL.close();
 * front.close();
 * ```
 */
export async function relay(a: Duplex, b: Duplex, opts: RelayOptions = {}): Promise<RelayResult> {
  const r = new Relay(a, b, opts.stats ?? { aToB: 0, bToA: 0 }, opts.pool ?? relayPool);
  const idleMs = opts.idleTimeoutMs ?? 0;
  if (idleMs > 0) r.watchIdle(idleMs);
  const signal = opts.signal;
  if (signal?.aborted) r.stop("aborted");
  // The relay is the listener (`handleEvent`): no closure.
  else if (signal) listenAbort(signal, r);
  try {
    // Both pumps at once; neither rejects (each reports its failure to `r`), and the last to
    // end settles this promise: Promise.all without its array, iterator and element closures.
    // (Awaiting one pump after the other allocated less still, but then seaprox's finished
    // connections survived the young generation: 6.7 KB/conn against 3.5 with this join and
    // 3.9 with Promise.all, bench/_survivors.ts.)
    await new Promise<void>((resolve) => {
      r.joined = resolve;
      r.pump(a, b, true);
      r.pump(b, a, false);
    });
  } finally {
    if (r.idleMs > 0) deadlines.delete(r);
    if (signal) unlistenAbort(signal, r);
    if (!r.finished) {
      r.finished = true;
      closeQuietly(a);
      closeQuietly(b);
    }
  }
  const { stats } = r;
  return { aToB: stats.aToB, bToA: stats.bToA, end: r.end, error: r.error };
}

/**
 * One relay's state and its two pumps, as methods of one object: closures for the end, the
 * failure, the abort listener, each pump and each counter were eight allocations more per
 * connection (issue 20).
 */
class Relay implements AbortListener, Deadline {
  end: RelayEnd = "done";
  error: Error | undefined;
  finished = false;
  /**
   * The idle timeout (0: none). The relay is its own deadline on the shared wheel, as lib/net's
   * IdleTimer would be (an IdleTimer and its callback were two allocations more per relay).
   */
  idleMs = 0;
  /** When a pump last moved bytes (the wheel's clock), while `idleMs` > 0. */
  lastMs = 0;
  /** @internal When the wheel looks at it next. */
  due = 0;
  /** Settles relay()'s wait for both pumps. */
  joined: (() => void) | undefined;
  /** Pumps not ended yet. */
  #running = 2;

  /** A pump ended: the last one settles the relay. */
  pumpEnded(): void {
    if (--this.#running === 0) this.joined?.();
  }

  constructor(
    readonly a: Duplex,
    readonly b: Duplex,
    readonly stats: RelayStats,
    readonly pool: BufferPool,
  ) {}

  /**
   * End the relay (once). An error or an abort cut a stream short: both sides are reset, so
   * neither peer reads the cut as a clean end (a close-delimited download would look complete
   * after a FIN). The idle timeout ends a connection on which nothing moved: an ordinary close.
   */
  stop(why: RelayEnd, err?: Error): void {
    if (this.finished) return;
    this.finished = true;
    this.end = why;
    this.error = err;
    const finish = why === "idle" ? closeQuietly : resetQuietly;
    finish(this.a);
    finish(this.b);
  }

  /** Watch for `idleMs` without a byte moved: then the relay ends as "idle". */
  watchIdle(idleMs: number): void {
    this.idleMs = idleMs;
    this.lastMs = deadlines.clockMs();
    this.due = this.lastMs + idleMs;
    deadlines.add(this);
  }

  /** Bytes moved: the idle period starts again (a clock read; the wheel is not touched). */
  touch(): void {
    if (this.idleMs > 0) this.lastMs = deadlines.clockMs();
  }

  /** @internal The wheel reached `due`: idle, or moved on by a touch (IdleTimer's rule). */
  fire(nowMs: number): number | void {
    const due = this.lastMs + this.idleMs;
    if (due > nowMs) return due;
    this.stop("idle");
  }

  /** The signal aborted. */
  handleEvent(): void {
    this.stop("aborted");
  }

  /** Report a pump's failure, unless the relay already ended for another reason. */
  failed(err: unknown): void {
    if (this.finished) return; // the other side or a timer already ended the relay
    // A vanished peer is an ordinary end of a connection; anything else is reported.
    this.stop("error", err instanceof Error ? err : new Error(errorMessage(err)));
    if (isDisconnect(err)) this.error = err as Error;
  }

  /** Count `n` bytes moved in one direction. */
  count(aToB: boolean, n: number): void {
    if (aToB) this.stats.aToB += n;
    else this.stats.bToA += n;
  }

  /** Copy `src` to `dst` until EOF, then half-close `dst`. Never rejects. */
  pump(src: Duplex, dst: Duplex, aToB: boolean): Promise<void> {
    // A framing destination (a mux stream) gets room in front of what we read for its frame
    // header: header and payload then leave in one write instead of two.
    const framed = framedWriter(dst);
    const views = framed ? null : viewReader(src);
    return views ? this.pumpViews(views, dst, aToB) : this.pumpBuffered(src, dst, framed, aToB);
  }

  /**
   * A source that lends what it received (a mux stream): its bytes are written on as they
   * lie, without a buffer of ours or a copy into one.
   */
  async pumpViews(src: ViewReader, dst: Duplex, aToB: boolean): Promise<void> {
    try {
      while (true) {
        const v = await src.readView();
        if (v === null) {
          await dst.closeWrite();
          return;
        }
        this.touch();
        const wrote = await dst.write(v); // as below: writeAll only for a short write's rest
        if (wrote < v.length) await writeAll(dst, v.subarray(wrote));
        this.count(aToB, v.length);
      }
    } catch (err) {
      this.failed(err);
    } finally {
      src.releaseView(); // only now: a write in flight still used the bytes
      this.pumpEnded();
    }
  }

  /** Read into a pooled buffer that adapts to the traffic, write it on. */
  async pumpBuffered(
    src: Duplex,
    dst: Duplex,
    framed: FramedWriter | null,
    aToB: boolean,
  ): Promise<void> {
    const pool = this.pool;
    const room = framed?.headroomBytes ?? 0;
    let buf = pool.acquire(pool.minBytes);
    try {
      while (true) {
        const n = await src.read(room > 0 ? buf.subarray(room) : buf);
        if (n === null) {
          await dst.closeWrite();
          return;
        }
        this.touch();
        if (framed) await framed.writeFramed(buf.subarray(0, room + n));
        else {
          // Most writes take the whole chunk: writeAll (a frame of its own) only for the rest.
          const chunk = buf.subarray(0, n);
          const wrote = await dst.write(chunk);
          if (wrote < n) await writeAll(dst, chunk.subarray(wrote));
        }
        this.count(aToB, n);
        // Grow while reads fill the buffer; drop back as soon as they stop doing so, so an
        // idle connection holds only a small buffer while its read is pending.
        const grow = n === buf.length - room;
        const want = grow ? buf.length * 4 : n < buf.length / 4 ? n * 2 : buf.length;
        if (pool.classFor(want) !== buf.length) {
          const next = pool.acquire(want);
          // Under budget pressure the pool may grant less than asked: a full read must never
          // make us shrink (that oscillated and churned garbage with 100 busy connections).
          if (grow ? next.length > buf.length : next.length < buf.length) {
            pool.release(buf);
            buf = next;
          } else {
            pool.release(next);
          }
        }
      }
    } catch (err) {
      this.failed(err);
    } finally {
      pool.release(buf);
      this.pumpEnded();
    }
  }
}
