/**
 * QUIC as a carrier (Deno's `Deno.QuicEndpoint` / `Deno.connectQuic`, unstable in Deno 2.9.6:
 * the process must run with `--unstable-net`). One QUIC connection carries many independent
 * bidirectional streams, each its own flow control: a slow reader on one stream never stalls
 * another, which a single TCP connection under a mux cannot promise.
 *
 * - {@linkcode QuicStreamConn}: one bidirectional QUIC stream as the warren Duplex (`read`,
 *   `write`, `closeWrite` = the stream's FIN, half-close preserved, `close`).
 * - {@linkcode listenQuic} / {@linkcode connectQuic}: a server endpoint with a certificate
 *   (QUIC always runs TLS 1.3) and a client verifying it (extra CA, server name).
 * - {@linkcode requireQuic}: a clear {@linkcode QuicUnavailableError} when the runtime lacks
 *   QUIC (started without `--unstable-net`), instead of a TypeError deep in a dial.
 *
 * Deno 2.9.6's QUIC client cannot present a client certificate, so the far end
 * authenticates the dialler inside the connection (the seaprox link token).
 * @module
 */

import type { HostPort } from "../net/addr.ts";
import { errorMessage, NetError } from "../net/errors.ts";
import type { TlsClientConfig, TlsServerConfig } from "./tls.ts";

/** QUIC is not available in this runtime (not started with `--unstable-net`). */
export class QuicUnavailableError extends Error {
  override name = "QuicUnavailableError";
  constructor() {
    super("quic:// needs Deno's QUIC: run with --unstable-net (deno run --unstable-net \u2026)");
  }
}

/** Whether this runtime has QUIC (Deno started with `--unstable-net`). */
export function quicAvailable(): boolean {
  return typeof Deno.QuicEndpoint === "function" && typeof Deno.connectQuic === "function";
}

/** Throw {@linkcode QuicUnavailableError} unless QUIC is available: call before binding. */
export function requireQuic(): void {
  if (!quicAvailable()) throw new QuicUnavailableError();
}

/** Transport settings both ends of a warren QUIC connection use. */
export interface QuicOptions {
  /** ALPN protocol name (both ends must agree). */
  alpn: string;
  /** Streams the peer may have open at once on one connection. @default 1024 */
  maxStreams?: number;
  /** Close the connection after this long without packets. @default 30000 */
  maxIdleTimeoutMs?: number;
  /** Send a keep-alive after this long without packets. @default 10000 */
  keepAliveIntervalMs?: number;
}

function transportOptions(o: QuicOptions): Deno.QuicTransportOptions {
  return {
    maxConcurrentBidirectionalStreams: o.maxStreams ?? 1024,
    maxConcurrentUnidirectionalStreams: 0,
    maxIdleTimeout: o.maxIdleTimeoutMs ?? 30_000,
    keepAliveInterval: o.keepAliveIntervalMs ?? 10_000,
  };
}

/**
 * A QUIC address as a `Deno.NetAddr` with transport "udp": Deno 2.9.6's endpoint and peer
 * addresses carry no `transport`, which formatAddr and the logs need.
 */
export function quicAddr(a: { hostname: string; port: number }): Deno.NetAddr {
  return { transport: "udp", hostname: a.hostname, port: a.port };
}

/** A bound QUIC server: its endpoint (address) and listener of incoming connections. */
export interface QuicServerEndpoint {
  endpoint: Deno.QuicEndpoint;
  listener: Deno.QuicListener;
  /** The bound UDP address. */
  addr: Deno.NetAddr;
  /** Stop accepting and close every connection. */
  close(): void;
}

/**
 * Bind a QUIC server on `addr` (UDP) with `tls`'s certificate. Throws
 * {@linkcode QuicUnavailableError} without `--unstable-net`, `Deno.errors.AddrInUse` on a
 * busy port.
 */
export function listenQuic(
  addr: HostPort,
  tls: TlsServerConfig,
  opts: QuicOptions,
): QuicServerEndpoint {
  requireQuic();
  const endpoint = new Deno.QuicEndpoint({ hostname: addr.host, port: addr.port });
  let listener: Deno.QuicListener;
  try {
    listener = endpoint.listen({
      ...transportOptions(opts),
      alpnProtocols: [opts.alpn],
      cert: tls.cert,
      key: tls.key,
    });
  } catch (err) {
    endpoint.close();
    throw err;
  }
  const bound = quicAddr(endpoint.addr);
  return {
    endpoint,
    listener,
    addr: bound,
    close: () => {
      listener.stop();
      endpoint.close({ closeCode: 0, reason: "shutdown" });
    },
  };
}

