/**
 * `serve(listener, handler)`: an accept loop with a connection limit, a handshake timer and
 * graceful stop. Every accepted connection is closed when its handler settles, whatever
 * happened inside. A full limit sheds the longest-idle connection for a newcomer (./shed.ts).
 * @module
 */

import { sourceKey } from "./ratelimit.ts";
import { type Logger, silentLogger } from "../log.ts";
import { closeQuietly, noDelay } from "./duplex.ts";
import { AbortHub, type AbortSource } from "./abort.ts";
import { type Deadline, deadlines } from "./deadline.ts";
import { sleep } from "./backoff.ts";
import { errorMessage } from "./errors.ts";
import { defaultShedIdleMs, longestIdle } from "./shed.ts";
import { LiveList } from "./live_list.ts";
import { listenerNoDelayQueued } from "./tcp_nodelay.ts";

/**
 * Pause after a failed accept (EMFILE, a reset before accept) before the next one: the loop
 * goes on, without spinning while the condition lasts.
 */
export const acceptRetryMs = 50;

/**
 * Least time between two "accept failed" warnings of one accept loop: with fds hovering at the
 * limit, every accept that got one ended a streak and the next failure began another, two
 * lines per accepted connection.
 */
export const acceptWarnIntervalMs = 10_000;

/**
 * What an accept loop does after a failed accept (EMFILE: out of file descriptors; a reset
 * before accept): pause {@linkcode acceptRetryMs} and go on, never end. A streak of failures
 * is warned of once (at most one warning per `warnIntervalMs`: a streak starting sooner is
 * warned when that time has passed, if it lasts; the failures between are counted in the
 * listener's stats), one line when the warned streak ends (not 20 lines a second while fds are
 * short).
 */
export class AcceptRetry {
  #failing = 0;
  /** Whether this streak was warned of (its end is logged then). */
  #warned = false;
  #warnedAtMs = -Infinity;

  constructor(
    readonly log: Logger,
    readonly warnIntervalMs: number = acceptWarnIntervalMs,
  ) {}

  /** After a failed accept: warn of the streak unless done or done lately, then pause. */
  async failed(err: unknown): Promise<void> {
    this.#failing++;
    if (!this.#warned) {
      const now = performance.now();
      if (now - this.#warnedAtMs >= this.warnIntervalMs) {
        this.#warned = true;
        this.#warnedAtMs = now;
        this.log.warn("accept failed, retrying", {
          error: errorMessage(err),
          retryMs: acceptRetryMs,
        });
      }
    }
    await sleep(acceptRetryMs);
  }

