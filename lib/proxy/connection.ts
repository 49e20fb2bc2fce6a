/**
 * `ProxyConnection`: one accepted client and what it was connected to, with the seed's
 * source and destination sides, the reason it ended, and byte counts -- logged as exactly
 * one structured line when it closes.
 * @module
 */

import type { LogFields, Logger } from "../log.ts";
import { type HostPort, joinHostPort } from "../net/addr.ts";
import { formatAddr } from "../net/serve.ts";
import { closeQuietly } from "../net/duplex.ts";
import type { NetFailureReason } from "../net/errors.ts";
import type { RelayStats } from "../net/relay.ts";
import { sourceKey } from "../net/ratelimit.ts";
import { perSourceShare } from "../net/serve.ts";
import { defaultShedIdleMs, longestIdle } from "../net/shed.ts";
import { LiveList } from "../net/live_list.ts";
import { ProxySide, type ProxyState } from "./state.ts";

/**
 * Why a proxy connection ended.
 *
 * - "done": both directions reached EOF.
 * - "idle": no byte moved for the idle timeout.
 * - "aborted": the server was stopped and the drain deadline cut it.
 * - "reset": a peer vanished mid-relay (connection reset, broken pipe).
 * - "error": a read or write failed mid-relay for another reason.
 * - "dial-failed": the destination could not be reached (`failure` says why).
 * - "handshake-failed": the client broke its protocol (bad version, malformed head ...).
 * - "auth-failed": wrong or missing credentials.
 * - "handshake-timeout": the client did not finish its handshake in time.
 * - "limit": over the connection limit (or its source's share of it), closed at once.
 * - "shed": the longest idle connection, closed to make room when the limit was reached.
 * - "closed": the client left before asking for anything.
 */
export type ProxyEnd =
  | "done"
  | "idle"
  | "aborted"
  | "reset"
  | "error"
  | "dial-failed"
  | "handshake-failed"
  | "auth-failed"
  | "handshake-timeout"
  | "limit"
  | "shed"
  | "closed";

/** What a closed connection reports (the fields of its log line). */
export interface ProxyConnectionRecord {
  id: number;
  scheme: string;
  /** The listener's name (`socks5`, `socks5-2`...; the scheme when it has none). */
  listener: string;
  description: string;
  end: ProxyEnd;
  /** Typed dial failure (`NetError.reason`) or protocol error reason. */
  failure?: NetFailureReason | string;
  /** Bytes from the client to the destination. */
  bytesUp: number;
  /** Bytes from the destination to the client. */
  bytesDown: number;
  durationMs: number;
  /** From accept to the first destination connected (none if it never connected). */
  setupMs?: number;
  username?: string;
}

/** A live connection as a status page shows it. */
export interface ProxyConnectionSnapshot {
  id: number;
  scheme: string;
  description: string;
  source: ProxyState;
  dest: ProxyState;
  bytesUp: number;
  bytesDown: number;
  ageMs: number;
  username?: string;
}

/**
 * One proxied connection.
 *
 * The first recorded failure wins (`fail()` after `fail()` keeps the first): the cause of a
 * broken connection is what an operator needs, not the cascade of closes it triggered.
 */
export class ProxyConnection {
  /** The accepted client. */
  readonly source: ProxySide;
  #dest: ProxySide = new ProxySide("dest");
  readonly startedMs: number = performance.now();
  /** The destination the client asked for (before resolution). */
  target?: HostPort;
  /** The user the client authenticated as, if any. */
  username?: string;
  /** The accepting listener's name (set by the server; the scheme until then). */
  listener: string;
  /**
   * Live byte counters, updated in place by the relay while it runs (aToB: client to
   * destination), so a status page sees a long transfer progress.
   */
  readonly stats: RelayStats = { aToB: 0, bToA: 0 };
  /** The client's address key for per-source limits (IPv4 address, IPv6 /64). */
  readonly sourceKey: string;
  /**
   * The client connection (set by the server), closed when the table sheds this one: the
   * socket itself, not a closure made per connection.
   */
  shed?: { close(): void };
  #end?: ProxyEnd;
  #failure?: string;
  #message?: string;
  #setupMs?: number;
  /** The client's address, for the log line. */
  readonly #remote: Deno.Addr | string;
  #record?: ProxyConnectionRecord;
  #seenBytes = 0;
  #seenAtMs: number = this.startedMs;

  /**
   * The protocol spoken: the listener's scheme, refined by the handshake where one listener
   * speaks several (a socks5 listener's SOCKS4 client is "socks4"). Metrics count accepts by
   * the listener's scheme, taken before the handshake.
   */
  scheme: string;

  constructor(readonly id: number, scheme: string, source: Deno.Addr | string) {
    this.scheme = scheme;
    this.listener = scheme;
    this.#remote = source;
    this.source = new ProxySide("source", source);
    this.source.transition("connected");
    this.sourceKey = typeof source === "string"
      ? sourceKey(source)
      : "hostname" in source
      ? sourceKey(source.hostname)
      : this.source.description;
  }

