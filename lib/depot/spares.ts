/**
 * Pre-dialled, still-silent tunnel connections kept by depot-local, so a request skips the
 * TCP handshake to the tunnel port (~ 1 RTT of set-up on a WAN link).
 *
 * A spare says nothing until it is used: its first frame is the `tunnel{id,key}` of the
 * request that takes it, so it carries no credential while idle. The server closes tunnel
 * connections that stay silent past its handshake timeout; it announces half of that as
 * `spareIdleMs` in welcome and spares older than it are closed and replaced. With "open" (see
 * the README) a spare instead announces itself with `standby{name,sessionKey}` (a per-session
 * key, not the token) and the server writes a request on it; the local takes it out with
 * `remove`. With "retire" too, standby spares do not expire here at `spareIdleMs`: the server,
 * which picks the spare a request goes on, retires them (a quarter later) and the local replaces
 * them (`retired`); closed here at the local's own clock, a spare could take a request on its
 * way. Only one whose retirement never came is closed, at {@linkcode unretiredFactor} times it.
 * @module
 */

import { closeQuietly, type Duplex } from "../net/mod.ts";
import { maxStandbyPerExit } from "./protocol.ts";

/**
 * With "retire", a spare still here at this many times `maxIdleMs` is closed: the server
 * retires one at 1.25 times that, so its retirement was lost (the connection died unseen, a NAT
 * forgot it) and it would never be replaced. Far enough past the server's own time that the
 * server no longer holds it to write a request on.
 */
export const unretiredFactor = 4;

/** A pool of idle pre-dialled connections, refilled in the background. */
export class SparePool {
  #spares: { conn: Duplex; at: number }[] = [];
  #dialling = 0;
  /** Spares to keep now: `size`, more (up to `max`) while requests outrun them. */
  #target: number;
  /** A request found no spare since the last expiry tick. */
  #short = false;
  #closed = false;
  #timer: ReturnType<typeof setInterval>;
  #hits = 0;
  #misses = 0;
  #max: number;
  /** The server retires idle spares ("retire"): one expires here only if that never came. */
  readonly #peerRetires: boolean;

  /**
   * @param size spares to keep ready
   * @param maxIdleMs a spare older than this is closed and replaced
   * @param dialFn opens one connection
   * @param max spares kept at most while requests outrun `size` (with "open": the standby
   *   spares the server holds for this exit, its `standbyMax`)
   * @param peerRetires the server retires idle spares itself ("retire"): one is
   *   closed here only when its retirement never came (see {@linkcode unretiredFactor})
   */
  constructor(
    readonly size: number,
    readonly maxIdleMs: number,
    readonly dialFn: () => Promise<Duplex>,
    max = Math.max(size, maxStandbyPerExit),
    peerRetires = false,
  ) {
    this.#max = max;
    this.#peerRetires = peerRetires;
    this.#target = size;
    this.#timer = setInterval(() => this.#expire(true), Math.max(20, Math.floor(maxIdleMs / 4)));
    this.fill();
  }

  /** Spares kept at most while requests outrun `size`. */
  get max(): number {
    return this.#max;
  }

  /**
   * The server holds `max` standby spares for this exit now (`standbyShare`: other exits
   * connected or left): keep at most that many (never fewer than `size`) from now on. Spares
   * past a smaller bound are the server's to close (it closes the oldest).
   */
  setMax(max: number): void {
    this.#max = Math.max(this.size, max);
    this.#target = Math.min(this.#target, this.#max);
  }