/**
 * Connect to a QUIC server, verifying its certificate against the system roots plus
 * `tls.ca` (name: `tls.serverName` or the host). Failures are `NetError`s: "timeout" when
 * `signal` (a deadline) fires first, else "other" with the TLS/QUIC reason in the message.
 */
export async function connectQuic(
  addr: HostPort,
  tls: TlsClientConfig | undefined,
  opts: QuicOptions,
  signal: AbortSignal,
): Promise<Deno.QuicConn> {
  requireQuic();
  const dialing: Promise<Deno.QuicConn> = Deno.connectQuic<false>({
    ...transportOptions(opts),
    hostname: addr.host,
    port: addr.port,
    serverName: tls?.serverName,
    caCerts: tls?.ca ? [tls.ca] : undefined,
    alpnProtocols: [opts.alpn],
    zeroRtt: false,
  });
  try {
    return await untilAborted(dialing, signal, (c) => c.close());
  } catch (err) {
    if (signal.aborted) {
      throw new NetError("timeout", `quic connect to ${addr.host}:${addr.port} timed out`, {
        cause: err,
      });
    }
    throw new NetError("other", `quic connect: ${errorMessage(err)}`, { cause: err });
  }
}

/**
 * Open a bidirectional stream on `conn`, waiting for stream credit (the peer's limit of open
 * streams) until `signal` fires; then rejects with the signal's reason.
 */
export async function openQuicStream(
  conn: Deno.QuicConn,
  signal: AbortSignal,
): Promise<QuicStreamConn> {
  const opening = conn.createBidirectionalStream({ waitUntilAvailable: true });
  return new QuicStreamConn(
    await untilAborted(opening, signal, (s) => new QuicStreamConn(s).close()),
  );
}

/**
 * `p`, or a rejection with `signal`'s reason when it fires first; what `p` yields after that
 * is handed to `discard` (a connection or stream nobody will use).
 */
async function untilAborted<T>(
  p: Promise<T>,
  signal: AbortSignal,
  discard: (v: T) => void,
): Promise<T> {
  let onAbort!: () => void;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(signal.reason);
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
  });
  try {
    return await Promise.race([p, aborted]);
  } catch (err) {
    if (signal.aborted) p.then(discard, () => {/* failed anyway: nothing to discard */});
    throw err;
  } finally {
    signal.removeEventListener("abort", onAbort);
    aborted.catch(() => {/* only raced above */});
  }
}

/**
 * One bidirectional QUIC stream as a Duplex. `read` resolves null at the peer's FIN,
 * `closeWrite` sends ours (reads go on), `close` releases both halves: a send side not yet
 * finished is reset, an unread receive side is stopped (STOP_SENDING).
 */
export class QuicStreamConn {
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #pending: Uint8Array | null = null;
  #eof = false;
  #writeClosed = false;
  #closed = false;

  /** Wrap `stream` (its readable and writable get locked to this object). */
  constructor(readonly stream: Deno.QuicBidirectionalStream) {
    this.#reader = stream.readable.getReader();
    this.#writer = stream.writable.getWriter();
  }

  /** Read into `p`: bytes read, or null at the peer's FIN. */
  async read(p: Uint8Array): Promise<number | null> {
    if (this.#closed) throw new Deno.errors.BadResource("quic stream closed");
    let chunk = this.#pending;
    this.#pending = null;
    while (chunk === null || chunk.length === 0) {
      if (this.#eof) return null;
      const r = await this.#reader.read();
      if (r.done) {
        this.#eof = true;
        return null;
      }
      chunk = r.value;
    }
    const n = Math.min(p.length, chunk.length);
    p.set(chunk.subarray(0, n));
    if (n < chunk.length) this.#pending = chunk.subarray(n);
    return n;
  }

  /** Write all of `p` (resolves once the stream took it; `p` may be reused then). */
  async write(p: Uint8Array): Promise<number> {
    if (this.#writeClosed) throw new Deno.errors.BrokenPipe("quic stream write side closed");
    await this.#writer.write(p);
    return p.length;
  }

  /** Send our FIN; reading goes on. */
  async closeWrite(): Promise<void> {
    if (this.#writeClosed) return;
    this.#writeClosed = true;
    await this.#writer.close();
  }

  /** Release both halves (safe twice). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (!this.#eof) {
      this.#reader.cancel().catch(() => {/* stream already gone: nothing to stop */});
    }
    if (!this.#writeClosed) {
      this.#writeClosed = true;
      this.#writer.abort().catch(() => {/* stream already gone: nothing to reset */});
    }
  }
}