  /**
   * When bytes last moved, as far as the table saw: the byte counters are compared with
   * their value at the previous look, so a connection counts as active from the first look
   * after it moved data, and idle since its start if it never did.
   */
  lastActiveMs(now: number = performance.now()): number {
    const b = this.stats.aToB + this.stats.bToA;
    if (b !== this.#seenBytes) {
      this.#seenBytes = b;
      this.#seenAtMs = now;
    }
    return this.#seenAtMs;
  }

  /** What the proxy dialled on the client's behalf (the latest, for a session type). */
  get dest(): ProxySide {
    return this.#dest;
  }

  /** Bytes from the client to the destination so far. */
  get bytesUp(): number {
    return this.stats.aToB;
  }

  /** Bytes from the destination to the client so far. */
  get bytesDown(): number {
    return this.stats.bToA;
  }

  /** A JSON-able snapshot for status pages. */
  snapshot(): ProxyConnectionSnapshot {
    return {
      id: this.id,
      scheme: this.scheme,
      description: this.description,
      source: this.source.state,
      dest: this.dest.state,
      bytesUp: this.bytesUp,
      bytesDown: this.bytesDown,
      ageMs: Math.round(performance.now() - this.startedMs),
      username: this.username,
    };
  }

  /** Like `http[ipv4[127.0.0.1:5555]->name[example.org:80]]`. */
  get description(): string {
    return `${this.scheme}[${this.source.description}->${this.dest.description}]`;
  }

  /** The end reason recorded so far, if any. */
  get end(): ProxyEnd | undefined {
    return this.#end;
  }

  /** The failure reason recorded so far, if any. */
  get failure(): string | undefined {
    return this.#failure;
  }

  /** Whether `close()` already ran. */
  get closed(): boolean {
    return this.#record !== undefined;
  }

