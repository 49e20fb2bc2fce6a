/**
 * The one connection shape every warren transport exposes: TCP and TLS conns, mux streams
 * and fusion sessions, so a single `relay()` serves them all.
 * @module
 */

import { isResettable, resetDenoSocket } from "./reset.ts";

/**
 * A bidirectional byte stream: the subset of `Deno.Conn` warren relies on.
 *
 * `read` resolves `null` at EOF (the peer's FIN). `closeWrite` sends our FIN and keeps the
 * read side open (half-close). `close` releases everything; it must be safe to call twice.
 */
export interface Duplex {
  read(p: Uint8Array): Promise<number | null>;
  write(p: Uint8Array): Promise<number>;
  closeWrite(): Promise<void>;
  close(): void;
}

/**
 * A Duplex that frames what it writes (a mux stream), offering to send its frame header and
 * the payload in one transport write (Deno has no writev): the caller leaves `headroomBytes`
 * free in front of the payload and calls `writeFramed`. `relay()` does so when its destination
 * offers it.
 */
export interface FramedWriter {
  /** Bytes to leave in front of the payload. */
  readonly headroomBytes: number;
  /**
   * Write all of `p.subarray(headroomBytes)`; resolves with that length. Until it settles, `p`
   * is the writer's: it writes headers into the headroom and into payload bytes already sent.
   */
  writeFramed(p: Uint8Array): Promise<number>;
}

/** `d` as a {@linkcode FramedWriter} if it is one, else null. */
export function framedWriter(d: Duplex): FramedWriter | null {
  const f = d as Partial<FramedWriter>;
  return typeof f.writeFramed === "function" && typeof f.headroomBytes === "number"
    ? f as FramedWriter
    : null;
}

/**
 * A Duplex that can lend the bytes it received instead of copying them into the caller's
 * buffer (a mux stream: they wait in its receive queue, where they were read to). `relay()`
 * writes them on as they are when its source offers this.
 */
export interface ViewReader {
  /**
   * The next received bytes, or null at EOF. They stay valid until `releaseView()` or the
   * next read; a borrower must call `releaseView()` when done (their buffer goes back then).
   */
  readView(): Promise<Uint8Array | null>;
  /** The bytes of the last `readView` are no longer needed. */
  releaseView(): void;
}

/** `d` as a {@linkcode ViewReader} if it is one, else null. */
export function viewReader(d: Duplex): ViewReader | null {
  const v = d as Partial<ViewReader>;
  return typeof v.readView === "function" && typeof v.releaseView === "function"
    ? v as ViewReader
    : null;
}

/** Write all of `p`, looping over short writes (Deno's `write` may write fewer bytes). */
export async function writeAll(w: Pick<Duplex, "write">, p: Uint8Array): Promise<void> {
  let off = 0;
  while (off < p.length) {
    const n = await w.write(off === 0 ? p : p.subarray(off));
    if (n <= 0) throw new Deno.errors.WriteZero("write returned 0");
    off += n;
  }
}

/**
 * Write all of `p` to a peer that may be gone already (a refusal or a last reply before the
 * connection is closed anyway): resolves true when written, false when the write failed. That
 * failure cannot matter: the caller closes the connection next and has nobody left to tell.
 * Never rejects.
 */
export async function writeQuietly(w: Pick<Duplex, "write">, p: Uint8Array): Promise<boolean> {
  try {
    await writeAll(w, p);
    return true;
  } catch {
    // The peer is gone: see above.
    return false;
  }
}

/**
 * `closeWrite()` on a connection whose peer may be gone (after a refusal, at the end of a
 * relay): our FIN has nobody to reach then, and the caller closes the connection next.
 * Never rejects.
 */
export async function closeWriteQuietly(c: Pick<Duplex, "closeWrite">): Promise<void> {
  try {
    await c.closeWrite();
  } catch {
    // Already closed or reset: the FIN has nobody to reach.
  }
}

/**
 * What `closeQuietly` already closed (cleanup paths often close the same thing twice) is marked
 * with this symbol: a WeakSet entry cost 0.3-2 µs per object and work for every GC, a property
 * store a few ns. An object that takes no new property (frozen, sealed) goes to the WeakSet.
 */
const closedMark: unique symbol = Symbol("warren.closedQuietly");
const closedFrozen = new WeakSet<object>();

/** Whether `closeQuietly` closed `c` already. */
function closedAlready(c: object): boolean {
  return (c as { [closedMark]?: true })[closedMark] === true || closedFrozen.has(c);
}

