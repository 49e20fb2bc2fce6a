/**
 * `ControlConn`: one control connection -- validated receive, serialised send, error reply
 * and close on any violation (never a crash), transparent ping/pong with RTT, and a
 * heartbeat that closes a silent connection.
 * @module
 */

import { closeQuietly, type Duplex } from "../net/duplex.ts";
import { errorMessage as describe } from "../net/errors.ts";
import { BufferedReader } from "../net/reader.ts";
import type { CompactCodec } from "./compact.ts";
import { ControlReader, ControlWriter, type FrameOptions } from "./frame.ts";
import {
  type BaseMessage,
  ControlError,
  type Message,
  type Outgoing,
  type Protocol,
  RemoteError,
} from "./message.ts";

/** How long a best-effort `error` message may take before we close anyway. */
export const errorReplyTimeoutMs = 1_000;

/** Options of {@linkcode ControlConn}. */
export interface ControlConnOptions extends FrameOptions {
  /** Reader to use (when a handshake already buffered bytes); a new one by default. */
  reader?: BufferedReader;
}

/** Options of {@linkcode ControlConn.startHeartbeat}. */
export interface HeartbeatOptions {
  /** Send a ping this often. */
  intervalMs: number;
  /** Close the connection when nothing at all arrived for this long. @default 3 × intervalMs */
  deadAfterMs?: number;
}

/**
 * A control connection speaking `protocol` over `conn`.
 *
 * `receive()` answers pings itself and records pong RTTs, so callers only see their own
 * messages and `error`. Someone must keep calling `receive()` for heartbeats to be seen.
 */
export class ControlConn<M extends Message> {
  /** The validated-frame reader (its `reader.takeBuffered()` hands over read-ahead bytes). */
  readonly reader: ControlReader<M>;
  /** The serialising writer. */
  readonly writer: ControlWriter<M>;
  #conn: Duplex;
  #closed = false;
  #closeReason: ControlError | undefined;
  #abort = new AbortController();
  #heartbeat: ReturnType<typeof setInterval> | undefined;
  #rttMs: number | undefined;
  #lastReceivedAt = performance.now();

  /** Speak `protocol` over `conn`; the ControlConn owns `conn` from now on. */
  constructor(conn: Duplex, readonly protocol: Protocol<M>, opts: ControlConnOptions = {}) {
    this.#conn = conn;
    this.reader = new ControlReader(opts.reader ?? new BufferedReader(conn), protocol, opts);
    this.writer = new ControlWriter(conn, protocol, opts);
  }

  /** Most recent round-trip time measured by ping/pong, in milliseconds. */
  get rttMs(): number | undefined {
    return this.#rttMs;
  }

  /** `performance.now()` when the last frame arrived. */
  get lastReceivedAt(): number {
    return this.#lastReceivedAt;
  }

  /** Aborted when the connection is closed, by either side or by a violation. */
  get signal(): AbortSignal {
    return this.#abort.signal;
  }

  /** Whether `close()` ran. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * From now on, read compact frames of `codec` besides JSON ones and send the messages it
   * encodes that way (once both sides agreed, by the protocol's own negotiation).
   */
  useCompact(codec: CompactCodec<M>): void {
    this.reader.compact = codec;
    this.writer.compact = codec;
  }

  /** Send one message (serialised with every other send). */
  send(msg: Outgoing<M>): Promise<void> {
    if (this.#closed) return Promise.reject(this.#closeReason ?? closedError());
    return this.writer.send(msg);
  }

  /** Send a base message (every protocol includes them). */
  #sendBase(msg: Outgoing<BaseMessage>): Promise<void> {
    return this.send(msg as unknown as Outgoing<M>);
  }

