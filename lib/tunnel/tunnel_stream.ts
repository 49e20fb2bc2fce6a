/**
 * One tunnel stream as the server sees it: the mux stream it opened to a client, the
 * client's StreamReply still to be read, and its bytes counted by the stream itself into its
 * host's counters (the fronts never count bytes).
 * @module
 */

import type { Stream } from "../mux/mod.ts";
import {
  BufferedReader,
  closeQuietly,
  type Duplex,
  errorMessage,
  type FramedWriter,
  framedWriter,
  ProtocolError,
  type ViewReader,
  viewReader,
  withPrefix,
} from "../net/mod.ts";
import { expectMessage, type StreamFailure, type StreamReply } from "./protocol.ts";
import type { HostStats } from "./stats.ts";
import type { ClientConn } from "./client_conn.ts";

/** A Duplex that may take a small write synchronously (a mux stream's `writeNow`). */
export interface ImmediateWriter {
  /** Queue `p` at once; false when it cannot be taken so (nothing written: use `write`). */
  writeNow(p: Uint8Array): boolean;
}

/** Why a tunnel stream could not be used. */
export type TunnelFailure = StreamFailure | "timeout" | "closed" | "protocol";

/** A tunnel stream failed before carrying a response: maps to 502 (or 504 for "timeout"). */
export class TunnelError extends Error {
  /** Error class name. */
  override name = "TunnelError";
  /** A failure of kind `reason`. */
  constructor(readonly reason: TunnelFailure, message: string, options?: ErrorOptions) {
    super(message, options);
  }
}

/**
 * A Duplex that adds what it writes to `stats.bytesIn` and what it reads to
 * `stats.bytesOut` (public side -> client is "in"). It passes on its inner Duplex's
 * `FramedWriter` and `ViewReader` sides (a mux stream's), counted the same, so relay() keeps
 * its one-write-per-frame and no-copy paths through it.
 */
class CountedDuplex implements Duplex {
  /** Set when a write through it starts (a retry must not lose bytes already on the way). */
  wrote = false;
  /** The inner Duplex's `FramedWriter` side, if it has one (see the class doc). */
  readonly headroomBytes?: number;
  readonly writeFramed?: (p: Uint8Array) => Promise<number>;
  /** The inner Duplex's `ViewReader` side, if it has one (see the class doc). */
  readonly readView?: () => Promise<Uint8Array | null>;
  readonly releaseView?: () => void;
  /** `inner` may be swapped for another Duplex of the same kind (a retried mux stream). */
  constructor(public inner: Duplex, readonly stats: HostStats) {
    // Bound methods, not arrows: an arrow assigned to a property is made in V8's old
    // generation and keeps its context (this, the stream) through every scavenge until the
    // next full GC: tunnel-server kept every finished public connection's stream so
    // (bench/RESULTS.md, mgc's section).
    const framed = framedWriter(inner);
    if (framed) {
      this.headroomBytes = framed.headroomBytes;
      this.writeFramed = this.#writeFramed.bind(this, framed);
    }
    const views = viewReader(inner);
    if (views) {
      this.readView = this.#readView.bind(this, views);
      this.releaseView = this.#releaseView.bind(this, views);
    }
  }
  /** `writeFramed` through the current inner stream (`framed`: the first one's), counted. */
  async #writeFramed(framed: FramedWriter, p: Uint8Array): Promise<number> {
    this.wrote = true;
    const n = await (framedWriter(this.inner) ?? framed).writeFramed(p);
    this.stats.bytesIn += n;
    return n;
  }
  /** `readView` of the current inner stream (`views`: the first one's), counted. */
  async #readView(views: ViewReader): Promise<Uint8Array | null> {
    const v = await (viewReader(this.inner) ?? views).readView();
    if (v !== null) this.stats.bytesOut += v.length;
    return v;
  }
  #releaseView(views: ViewReader): void {
    (viewReader(this.inner) ?? views).releaseView();
  }
  /**
   * Write `p` at once when the inner stream can take it so (a mux stream's `writeNow`):
   * counted like `write`; false when nothing was written.
   */
  writeNow(p: Uint8Array): boolean {
    const inner = this.inner as Partial<ImmediateWriter>;
    if (!inner.writeNow?.(p)) return false;
    this.wrote = true;
    this.stats.bytesIn += p.length;
    return true;
  }
  async read(p: Uint8Array): Promise<number | null> {
    const n = await this.inner.read(p);
    if (n !== null) this.stats.bytesOut += n;
    return n;
  }
  async write(p: Uint8Array): Promise<number> {
    this.wrote = true;
    const n = await this.inner.write(p);
    this.stats.bytesIn += n;
    return n;
  }
  closeWrite(): Promise<void> {
    return this.inner.closeWrite();
  }
  close(): void {
    this.inner.close();
  }
}