/**
 * Close ignoring "already closed": cleanup paths must never throw over the original error.
 * A second call for the same object does nothing (Deno would throw BadResource, and building
 * that error with its stack was a measurable share of a short connection's cost).
 */
export function closeQuietly(c: { close(): void } | undefined | null): void {
  if (!c || closedAlready(c)) return;
  if (!Reflect.set(c, closedMark, true)) closedFrozen.add(c);
  try {
    c.close();
  } catch {
    // Already closed or never opened: nothing left to release.
  }
}

/**
 * Close with a reset: the peer reads an error ("connection reset"), not an end. For relays
 * that learn their other side died: a FIN would tell the client it got everything. Uses the
 * Duplex's own `reset()` (mux streams, node sockets), else a TCP RST on the Deno socket it is
 * or wraps (through `inner`; see ./reset.ts), else an ordinary close. Never throws.
 */
export function resetQuietly(c: Duplex | undefined | null): void {
  if (!c || closedAlready(c)) return;
  for (let x: unknown = c, depth = 0; x && depth < 4; depth++) {
    if (closedAlready(x as object)) break; // closed already: nothing of it to reset
    if (isResettable(x)) {
      try {
        x.reset();
      } catch {
        // Already closed: the close below is all that is left to do.
      }
      break;
    }
    if (resetDenoSocket(x as object)) break;
    x = (x as { inner?: unknown }).inner;
  }
  closeQuietly(c);
}

/**
 * A Duplex that first yields `prefix`, then reads from `inner`.
 *
 * Why: a handshake parser may have read past its last byte; those bytes belong to the
 * payload and must reach the relay, not vanish.
 */
export class PrefixedDuplex implements Duplex {
  #prefix: Uint8Array | null;
  /** The inner Duplex's `FramedWriter` side, if it has one: writes never see the prefix. */
  readonly headroomBytes?: number;
  readonly writeFramed?: (p: Uint8Array) => Promise<number>;
  /** The inner Duplex's `ViewReader` side, if it has one: the prefix is lent first. */
  readonly readView?: () => Promise<Uint8Array | null>;
  readonly releaseView?: () => void;
  constructor(readonly inner: Duplex, prefix: Uint8Array) {
    this.#prefix = prefix.length > 0 ? prefix : null;
    // Kept, so relay() still writes a mux stream in one write per frame and without copying
    // after a handshake left bytes over (the first data often comes with the answer).
    // Bound functions, not arrows: V8 allocates a function literal assigned to a property in
    // the old generation, and every scavenge until the next full GC then keeps its context
    // (this wrapper, its stream) alive: per stream, that kept every finished one (bench/
    // RESULTS.md, mgc's section).
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
  /** `readView` over an inner ViewReader: the prefix first. */
  #readView(views: ViewReader): Promise<Uint8Array | null> {
    const pre = this.#prefix;
    this.#prefix = null;
    return pre ? Promise.resolve(pre) : views.readView();
  }
  read(p: Uint8Array): Promise<number | null> {
    const pre = this.#prefix;
    if (pre) {
      const n = Math.min(p.length, pre.length);
      p.set(pre.subarray(0, n));
      this.#prefix = n < pre.length ? pre.subarray(n) : null;
      return Promise.resolve(n);
    }
    return this.inner.read(p);
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

/** Wrap `conn` so leftover handshake bytes are read first; returns `conn` itself if none. */
export function withPrefix(conn: Duplex, prefix: Uint8Array): Duplex {
  return prefix.length === 0 ? conn : new PrefixedDuplex(conn, prefix);
}

/**
 * Turn off Nagle's algorithm where the Duplex is (or wraps, via `inner`) a TCP connection.
 *
 * Why: proxies forward small pieces (handshake replies, heads, control frames); with Nagle on,
 * a small write after an unacknowledged one waits for the peer's delayed ACK -- 40 ms per
 * request (measured: HTTP proxy 700 vs 5,700 req/s; depot mux set-up 44 ms vs < 1 ms).
 * `dial()` and `serve()` already apply it; call it for sockets made any other way.
 */
export function noDelay<T>(conn: T): T {
  for (let x: unknown = conn, depth = 0; x && depth < 3; depth++) {
    const c = x as { setNoDelay?: (on: boolean) => void; inner?: unknown };
    if (typeof c.setNoDelay === "function") {
      try {
        c.setNoDelay(true);
      } catch {
        // Already closed, or not a socket after all: only latency is at stake.
      }
      return conn;
    }
    x = c.inner;
  }
  return conn;
}