  /** Record why the connection is ending (first call wins). */
  fail(end: ProxyEnd, failure?: string, message?: string): void {
    if (this.#end !== undefined) return;
    this.#end = end;
    this.#failure = failure;
    this.#message = message;
  }

  /**
   * The destination was asked for: the dest side starts CONNECTING. Called again (by a
   * session type's next request) it starts a fresh dest side.
   */
  connecting(target: HostPort): void {
    // A session type (HTTP keep-alive) may dial again: the new destination is a new side.
    if (this.#dest.state !== "idle") this.#dest = new ProxySide("dest");
    this.target = target;
    this.dest.describeEndpointLater(target);
    this.dest.transition("connecting");
  }

  /** The destination answered; `peer` (the address reached) refines the description. */
  connected(peer?: Deno.Addr): void {
    const target = this.target;
    if (peer && target && "hostname" in peer) this.dest.describeEndpointLater(target, peer);
    this.dest.transition("connected");
    this.#setupMs ??= performance.now() - this.startedMs;
  }

  /**
   * Close both sides (states only: the relay or serve() closes the sockets), record the
   * end reason (`fallback` if none was recorded) and log one line. Idempotent: returns
   * the same record on every call and logs once. With `lineLog` the line goes to its `log`
   * (the connection's own logger, sharing `log`'s level: serve()'s context, which makes it
   * only when read, so only when the line is written).
   */
  close(
    log: Logger,
    fallback: ProxyEnd = "done",
    lineLog?: { readonly log: Logger },
  ): ProxyConnectionRecord {
    if (this.#record) return this.#record;
    this.source.transition("closed");
    this.dest.transition("closed");
    this.#end ??= fallback;
    const rec = new ClosedRecord(this, this.#end, this.#failure, this.#setupMs);
    this.#record = rec;
    // Peers vanishing is ordinary life for a proxy: info, not warn.
    const ok = rec.end === "done" || rec.end === "idle" || rec.end === "closed" ||
      rec.end === "reset";
    const level = ok ? "info" : "warn";
    if (!log.enabled(level)) return rec;
    const remote = this.#remote;
    const fields: LogFields = {
      remote: typeof remote === "string" ? remote : formatAddr(remote),
      dest: this.target && joinHostPort(this.target.host, this.target.port),
      proxy: rec.description,
      end: rec.end,
      failure: rec.failure,
      up: rec.bytesUp,
      down: rec.bytesDown,
      ms: rec.durationMs,
      user: rec.username,
      error: this.#message,
    };
    for (const k of Object.keys(fields)) if (fields[k] === undefined) delete fields[k];
    (lineLog?.log ?? log).log(level, "connection closed", fields);
    return rec;
  }
}

/**
 * What `close()` returns: a class, not an object literal with a `description` getter (such
 * a literal cost 4-5 µs to build, a tenth of seaprox's bookkeeping per connection).
 */
class ClosedRecord implements ProxyConnectionRecord {
  readonly id: number;
  readonly scheme: string;
  readonly listener: string;
  readonly failure?: string;
  readonly bytesUp: number;
  readonly bytesDown: number;
  readonly durationMs: number;
  readonly username?: string;
  readonly #conn: ProxyConnection;

  constructor(
    conn: ProxyConnection,
    readonly end: ProxyEnd,
    failure: string | undefined,
    readonly setupMs: number | undefined,
  ) {
    this.#conn = conn;
    this.id = conn.id;
    this.scheme = conn.scheme;
    this.listener = conn.listener;
    this.failure = failure;
    this.bytesUp = conn.bytesUp;
    this.bytesDown = conn.bytesDown;
    this.durationMs = Math.round(performance.now() - conn.startedMs);
    this.username = conn.username;
  }

  /** Made when read (the log line, a test): the sides no longer change once closed. */
  get description(): string {
    return this.#conn.description;
  }
}

/** Options of {@linkcode ConnectionTable}. */
export interface ConnectionTableOptions {
  /**
   * Connections one source (IPv4 address, IPv6 /64) may hold at once, so one client cannot
   * take the whole table. @default lib/net `perSourceShare(maxConns)` (a quarter, at least 64)
   */
  maxPerSource?: number;
  /**
   * When the table is full, the connection idle longest is closed to admit a new one if it
   * moved no byte for at least this long; else the newcomer is refused. @default 10000
   */
  shedIdleMs?: number;
}

/** Why {@linkcode ConnectionTable.admit} refused a connection. */
export type AdmitRefusal = "limit" | "source-limit";

/**
 * The live connections of a process, shared by every listener: the seed's
 * `MAX_NUM_CONNECTIONS` array, so one limit covers all listeners together. Two rules keep an
 * idle flood on one listener from starving the others: each source gets at most
 * `maxPerSource`, and a full table (or a source at its share) sheds its longest-idle
 * connection (idle for `shedIdleMs` at least) to admit a new one, instead of refusing
 * everybody until the idle timeout.
 */
export class ConnectionTable {
  // Not a Set: a long-lived Set churned per connection makes scavenges keep finished ones
  // (lib/net/live_list.ts).
  #live = new LiveList<ProxyConnection>();
  #perSource = new Map<string, number>();
  #nextId = 0;
  /** Per-source cap. */
  readonly maxPerSource: number;
  /** Least idle time of a connection shed for a newcomer. */
  readonly shedIdleMs: number;
  /** Connections shed to make room. */
  shed = 0;

  /** @param maxConns Connections allowed at once across all listeners sharing this table. */
  constructor(readonly maxConns: number = Infinity, opts: ConnectionTableOptions = {}) {
    this.maxPerSource = opts.maxPerSource ?? perSourceShare(maxConns);
    this.shedIdleMs = opts.shedIdleMs ?? defaultShedIdleMs;
  }

  /** Live connections now. */
  get size(): number {
    return this.#live.size;
  }

  /** A fresh connection id. */
  nextId(): number {
    return ++this.#nextId;
  }

  /**
   * Admit `c`, shedding the longest-idle connection when the table is full; the refusal
   * reason when it cannot (the caller closes `c` at once).
   */
  admit(c: ProxyConnection): AdmitRefusal | undefined {
    if (
      (this.#perSource.get(c.sourceKey) ?? 0) >= this.maxPerSource && !this.#shedOne(c.sourceKey)
    ) return "source-limit";
    if (this.#live.size >= this.maxConns && !this.#shedOne()) return "limit";
    this.#live.add(c);
    this.#perSource.set(c.sourceKey, (this.#perSource.get(c.sourceKey) ?? 0) + 1);
    return undefined;
  }

  /** Add `c` unless the table is full; false means the caller must close it at once. */
  tryAdd(c: ProxyConnection): boolean {
    return this.admit(c) === undefined;
  }

  /** Shed the longest-idle connection (of `source`, if given); false if none is idle enough. */
  #shedOne(source?: string): boolean {
    const now = performance.now();
    // lib/net's rule: of equally idle ones the first admitted goes.
    const victim = longestIdle(
      this.#live,
      (c) => {
        if (source !== undefined && c.sourceKey !== source) return undefined;
        const at = c.lastActiveMs(now); // every look moves its baseline
        return c.shed ? at : undefined;
      },
      now - this.shedIdleMs,
    );
    if (!victim) return false;
    this.delete(victim);
    victim.fail("shed");
    closeQuietly(victim.shed);
    this.shed++;
    return true;
  }

  /** Forget `c` (after it closed). */
  delete(c: ProxyConnection): void {
    if (!this.#live.delete(c)) return;
    const n = (this.#perSource.get(c.sourceKey) ?? 1) - 1;
    if (n > 0) this.#perSource.set(c.sourceKey, n);
    else this.#perSource.delete(c.sourceKey);
  }

  /** Snapshot of the live connections (for a status page). */
  list(): ProxyConnection[] {
    return [...this.#live];
  }
}
