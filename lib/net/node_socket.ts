/**
 * A `node:net` / `node:tls` socket as a `Deno.Conn`-shaped Duplex.
 *
 * Why: two things Deno's own API cannot do under Deno 2.9.6 -- bind a local address when
 * connecting, and (on a TLS server) request and verify client certificates -- `node:net` and
 * `node:tls` can. Wrapping their sockets here lets every caller keep the one Duplex shape
 * (`read`/`write`/`closeWrite`/`close`, plus `readable`/`writable` and addresses).
 * @module
 */

// Types only: node:net itself is loaded by connectNodeSocket, the first time a caller needs a
// bound local address (a service that never does carries no node layer: ~2 MB of heap).
import type { Socket } from "node:net";
import { joinHostPort } from "./addr.ts";
import { writeAll } from "./duplex.ts";
import { classifyError, NetError } from "./errors.ts";

/** Bytes a socket may buffer unread before it is paused (resumed below half of it). */
export const nodeReadHighWaterBytes = 1024 * 1024;
/**
 * Unread bytes at which a socket that cannot be paused is cut (see `pausable`): far above
 * what the windowed warren link protocols (mux, fusion) ever leave in flight.
 */
export const nodeUnpausedCapBytes = 64 * 1024 * 1024;
/** Chunk size of the `readable` stream view. */
const streamChunkBytes = 64 * 1024;

/** The read switch of a node stream handle (libuv-style `readStop`/`readStart`). */
interface ReadSwitch {
  readStop(): unknown;
  readStart(): unknown;
}

/**
 * The TCP handle under a `node:tls` socket (node's `_parent._handle`), when this runtime has
 * one. Stopping reads there pauses the TCP socket itself, which (unlike `pause()` on the TLS
 * socket under Deno 2.9.6) still delivers the peer's FIN after `readStart()` (checked), and
 * gives real TCP backpressure: the sender stops at the socket buffers.
 */
function tcpUnderTls(sock: Socket): ReadSwitch | undefined {
  const h = (sock as Socket & { _parent?: { _handle?: Partial<ReadSwitch> | null } })._parent
    ?._handle;
  return typeof h?.readStop === "function" && typeof h?.readStart === "function"
    ? h as ReadSwitch
    : undefined;
}

function netAddr(hostname: string | undefined, port: number | undefined): Deno.NetAddr {
  return { transport: "tcp", hostname: hostname ?? "0.0.0.0", port: port ?? 0 };
}

/**
 * A connected node socket (plain or TLS) behind the Deno.Conn surface: pull-style reads over
 * the socket's events, writes that resolve once the socket took the bytes, half-close with
 * `closeWrite()` (create sockets with `allowHalfOpen: true` so the peer's FIN does not end
 * our side too).
 */
export class NodeSocketConn implements Deno.Conn {
  #sock: Socket;
  #chunks: Uint8Array[] = [];
  #queued = 0;
  #eof = false;
  /** Whether we paused the socket (so only we resume it). */
  #paused = false;
  /** node:tls: the TCP handle paused instead of the TLS socket (see `tcpUnderTls`). */
  #tcp: ReadSwitch | undefined;
  #error: Error | null = null;
  #waiter: (() => void) | null = null;
  #readable: ReadableStream<Uint8Array<ArrayBuffer>> | undefined;
  #writable: WritableStream<Uint8Array<ArrayBufferLike>> | undefined;
  /** Address of our end. */
  readonly localAddr: Deno.NetAddr;
  /** Address of the peer. */
  readonly remoteAddr: Deno.NetAddr;