/**
 * First size of the reply reader: a StreamReply is about 100 bytes, and the reader lives as
 * long as the stream (an idle keep-alive connection holds it); it grows for a larger one.
 */
const replyReadBytes = 1024;

const noStats = (): HostStats => ({
  requests: 0,
  bytesIn: 0,
  bytesOut: 0,
  openStreams: 0,
  errors: 0,
});

/**
 * Opens the same request again on another member of the failed client's group (its SYN data
 * again, with a FIN when the request's write side was closed already); undefined when no
 * other member can take it.
 */
export type StreamReopen = (
  failed: ClientConn,
  fin: boolean,
) => Promise<{ stream: Stream; client: ClientConn } | undefined>;

/** What the fronts do with a tunnel stream's mux stream directly. */
export interface StreamControl {
  /** Abort both directions. */
  reset(): void;
  /** No more request bytes. */
  closeWrite(): Promise<void>;
}

/** A tunnel stream the server opened; the client's StreamReply has not been read yet. */
export class TunnelStream {
  /** Reads the reply (bytes read ahead stay here until `body()`). */
  reader: BufferedReader;
  /** The stream for request bytes: what is written here is counted as the host's bytes in. */
  readonly out: Duplex & ImmediateWriter;
  readonly #out: CountedDuplex;
  readonly #stats: HostStats;
  #stream: Stream;
  #client: ClientConn | undefined;
  #reopen: StreamReopen | undefined;
  #writeClosed = false;
  #open = true;
  #idle = false;
  /** Reset and half-close of the current mux stream (it changes when the request is retried). */
  readonly stream: StreamControl = {
    reset: () => this.#stream.reset(),
    closeWrite: () => {
      this.#writeClosed = true;
      return this.#stream.closeWrite();
    },
  };
  /**
   * Wrap a freshly opened stream; counts it as open in `stats` (and in `client`'s open
   * streams) and `sentBytes` (the request bytes that rode in its SYN frame) as bytes in.
   * With `reopen`, a request the client did not take (no StreamReply: its session died, or
   * its local app refused the dial) and of which nothing but the SYN was sent goes to another
   * member of its group: the app never saw it, so nothing can be processed twice.
   */
  constructor(
    stream: Stream,
    readonly requestId: string,
    readonly host: string,
    stats: HostStats = noStats(),
    sentBytes = 0,
    client?: ClientConn,
    reopen?: StreamReopen,
  ) {
    this.#stream = stream;
    this.reader = new BufferedReader(stream, replyReadBytes);
    this.#stats = stats;
    this.#out = new CountedDuplex(stream, stats);
    this.out = this.#out;
    this.#client = client;
    this.#reopen = reopen;
    stats.openStreams++;
    stats.bytesIn += sentBytes;
    if (client) {
      client.openStreams++;
      client.streams++;
    }
  }

  /** The client serving it now. */
  get client(): ClientConn | undefined {
    return this.#client;
  }