  /**
   * The next application message (not ping/pong), or `null` on a clean EOF.
   * On a protocol violation it sends an `error` message, closes, and throws `ControlError`.
   * An `error` message from the peer is returned like any message (see `expect`).
   */
  async receive(): Promise<M | null> {
    while (true) {
      if (this.#closed) throw this.#closeReason ?? closedError();
      let msg: M | null;
      try {
        msg = await this.reader.read();
      } catch (err) {
        if (this.#closed) throw this.#closeReason ?? closedError(err);
        if (err instanceof ControlError) {
          if (err.reason !== "truncated") {
            // On "bad-version" the peer learns which version we speak.
            const supported = err.reason === "bad-version" ? this.protocol.version : undefined;
            await this.fail(err.reason, err.message, supported);
          }
          this.close(err);
          throw err;
        }
        const e = closedError(err);
        this.close(e);
        throw e;
      }
      if (msg === null) {
        this.close();
        return null;
      }
      this.#lastReceivedAt = performance.now();
      const base = msg as Message as BaseMessage;
      if (base.type === "ping") {
        this.#sendBase({ type: "pong", ts: base.ts }).catch(() => {
          // A failed pong means the connection is going away; the reader will see it.
        });
        continue;
      }
      if (base.type === "pong") {
        const rtt = performance.now() - base.ts;
        if (rtt >= 0 && rtt < 3_600_000) this.#rttMs = rtt;
        continue;
      }
      return msg;
    }
  }

  /**
   * Receive the next message and require its type to be `type`. An `error` from the peer
   * throws `RemoteError`; another type sends "unexpected", closes and throws; no message
   * within `timeoutMs` closes and throws `ControlError("timeout")`.
   */
  async expect<T extends M["type"]>(
    type: T,
    timeoutMs = 0,
  ): Promise<Extract<M, { type: T }>> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    if (timeoutMs > 0) {
      timer = setTimeout(() => {
        this.close(new ControlError("timeout", `no ${type} message within ${timeoutMs} ms`));
      }, timeoutMs);
    }
    try {
      const msg = await this.receive();
      if (msg === null) throw new ControlError("closed", `connection closed before ${type}`);
      if (msg.type === type) return msg as Extract<M, { type: T }>;
      if (msg.type === "error") {
        const e = msg as Message as Extract<BaseMessage, { type: "error" }>;
        this.close();
        throw new RemoteError(e.reason, e.message ?? e.reason);
      }
      const err = new ControlError("unexpected", `expected ${type}, got ${msg.type}`);
      await this.fail("unexpected", err.message);
      this.close(err);
      throw err;
    } finally {
      if (timer !== undefined) clearTimeout(timer);
    }
  }

  /**
   * Best effort: tell the peer why we are closing (bounded by `errorReplyTimeoutMs`),
   * then close. Never throws. `supported` is our protocol version, for "bad-version".
   */
  async fail(reason: string, message?: string, supported?: number): Promise<void> {
    if (!this.#closed) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const sent = this.#sendBase({ type: "error", reason, message, supported }).catch(() => {
        // The peer is gone or not reading; closing is all that is left to do.
      });
      await Promise.race([
        sent,
        new Promise<void>((r) => timer = setTimeout(r, errorReplyTimeoutMs)),
      ]);
      clearTimeout(timer);
    }
    this.close();
  }

  /**
   * Ping every `intervalMs`; close with `ControlError("timeout")` when no frame at all
   * arrived for `deadAfterMs`. Stopped by `close()`.
   */
  startHeartbeat(opts: HeartbeatOptions): void {
    if (this.#heartbeat !== undefined || this.#closed) return;
    const deadAfterMs = opts.deadAfterMs ?? 3 * opts.intervalMs;
    this.#lastReceivedAt = performance.now();
    const tick = () => {
      const silentMs = performance.now() - this.#lastReceivedAt;
      if (silentMs > deadAfterMs) {
        this.close(
          new ControlError("timeout", `no heartbeat for ${Math.round(silentMs)} ms, peer dead`),
        );
        return;
      }
      this.#sendBase({ type: "ping", ts: performance.now() }).catch(() => {
        // The connection is closing; the reader reports it.
      });
    };
    this.#heartbeat = setInterval(tick, Math.max(1, Math.min(opts.intervalMs, deadAfterMs / 2)));
    tick();
  }

  /** Close the connection (idempotent); `reason` is what pending and later calls throw. */
  close(reason?: ControlError): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#closeReason = reason;
    if (this.#heartbeat !== undefined) clearInterval(this.#heartbeat);
    this.#heartbeat = undefined;
    closeQuietly(this.#conn);
    this.#abort.abort(reason ?? closedError());
  }

  /** Why the connection closed, when it was not a clean close. */
  get closeReason(): ControlError | undefined {
    return this.#closeReason;
  }
}

function closedError(cause?: unknown): ControlError {
  return new ControlError(
    "closed",
    cause ? `control connection closed: ${describe(cause)}` : "control connection closed",
    cause ? { cause } : undefined,
  );
}