  /** Spares ready, requests served by one and requests that found none; `max` kept at most. */
  get stats(): { ready: number; hits: number; misses: number; max: number } {
    return { ready: this.#spares.length, hits: this.#hits, misses: this.#misses, max: this.max };
  }

  /** The freshest usable spare (and a refill), or undefined when none is ready. */
  take(): Duplex | undefined {
    this.#expire();
    const s = this.#spares.pop();
    if (s) this.#hits++;
    else this.missed();
    this.fill();
    return s?.conn;
  }

  /**
   * A request found no spare (with "open": its request came on the control connection, the
   * server had no standby left): keep twice as many ready, up to `max`, until the demand
   * passes. Under concurrent load `size` spares were used up at once and most requests took
   * the slow way (a control message, a fresh dial and an acceptance round).
   */
  missed(): void {
    this.#misses++;
    this.#short = true;
    this.#target = Math.min(this.#max, this.#target * 2);
    this.fill();
  }

  /**
   * Take out the spare `conn`, which the server wrote a request on (a standby spare, "open"):
   * `used`, it counts as a hit and the caller starts its replacement with `fill()` once the
   * request's answer is written (a refill's dial and standby frame ahead of it delayed the
   * answer; a refill never started comes with the next expiry tick); not `used` (the server
   * refused or dropped it, and another would be refused too), the wanted count falls to what
   * is still held. False when it is no longer here (expired at that moment: closed).
   */
  remove(conn: Duplex, used = true): boolean {
    // From the newest: the server writes requests on the newest standby it holds.
    const i = this.#spares.findLastIndex((s) => s.conn === conn);
    if (i < 0) return false;
    this.#spares.splice(i, 1);
    if (used) {
      this.#hits++;
    } else {
      // The server keeps no more than it holds now (it sheds spares while short of file
      // descriptors): a miss must not dial back up to `max` only to have them closed again.
      this.#target = Math.min(this.#target, Math.max(1, this.#spares.length + this.#dialling));
    }
    return true;
  }

  /**
   * The spare `conn` failed before it was ready (its `standby` announcement could not be
   * written): taken out, as a failed dial would have left it (no hit, the wanted count kept, no
   * refill now: the next take or expiry tick dials its replacement). False when it is no
   * longer here.
   */
  lost(conn: Duplex): boolean {
    const i = this.#spares.findLastIndex((s) => s.conn === conn);
    if (i < 0) return false;
    this.#spares.splice(i, 1);
    return true;
  }

  /**
   * The server retired the spare `conn` ("retire": idle past its time there, no request was
   * or will be written on it): take it out and dial its replacement. False when it is no
   * longer here.
   */
  retired(conn: Duplex): boolean {
    const i = this.#spares.findIndex((s) => s.conn === conn); // the oldest go first
    if (i < 0) return false;
    this.#spares.splice(i, 1);
    this.fill();
    return true;
  }

  /** Start dials until the spares wanted now are ready or on their way. */
  fill(): void {
    while (!this.#closed && this.#spares.length + this.#dialling < this.#target) {
      this.#dialling++;
      this.dialFn().then(
        (conn) => {
          this.#dialling--;
          if (this.#closed) closeQuietly(conn);
          else this.#spares.push({ conn, at: performance.now() });
        },
        () => {
          // The tunnel port is unreachable right now; the next take() or expiry tick retries,
          // and a request that finds no spare dials (and reports) on its own.
          this.#dialling--;
        },
      );
    }
  }

  /**
   * Close spares past `maxIdleMs` (the server would cut them soon; when it retires them itself,
   * only those it has not retired in {@linkcode unretiredFactor} times that) and refill; on the
   * interval's ticks, a quiet interval (no request missed a spare) halves the extra spares.
   */
  #expire(tick = false): void {
    if (tick && !this.#short) {
      this.#target = Math.max(this.size, this.#target - Math.ceil((this.#target - this.size) / 2));
    }
    if (tick) this.#short = false;
    const maxAgeMs = this.#peerRetires ? this.maxIdleMs * unretiredFactor : this.maxIdleMs;
    const now = performance.now();
    const keep: { conn: Duplex; at: number }[] = [];
    for (const s of this.#spares) {
      if (now - s.at > maxAgeMs) closeQuietly(s.conn);
      else keep.push(s);
    }
    this.#spares = keep;
    this.fill();
  }

  /** Close every spare and stop refilling. */
  close(): void {
    this.#closed = true;
    clearInterval(this.#timer);
    for (const s of this.#spares) closeQuietly(s.conn);
    this.#spares = [];
  }
}