  /**
   * Whether it waits in a front's idle pool (counted in its client's `idleStreams`, which
   * least-streams balancing does not take for load); a released stream is never idle.
   */
  setIdle(idle: boolean): void {
    if (!this.#open || this.#idle === idle) return;
    this.#idle = idle;
    if (this.#client) this.#client.idleStreams += idle ? 1 : -1;
  }

  /** Close the stream and stop counting it as open (idempotent). */
  release(): void {
    this.setIdle(false);
    if (this.#open) {
      this.#stats.openStreams--;
      if (this.#client) this.#client.openStreams--;
    }
    this.#open = false;
    closeQuietly(this.#stream);
  }

  /**
   * Wait for the client's StreamReply. Rejects with TunnelError: "timeout" if none in
   * `timeoutMs`, the client's failure reason when it could not serve the stream,
   * "protocol" when the reply names another request id, "closed" when the stream ended.
   * When the client could not take the request (see the constructor), the other members of
   * its group are tried in turn first.
   */
  async reply(timeoutMs: number): Promise<StreamReply> {
    while (true) {
      try {
        return await this.#replyOnce(timeoutMs);
      } catch (err) {
        const e = err as TunnelError;
        const failed = this.#client;
        if (
          !this.#reopen || !failed || !this.#open || this.#out.wrote ||
          (e.reason !== "closed" && e.reason !== "dial-failed")
        ) throw err;
        const fin = this.#writeClosed;
        const next = await this.#reopen(failed, fin);
        if (!next) throw err;
        if (!this.#open || this.#out.wrote) {
          // Released, or request bytes went to the failed stream meanwhile: they are lost
          // with it, so the request cannot go on elsewhere.
          next.stream.reset();
          throw err;
        }
        if (this.#writeClosed && !fin) {
          // Half-closed while the next member's stream was being opened.
          next.stream.closeWrite().catch(() => {
            // That stream failed already: the reply wait below reports it.
          });
        }
        failed.openStreams--;
        next.client.openStreams++;
        next.client.streams++;
        this.#client = next.client;
        this.#stream = next.stream;
        this.#out.inner = next.stream;
        this.reader = new BufferedReader(next.stream, replyReadBytes);
      }
    }
  }

  /** One wait for the current stream's StreamReply (see `reply`). */
  async #replyOnce(timeoutMs: number): Promise<StreamReply> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, rej) => {
      timer = setTimeout(
        () => rej(new TunnelError("timeout", `client did not answer in ${timeoutMs} ms`)),
        timeoutMs,
      );
    });
    try {
      const r = await Promise.race([expectMessage(this.reader, "streamReply"), timeout]);
      if (r.requestId !== this.requestId) {
        throw new TunnelError("protocol", "stream reply for another request");
      }
      if (!r.ok) throw new TunnelError(r.reason ?? "dial-failed", r.error ?? "client failed");
      return r;
    } catch (err) {
      this.#stream.reset();
      if (err instanceof TunnelError) throw err;
      throw new TunnelError(
        err instanceof ProtocolError ? "protocol" : "closed",
        errorMessage(err),
        { cause: err },
      );
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * The response byte stream after the reply (bytes read ahead included), both directions
   * counted. Call once, and not with {@linkcode readView}.
   */
  body(): Duplex {
    return new CountedDuplex(withPrefix(this.#stream, this.reader.takeBuffered()), this.#stats);
  }

  /**
   * The response bytes after the reply as views, without a copy or a wrapper's promise per
   * read (the standalone front's opaque copy: one response a read on a kept-alive stream):
   * the bytes read ahead with the reply first, then the mux stream's own receive queue. A view
   * is valid until {@linkcode releaseView}, which counts it as the host's bytes out; `null` at
   * the stream's end. Not with {@linkcode body}.
   */
  readView(): Promise<Uint8Array | null> {
    if (this.reader.buffered > 0) return Promise.resolve(this.reader.takeBuffered());
    return this.#stream.readView();
  }

  /** The last view of {@linkcode readView} (`n` bytes) was used: count it, free it. */
  releaseView(n: number): void {
    this.#stats.bytesOut += n;
    this.#stream.releaseView();
  }
}
