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
  ProtocolError,
  withPrefix,
} from "../net/mod.ts";
import { expectMessage, type StreamFailure, type StreamReply } from "./protocol.ts";
import type { HostStats } from "./stats.ts";

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
 * `stats.bytesOut` (public side → client is "in").
 */
class CountedDuplex implements Duplex {
  constructor(readonly inner: Duplex, readonly stats: HostStats) {}
  async read(p: Uint8Array): Promise<number | null> {
    const n = await this.inner.read(p);
    if (n !== null) this.stats.bytesOut += n;
    return n;
  }
  async write(p: Uint8Array): Promise<number> {
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

/** A tunnel stream the server opened; the client's StreamReply has not been read yet. */
export class TunnelStream {
  /** Reads the reply (bytes read ahead stay here until `body()`). */
  readonly reader: BufferedReader;
  /** The stream for request bytes: what is written here is counted as the host's bytes in. */
  readonly out: Duplex;
  readonly #stats: HostStats;
  #open = true;
  /**
   * Wrap a freshly opened stream; counts it as open in `stats` and `sentBytes` (the request
   * bytes that rode in its SYN frame) as bytes in.
   */
  constructor(
    readonly stream: Stream,
    readonly requestId: string,
    readonly host: string,
    stats: HostStats = noStats(),
    sentBytes = 0,
  ) {
    this.reader = new BufferedReader(stream, replyReadBytes);
    this.#stats = stats;
    this.out = new CountedDuplex(stream, stats);
    stats.openStreams++;
    stats.bytesIn += sentBytes;
  }

  /** Close the stream and stop counting it as open (idempotent). */
  release(): void {
    if (this.#open) this.#stats.openStreams--;
    this.#open = false;
    closeQuietly(this.stream);
  }

  /**
   * Wait for the client's StreamReply. Rejects with TunnelError: "timeout" if none in
   * `timeoutMs`, the client's failure reason when it could not serve the stream,
   * "protocol" when the reply names another request id, "closed" when the stream ended.
   */
  async reply(timeoutMs: number): Promise<StreamReply> {
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
      this.stream.reset();
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
   * counted. Call once.
   */
  body(): Duplex {
    return new CountedDuplex(withPrefix(this.stream, this.reader.takeBuffered()), this.#stats);
  }
}