  /**
   * Wrap a connected socket; reads pause it beyond `nodeReadHighWaterBytes` unread.
   *
   * `pausable: false` is for `node:tls` sockets: under Deno 2.9.6 a TLSSocket that was paused
   * and resumed never emits "end" (checked: the peer's FIN is lost and a reader hangs), so
   * those are paused at the TCP handle under them instead (see `tcpUnderTls`); only where no
   * such handle exists is the socket never paused, and a peer that overruns
   * `nodeUnpausedCapBytes` is cut.
   */
  constructor(sock: Socket, opts: { pausable?: boolean } = {}) {
    const pausable = opts.pausable ?? true;
    this.#sock = sock;
    this.#tcp = pausable ? undefined : tcpUnderTls(sock);
    this.localAddr = netAddr(sock.localAddress, sock.localPort);
    this.remoteAddr = netAddr(sock.remoteAddress, sock.remotePort);
    sock.setNoDelay(true);
    sock.on("data", (b: Uint8Array) => {
      this.#chunks.push(b);
      this.#queued += b.length;
      if (this.#tcp) {
        if (this.#queued > nodeReadHighWaterBytes && !this.#paused) {
          this.#paused = true;
          this.#switchTcp("readStop");
        }
      } else if (!pausable) {
        if (this.#queued > nodeUnpausedCapBytes) {
          this.#error = new Deno.errors.InvalidData(
            `more than ${nodeUnpausedCapBytes} bytes unread: reader too slow or peer flooding`,
          );
          sock.destroy();
        }
      } else if (this.#queued > nodeReadHighWaterBytes && !this.#paused) {
        this.#paused = true;
        sock.pause();
      }
      this.#wake();
    });
    sock.on("end", () => {
      this.#eof = true;
      this.#wake();
    });
    sock.on("error", (e: Error) => {
      this.#error = e;
      this.#wake();
    });
    sock.on("close", () => {
      this.#eof = true;
      this.#wake();
    });
  }

  /** The wrapped socket (TLS details such as the peer certificate). */
  get socket(): Socket {
    return this.#sock;
  }

  #switchTcp(op: "readStop" | "readStart"): void {
    try {
      this.#tcp![op]();
    } catch {
      // The socket is already closed: nothing left to pause or resume.
    }
  }

  #wake(): void {
    const w = this.#waiter;
    this.#waiter = null;
    w?.();
  }

  /** Read what arrived; null at the peer's FIN. */
  async read(p: Uint8Array): Promise<number | null> {
    while (true) {
      if (this.#chunks.length > 0) {
        const c = this.#chunks[0];
        const n = Math.min(p.length, c.length);
        p.set(c.subarray(0, n));
        if (n === c.length) this.#chunks.shift();
        else this.#chunks[0] = c.subarray(n);
        this.#queued -= n;
        if (this.#paused && this.#queued < nodeReadHighWaterBytes / 2) {
          this.#paused = false;
          if (this.#tcp) this.#switchTcp("readStart");
          else this.#sock.resume();
        }
        return n;
      }
      if (this.#error) throw this.#error;
      if (this.#eof) return null;
      await new Promise<void>((r) => this.#waiter = r);
    }
  }

  /** Write `p`; resolves when the socket took it (the caller may reuse `p` then). */
  write(p: Uint8Array): Promise<number> {
    if (this.#sock.destroyed || this.#sock.writableEnded) {
      return Promise.reject(new Deno.errors.BrokenPipe("socket closed"));
    }
    return new Promise((resolve, reject) => {
      this.#sock.write(p, (err?: Error | null) => err ? reject(err) : resolve(p.length));
    });
  }

  /** Send our FIN (TLS: close_notify first); reading goes on. */
  closeWrite(): Promise<void> {
    if (this.#sock.destroyed || this.#sock.writableEnded) return Promise.resolve();
    return new Promise((resolve) => this.#sock.end(() => resolve()));
  }

  /** Destroy the socket; safe to call twice. */
  close(): void {
    this.#sock.destroy();
    this.#eof = true;
    this.#wake();
  }

  /** Abort with a TCP RST (a TLS socket, which has no TCP handle of its own, is destroyed). */
  reset(): void {
    try {
      this.#sock.resetAndDestroy();
    } catch {
      // ERR_INVALID_HANDLE_TYPE (TLS over a wrapped socket) or already destroyed.
      this.#sock.destroy();
    }
    this.#eof = true;
    this.#wake();
  }

  /** Keep the event loop alive while the socket is open (the default). */
  ref(): void {
    this.#sock.ref();
  }

  /** Let the event loop end while the socket is open. */
  unref(): void {
    this.#sock.unref();
  }

  /** Same as `close()`. */
  [Symbol.dispose](): void {
    this.close();
  }

  /** A stream view of the read side (reads 64 KiB at a time; cancel closes the socket). */
  get readable(): ReadableStream<Uint8Array<ArrayBuffer>> {
    this.#readable ??= new ReadableStream<Uint8Array<ArrayBuffer>>({
      pull: async (c) => {
        const buf = new Uint8Array(streamChunkBytes);
        const n = await this.read(buf);
        if (n === null) c.close();
        else c.enqueue(buf.subarray(0, n));
      },
      cancel: () => this.close(),
    });
    return this.#readable;
  }

  /** A stream view of the write side (close = half-close, abort = close). */
  get writable(): WritableStream<Uint8Array<ArrayBufferLike>> {
    this.#writable ??= new WritableStream<Uint8Array<ArrayBufferLike>>({
      write: (chunk) => writeAll(this, chunk),
      close: () => this.closeWrite(),
      abort: () => this.close(),
    });
    return this.#writable;
  }
}

/** Options of {@linkcode connectNodeSocket} and {@linkcode dialFrom}. */
export interface DialFromOptions {
  /** Give up after this long. @default 10000 */
  timeoutMs?: number;
  /** Abort the connect; it rejects with reason "aborted". */
  signal?: AbortSignal;
}

/**
 * TCP connect from `localAddress` (which selects the interface or link; `undefined`: the
 * system picks) with `node:net`, since `Deno.connect` cannot bind a local address. Resolves
 * with the connected, half-open capable socket; rejects with a {@linkcode NetError} typed
 * like `dial()`'s. TLS callers wrap the socket with `node:tls`; plain callers use
 * {@linkcode dialFrom}.
 */
export async function connectNodeSocket(
  host: string,
  port: number,
  localAddress: string | undefined,
  opts: DialFromOptions = {},
): Promise<Socket> {
  const target = `${localAddress ? localAddress + ">" : ""}${joinHostPort(host, port)}`;
  const { connect } = await import("node:net");
  return await new Promise((resolve, reject) => {
    const sock = connect({ host, port, localAddress, allowHalfOpen: true });
    const done = (err: NetError | null) => {
      clearTimeout(timer);
      opts.signal?.removeEventListener("abort", onAbort);
      sock.off("error", onError);
      sock.off("connect", onConnect);
      if (err) {
        sock.destroy();
        reject(err);
      } else {
        resolve(sock);
      }
    };
    const onError = (e: Error) =>
      done(new NetError(classifyError(e), `connect ${target}: ${e.message}`, { cause: e }));
    const onConnect = () => done(null);
    const onAbort = () => done(new NetError("aborted", `connect ${target} aborted`));
    const timeoutMs = opts.timeoutMs ?? 10_000;
    const timer = setTimeout(
      () => done(new NetError("timeout", `connect ${target} timed out after ${timeoutMs} ms`)),
      timeoutMs,
    );
    sock.once("error", onError);
    sock.once("connect", onConnect);
    if (opts.signal?.aborted) onAbort();
    else opts.signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** `dial()` from a given local address: a plain TCP connection as a Deno.Conn-shaped Duplex. */
export async function dialFrom(
  host: string,
  port: number,
  localAddress: string,
  opts: DialFromOptions = {},
): Promise<NodeSocketConn> {
  return new NodeSocketConn(await connectNodeSocket(host, port, localAddress, opts));
}
