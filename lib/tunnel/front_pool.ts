/**
 * Idle tunnel streams of the standalone front, kept between public connections: a stream
 * whose public connection is done with it, stopped at a response boundary and still open to
 * the local app, carries the next public connection's request to the same client, host and
 * local port without a new stream, a ControlMsg, a dial of the app and a StreamReply (what a
 * client without keep-alive, or one that opens a connection per page, costs otherwise).
 *
 * Each idle stream has a read parked on it while it waits: bytes or an end from the app in
 * that time (the app closed its idle connection, or sent a `408`) drop it, and the read is
 * handed to the public connection that takes it, as its first read. An idle stream is closed
 * after `idleMs` (below common app keep-alive timeouts, so the app rarely closes one under a
 * request), and at most `max` wait per client, host and local port (the newest are used
 * first); all of a client's go when its session ends.
 * @module
 */

import { type Deadline, deadlines } from "../net/mod.ts";
import type { ClientConn } from "./client_conn.ts";
import type { TunnelStream } from "./tunnel_stream.ts";

/** Default most idle streams kept per client, host and local port (as the Hono front's pool). */
export const defaultMaxIdleStreams = 128;
/** Default time an idle stream is kept (below common app keep-alive timeouts, e.g. Node's 5 s). */
export const defaultIdleStreamMs = 4_000;

/** An idle tunnel stream: its parked read, and the responses it carried (access log ids). */
export class IdleStream implements Deadline {
  /** @internal When the wheel closes it. */
  due: number;
  #pool: IdleStreams | undefined;

  constructor(
    /** The stream, its StreamReply read, at a response boundary. */
    readonly ts: TunnelStream,
    /** The read parked on it: its result is the taker's first read. */
    readonly read: Promise<Uint8Array | null>,
    /** Responses it carried so far (numbers the access log's request ids on). */
    readonly answered: number,
    pool: IdleStreams,
    idleMs: number,
  ) {
    this.#pool = pool;
    this.due = deadlines.clockMs() + idleMs;
    ts.setIdle(true);
    // Anything from the app while idle (bytes nobody asked for, its close, a reset) ends it.
    read.then(() => this.#drop(), () => this.#drop());
  }

  /** Out of the pool for a request (false when it was dropped meanwhile). */
  take(): boolean {
    if (!this.#pool) return false;
    this.#pool.remove(this);
    this.#pool = undefined;
    deadlines.delete(this);
    this.ts.setIdle(false);
    return true;
  }

  /** @internal Idle for too long: closed. */
  fire(): void {
    this.#drop();
  }

  /** Close it here (not taken): out of its pool, the stream closed. */
  #drop(): void {
    if (!this.take()) return;
    this.ts.release();
  }

  /** Close it when its client leaves (from its pool, which forgets it). */
  drop(): void {
    this.#drop();
  }
}

/** The idle streams of one client, host and local port: a small LIFO. */
class IdleStreams {
  readonly #idle: IdleStream[] = [];
  closed = false;

  /** The newest idle stream, out of the pool; undefined when none. */
  take(): IdleStream | undefined {
    while (this.#idle.length > 0) {
      const e = this.#idle[this.#idle.length - 1];
      if (e.take()) return e;
    }
    return undefined;
  }

  /** Keep `e` (the caller checked the bound and that the pool is open). */
  add(e: IdleStream): void {
    this.#idle.push(e);
    deadlines.add(e);
  }

  get size(): number {
    return this.#idle.length;
  }

  /** Forget `e` (taken, or dropped). */
  remove(e: IdleStream): void {
    const i = this.#idle.lastIndexOf(e);
    if (i >= 0) this.#idle.splice(i, 1);
  }

  /** Its client left: close every idle stream, keep none from now on. */
  close(): void {
    this.closed = true;
    for (const e of [...this.#idle]) e.drop();
  }
}

const pools = new WeakMap<ClientConn, Map<string, IdleStreams>>();

/** The pool of `client` for `key` (host and local port); made on first use. */
function poolOf(client: ClientConn, key: string): IdleStreams {
  let byKey = pools.get(client);
  if (!byKey) {
    const made = new Map<string, IdleStreams>();
    byKey = made;
    pools.set(client, made);
    const drop = () => {
      for (const p of made.values()) p.close();
    };
    client.whenLeaving(drop);
    void client.session.closed.then(drop); // `closed` only resolves
  }
  let pool = byKey.get(key);
  if (!pool) {
    pool = new IdleStreams();
    byKey.set(key, pool);
  }
  return pool;
}

/** The key of the streams that may serve each other's requests: host and local port. */
export function idleKey(host: string, localPort: string): string {
  return `${host}|${localPort}`;
}

/** The newest idle stream of `client` for `key`, taken out; undefined when none. */
export function takeIdleStream(client: ClientConn, key: string): IdleStream | undefined {
  return pools.get(client)?.get(key)?.take();
}

/**
 * Keep `ts` (at a response boundary, its StreamReply read, nothing of it unread) for a later
 * public connection, with `read` parked on it (one is started when none is given); closed
 * instead when the client is leaving or `max` are kept already.
 */
export function putIdleStream(
  client: ClientConn,
  key: string,
  ts: TunnelStream,
  read: Promise<Uint8Array | null> | undefined,
  answered: number,
  max: number,
  idleMs: number,
): void {
  const pool = poolOf(client, key);
  if (pool.closed || pool.size >= max || client.usable === false) {
    // A parked read ends with the stream: nothing waits on it.
    read?.catch(() => {});
    ts.release();
    return;
  }
  pool.add(new IdleStream(ts, read ?? ts.readView(), answered, pool, idleMs));
}