  /** After a successful accept: ends a streak of failures. */
  accepted(): void {
    if (this.#failing === 0) return;
    if (this.#warned) this.log.info("accepting again", { failedAccepts: this.#failing });
    this.#warned = false;
    this.#failing = 0;
  }
}

/** Default cap on concurrently handled connections per listener. */
export const defaultMaxConns = 1024;
/** The per-source share never goes below this by default (a small limit is not split up). */
export const minPerSourceShare = 64;

/**
 * The default per-source share of a connection limit: a quarter of it, at least
 * {@linkcode minPerSourceShare}, at most the limit itself. One rule for serve() listeners and
 * seaprox's shared table.
 */
export function perSourceShare(maxConns: number): number {
  return Math.min(maxConns, Math.max(minPerSourceShare, Math.floor(maxConns / 4)));
}

/** Default time a client has to finish its protocol handshake. */
export const defaultHandshakeTimeoutMs = 10_000;
/** Default time live connections get to finish after stop() before they are cut. */
export const defaultDrainTimeoutMs = 5_000;

/**
 * Per-connection context handed to a handler. It is itself the connection's
 * {@linkcode AbortSource} (aborted when the server is stopped hard, the connection is shed or
 * its handshake timer fires): pass it to lib/net's `dial` and `relay` instead of `signal`, and
 * no AbortSignal is made for the connection.
 */
export interface ConnContext extends AbortSource {
  /** Monotonic connection number within this server, for logs. */
  id: number;
  /** Remote address as `host:port`. */
  remote: string;
  /** Aborted with the context (made when first read: prefer the context where it will do). */
  signal: AbortSignal;
  /** Logger carrying the connection id. */
  log: Logger;
  /** Call once the protocol handshake is complete; stops the handshake timer. */
  handshakeDone(): void;
}

/** Handles one accepted connection; the connection is closed when it settles. */
export type ConnHandler<C extends Deno.Conn = Deno.Conn> = (
  conn: C,
  ctx: ConnContext,
) => Promise<void>;

/** Options of {@linkcode serve}. */
export interface ServeOptions {
  /**
   * Connections handled at once. At the limit the connection idle longest (no read or write
   * for `shedIdleMs`) is closed to admit the next one; without one, the next is accepted and
   * closed. @default 1024
   */
  maxConns?: number;
  /**
   * Connections one source (IPv4 address, IPv6 /64) may hold at once, so one client cannot
   * take the whole `maxConns`; at its share, its own longest-idle connection makes room, else
   * its next one is accepted and closed. @default maxConns
   */
  maxConnsPerSource?: number;
  /**
   * Least time without a read or write for a connection to be shed at a full limit;
   * Infinity: never shed, refuse. @default 10000
   */
  shedIdleMs?: number;
  /** Close a connection whose handler has not called `handshakeDone()` in time; 0 = off. @default 10000 */
  handshakeTimeoutMs?: number;
  /**
   * Whether the listener's sockets come with TCP_NODELAY already (./tcp_nodelay.ts
   * `listenerNoDelay` succeeded: true) or need a setsockopt each (false). Unset, serve()
   * sets it once on a TCP listener's socket itself and per connection only on those that
   * were queued before (or on every one where it cannot: no FFI permission for libc, not
   * Linux, not TCP, more than `maxScannedFds` descriptors open); a listener with a `noDelay`
   * of true (lib/transport's TLS listeners) has set it itself. That costs a libc load
   * and a look through the descriptors when serve() starts (2-3 ms): a listener opened
   * again and again in a running service (one per client) passes false. @default set by serve()
   */
  acceptedNoDelay?: boolean;
  /**
   * Told of each failed accept before the loop's pause: at EMFILE a service may close what it
   * holds spare (depot-server its idle standby connections) so the next accept finds an fd.
   * What it throws is dropped (the accept loop must go on).
   */
  onAcceptError?: (err: unknown) => void;
  /** Stop accepting when this aborts, then drain (same as calling `stop()`). */
  signal?: AbortSignal;
  /** Default drain deadline for `stop()`. @default 5000 */
  drainTimeoutMs?: number;
  /**
   * The listener's name in metrics (`warren_listener_*{listener=...}`): `socks`, `control`...
   * @default the `listener` field of `log`, else the address
   */
  name?: string;
  log?: Logger;
}

/** Counters of a running server. */
export interface ServeStats {
  active: number;
  total: number;
  /** Connections closed at once because `maxConns` (or `maxConnsPerSource`) was reached. */
  rejected: number;
  /** Idle connections closed to make room at the limit (absent: a server that never sheds). */
  shed?: number;
  /** Connections closed because their handshake did not finish in time. */
  handshakeTimeouts: number;
  /** Handlers that threw. */
  errors: number;
  /** Failed accepts (EMFILE: out of file descriptors; a reset before accept), each retried. */
  acceptErrors: number;
}

/**
 * Every running `serve()` loop of the process (removed when it finishes), so lib/metrics can
 * export per-listener connection counts for every service without each one wiring them.
 */
export const liveServers: Set<
  { readonly addr: Deno.NetAddr; readonly name?: string; readonly stats: ServeStats }
> = new Set();

/** What serve() shares with each of its connections. */
interface ServerShared {
  readonly stats: ServeStats;
  readonly log: Logger;
  readonly handshakeMs: number;
}

/**
 * Note each read and write `conn` starts, for the shedding rule: own `read`/`write` on the
 * instance, so handlers (and the RST and SO_ORIGINAL_DST paths) keep the connection itself,
 * at the cost of a clock read per call. A read waiting for an idle peer was started when the
 * last bytes moved, so the time is the connection's last activity in both directions.
 */
function trackActivity(conn: Deno.Conn, entry: { activeMs: number }): void {
  // Bound functions, not closures: a closure made per connection and stored on it made each
  // scavenge keep every connection finished since the last full GC (as an arrow class field
  // did: see LiveConn.handshakeDone).
  conn.read = trackedRead.bind(conn, conn.read, entry);
  conn.write = trackedWrite.bind(conn, conn.write, entry);
}

/** {@linkcode trackActivity}'s `read`, bound to the connection, its own read and its entry. */
function trackedRead(
  this: Deno.Conn,
  read: Deno.Conn["read"],
  entry: { activeMs: number },
  p: Uint8Array,
): Promise<number | null> {
  entry.activeMs = deadlines.clockMs();
  return read.call(this, p);
}

/** {@linkcode trackActivity}'s `write`, bound as `trackedRead`. */
function trackedWrite(
  this: Deno.Conn,
  write: Deno.Conn["write"],
  entry: { activeMs: number },
  p: Uint8Array,
): Promise<number> {
  entry.activeMs = deadlines.clockMs();
  return write.call(this, p);
}

/**
 * One live connection: what serve() keeps of it (its place in the counts, its activity), the
 * {@linkcode ConnContext} its handler gets, and its handshake deadline on the shared wheel, in
 * one object (they were three, plus the deadline's callback and a `close` wrapper: issue 20).
 * The remote's text and the connection's logger are made when first read (a log line; most
 * connections of a busy proxy never log), through getters on the prototype (an object literal
 * with getters cost 4-5 µs to build). Its abort is an {@linkcode AbortHub}: a handler that never
 * reads `signal` costs no AbortController.
 */
class LiveConn<C extends Deno.Conn> extends AbortHub implements ConnContext, Deadline {
  readonly conn: C;
  readonly #server: ServerShared;
  #remote: string | undefined;
  #log: Logger | undefined;
  /** Its per-source key, while the server counts connections per source. */
  source: string | undefined;
  /** When it last started a read or a write (the deadline wheel's clock). */
  activeMs: number;
  /** Shed: already uncounted, its handler is ending. */
  shed = false;
  /** @internal When the handshake times out (while the connection is on the wheel). */
  due = 0;

  constructor(
    readonly id: number,
    conn: C,
    server: ServerShared,
    source: string | undefined,
    nowMs: number,
  ) {
    super();
    this.handshakeDone = deadlines.delete.bind(deadlines, this);
    this.conn = conn;
    this.#server = server;
    this.source = source;
    this.activeMs = nowMs;
    if (server.handshakeMs > 0) {
      // On the shared deadline wheel: a timer per connection was a measurable share of a
      // short connection's cost.
      this.due = nowMs + server.handshakeMs;
      deadlines.add(this);
    }
  }

  get remote(): string {
    return this.#remote ??= formatAddr(this.conn.remoteAddr);
  }

  get log(): Logger {
    return this.#log ??= this.#server.log.child({ conn: this.id });
  }

  /**
   * Bound: handlers pass it on as a function. Off the wheel (nothing if it was not on it).
   * A bound function, not an arrow class field: with an arrow field on a per-connection
   * object, each scavenge kept every connection finished since the last full GC and the next
   * promoted them (the reverse floor with such a record: 700-780 KB kept per scavenge against
   * 180-260 with a method or a bound function; bench/RESULTS.md, dgc's section).
   */
  readonly handshakeDone: () => void;

  /** @internal The handshake timed out (the wheel). */
  fire(): void {
    const server = this.#server;
    server.stats.handshakeTimeouts++;
    this.log.warn("handshake timeout, closing", {
      remote: this.remote,
      timeoutMs: server.handshakeMs,
    });
    this.abort(new DOMException("handshake timeout", "TimeoutError"));
    closeQuietly(this.conn);
  }
}

/**
 * Close an accepted connection at its handler's end, if nothing closed it yet (most handlers
 * did: a relay does): Deno's `[Symbol.dispose]` closes only a resource still open, where
 * `close()` again would build a BadResource error with its stack only to drop it (~20 µs).
 */
function closeAccepted(conn: Deno.Conn): void {
  const dispose = (conn as Partial<Disposable>)[Symbol.dispose];
  if (dispose === undefined) closeQuietly(conn);
  else {
    try {
      dispose.call(conn);
    } catch {
      // Not Deno's own (a wrapper's dispose failing): the connection is gone either way.
    }
  }
}

/** A running accept loop. */
export interface Server {
  readonly addr: Deno.NetAddr;
  /** The listener's name (`ServeOptions.name`), if it has one. */
  readonly name?: string;
  readonly stats: ServeStats;
  /** Stop accepting, let live connections finish up to `drainMs`, then cut the rest. */
  stop(drainMs?: number): Promise<void>;
  /** Resolves when the accept loop has ended and every handler settled. */
  readonly finished: Promise<void>;
}

/** The per-source key of a peer address: IPv4 address or IPv6 /64 (see `sourceKey`). */
function sourceOf(addr: Deno.Addr): string {
  return addr.transport === "tcp" || addr.transport === "udp"
    ? sourceKey(addr.hostname)
    : formatAddr(addr);
}

/**
 * How many of `listener`'s next connections need TCP_NODELAY one by one: after serve() set it
 * on the listening socket (./tcp_nodelay.ts; Linux copies it into every socket accepted
 * later: one setsockopt fewer per connection), those already queued, plus one per CPU (a
 * connection being set up in the kernel meanwhile may be queued just after the count); where
 * that cannot be done, all of them (Infinity).
 */
function perConnNoDelay(listener: Deno.Listener): number {
  // A listener that set it itself (lib/transport's TLS listeners: `noDelay`) needs no second look.
  if ((listener as { noDelay?: unknown }).noDelay === true) return 0;
  const addr = listener.addr;
  if (addr.transport !== "tcp") return Infinity;
  const queued = listenerNoDelayQueued(addr.port);
  return queued === undefined ? Infinity : queued + navigator.hardwareConcurrency;
}

/** Format a Deno address as `host:port` (IPv6 in brackets). */
export function formatAddr(addr: Deno.Addr): string {
  if (addr.transport === "tcp" || addr.transport === "udp") {
    return addr.hostname.includes(":")
      ? `[${addr.hostname}]:${addr.port}`
      : `${addr.hostname}:${addr.port}`;
  }
  return "path" in addr ? addr.path : String(addr);
}

/**
 * Accept connections from `listener` and run `handler` for each (with TCP_NODELAY set: see
 * `ServeOptions.acceptedNoDelay`).
 *
 * @example
 * ```ts
 * import { dial, relay, serve } from "./mod.ts";
 * const origin = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => new Response("hi"));
 * const server = serve(Deno.listen({ hostname: "127.0.0.1", port: 0 }), async (conn, ctx) => {
 *   ctx.handshakeDone();
 *   await relay(conn, await dial("127.0.0.1", origin.addr.port));
 * });
 * const res = await fetch(`http://127.0.0.1:${server.addr.port}/`, { headers: { connection: "close" } });
 * console.assert((await res.text()) === "hi");
 * await server.stop();
 * await origin.shutdown();
 * ```
 */
export function serve<C extends Deno.Conn>(
  listener: Deno.Listener<C>,
  handler: ConnHandler<C>,
  opts: ServeOptions = {},
): Server {
  const log = opts.log ?? silentLogger;
  const maxConns = opts.maxConns ?? defaultMaxConns;
  const maxPerSource = opts.maxConnsPerSource ?? maxConns;
  const perSource = new Map<string, number>();
  const handshakeMs = opts.handshakeTimeoutMs ?? defaultHandshakeTimeoutMs;
  const shedIdleMs = opts.shedIdleMs ?? defaultShedIdleMs;
  // Connections still to get TCP_NODELAY one by one (Infinity: every one).
  let noDelayLeft = opts.acceptedNoDelay === undefined
    ? perConnNoDelay(listener as Deno.Listener)
    : opts.acceptedNoDelay
    ? 0
    : Infinity;
  const stats: ServeStats = {
    active: 0,
    total: 0,
    rejected: 0,
    shed: 0,
    handshakeTimeouts: 0,
    errors: 0,
    acceptErrors: 0,
  };
  // Not a Set: a long-lived Set churned per connection makes scavenges keep finished ones
  // (lib/net/live_list.ts).
  const live = new LiveList<LiveConn<C>>();
  const shared: ServerShared = { stats, log, handshakeMs };
  // Handlers not settled yet, and what `finished` waits for once the loop ended: a count,
  // not a set of promises each with a `finally` of its own (two promises per connection).
  let running = 0;
  let allSettled: (() => void) | undefined;
  // Set once the drain deadline passed: every live connection's own controller is aborted
  // then (a signal per connection derived with AbortSignal.any cost ~20 µs of each one).
  let hardStopped = false;
  let stopping: Promise<void> | undefined;
  let nextId = 0;
  const addr = listener.addr as Deno.NetAddr;

  // Without a per-source share below the limit there is nothing to count per source.
  const perSourceLimited = maxPerSource < maxConns;
  // Connections are counted per source only while the server holds at least the share in all
  // (from then until it holds half of it again): with fewer, no source can be at its share,
  // so most connections of a busy server need no per-source key and no map updates (a fresh
  // key string hashed and four map operations per connection: issue 20).
  let countingSources = false;
  const stopCountingAt = Math.floor(maxPerSource / 2);

  /** Start counting per source: every live connection once, then each newcomer. */
  const countSources = () => {
    countingSources = true;
    for (const e of live) {
      const source = e.source = sourceOf(e.conn.remoteAddr);
      perSource.set(source, (perSource.get(source) ?? 0) + 1);
    }
  };

  /** Give back the places `entry` held (at its end, or when it is shed). */
  const uncount = (entry: LiveConn<C>) => {
    live.delete(entry);
    stats.active--;
    const source = entry.source;
    if (source !== undefined) {
      const n = (perSource.get(source) ?? 1) - 1;
      if (n > 0) perSource.set(source, n);
      else perSource.delete(source);
      if (stats.active <= stopCountingAt) {
        countingSources = false;
        perSource.clear();
        for (const e of live) e.source = undefined;
      }
    }
  };

  /** Close the longest-idle connection (of `source`, if given) for a newcomer; false: none. */
  const shedOne = (source?: string): boolean => {
    if (!(shedIdleMs < Infinity)) return false;
    const now = deadlines.clockMs();
    const victim = longestIdle(
      live,
      (e) => source === undefined || e.source === source ? e.activeMs : undefined,
      now - shedIdleMs,
    );
    if (!victim) return false;
    victim.shed = true;
    uncount(victim);
    stats.shed = (stats.shed ?? 0) + 1;
    log.warn("connection limit reached, shedding the longest-idle connection", {
      remote: formatAddr(victim.conn.remoteAddr),
      idleMs: Math.round(now - victim.activeMs),
      scope: source === undefined ? "listener" : "source",
    });
    victim.abort(new DOMException("shed for a newcomer", "AbortError"));
    closeQuietly(victim.conn); // an idle connection: an ordinary close, like the idle timeout
    return true;
  };

  const handle = async (c: LiveConn<C>) => {
    try {
      await handler(c.conn, c);
    } catch (err) {
      stats.errors++;
      if (!c.aborted && !hardStopped && !c.shed) {
        c.log.warn("connection handler failed", { remote: c.remote, error: errorMessage(err) });
      }
    } finally {
      c.handshakeDone();
      if (!c.shed) uncount(c);
      closeAccepted(c.conn);
      if (--running === 0) allSettled?.();
    }
  };

  const loop = async () => {
    const retry = new AcceptRetry(log);
    while (true) {
      let conn: C;
      try {
        conn = await listener.accept();
      } catch (err) {
        if (stopping || err instanceof Deno.errors.BadResource) return;
        // Transient accept failures (EMFILE, ECONNABORTED) must not end the server.
        stats.acceptErrors++;
        try {
          opts.onAcceptError?.(err);
        } catch {
          // The hook only frees spare resources; its failure must not end the accept loop.
        }
        await retry.failed(err);
        continue;
      }
      retry.accepted();
      stats.total++;
      // The source's share first: a source at it makes room among its own connections only.
      let source: string | undefined;
      if (perSourceLimited && (countingSources || stats.active >= maxPerSource)) {
        if (!countingSources) countSources();
        source = sourceOf(conn.remoteAddr);
        if ((perSource.get(source) ?? 0) >= maxPerSource && !shedOne(source)) {
          stats.rejected++;
          log.warn("per-source connection limit reached, closing new connection", {
            remote: formatAddr(conn.remoteAddr),
            maxConnsPerSource: maxPerSource,
          });
          closeQuietly(conn);
          continue;
        }
      }
      if (stats.active >= maxConns && !shedOne()) {
        stats.rejected++;
        log.warn("connection limit reached, closing new connection", {
          remote: formatAddr(conn.remoteAddr),
          maxConns,
        });
        closeQuietly(conn);
        continue;
      }
      if (source !== undefined) {
        // Unless a shed just now ended the counting (the server emptied to half its share).
        if (countingSources) perSource.set(source, (perSource.get(source) ?? 0) + 1);
        else source = undefined;
      }
      stats.active++;
      if (noDelayLeft > 0) {
        noDelayLeft--;
        noDelay(conn);
      }
      const c = new LiveConn(++nextId, conn, shared, source, deadlines.clockMs());
      live.add(c);
      if (shedIdleMs < Infinity) trackActivity(conn, c);
      running++;
      // handle() never rejects: its catch takes every handler error.
      handle(c);
    }
  };

  // The shared wheel keeps its timer between this server's connections (a timer started
  // and stopped per connection cost ~20 µs each way), and lets it go when the server is done.
  const releaseWheel = deadlines.hold();
  const loopDone = loop();
  const listenerName = opts.name ?? log.field("listener");
  const entry = {
    addr,
    name: listenerName === undefined ? undefined : String(listenerName),
    stats,
  };
  liveServers.add(entry);
  const finished = (async () => {
    await loopDone;
    if (running > 0) await new Promise<void>((resolve) => allSettled = resolve);
    liveServers.delete(entry);
    releaseWheel();
  })();

  const stop = (drainMs = opts.drainTimeoutMs ?? defaultDrainTimeoutMs): Promise<void> => {
    stopping ??= (async () => {
      closeQuietly(listener);
      await loopDone;
      let t: ReturnType<typeof setTimeout> | undefined;
      const deadline = new Promise<void>((r) => t = setTimeout(r, drainMs));
      await Promise.race([finished, deadline]);
      clearTimeout(t);
      if (live.size > 0) {
        log.info("drain deadline reached, closing live connections", { count: live.size });
        hardStopped = true;
        const reason = new DOMException("server stopped", "AbortError");
        for (const c of [...live]) {
          c.abort(reason);
          closeQuietly(c.conn);
        }
      }
      await finished;
    })();
    return stopping;
  };
  opts.signal?.addEventListener("abort", () => void stop(), { once: true });

  return { addr, name: entry.name, stats, stop, finished };
}
