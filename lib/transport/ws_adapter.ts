/**
 * A Duplex over a standard `WebSocket` object (what `Deno.upgradeWebSocket` returns inside
 * a fetch handler, or `new WebSocket(url)` on a client): binary messages in, binary
 * messages out, as one byte stream. Lets the embeddable Hono front carry a mux session.
 * @module
 */

import type { Duplex } from "../net/mod.ts";

/** Pause writers while this many bytes wait in the socket's send buffer. */
const sendHighWaterBytes = 4 * 1024 * 1024;
/** How often a paused writer re-checks `bufferedAmount`. */
const drainPollMs = 2;

/**
 * Wraps an open (or opening) WebSocket. Reads return message bytes in order and `null`
 * after the socket closes; writes send one binary message each and wait while the send
 * buffer is above a high-water mark. Text messages are read as their UTF-8 bytes.
 */
export class WebSocketDuplex implements Duplex {
  readonly #ws: WebSocket;
  #queue: Uint8Array[] = [];
  #head = 0;
  #closed = false;
  #error: Error | undefined;
  #waiter: (() => void) | undefined;
  /** Resolves when the socket is open; rejects if it closes first. */
  readonly opened: Promise<void>;

  /** Adapt `ws` (binary type set to arraybuffer). */
  constructor(ws: WebSocket) {
    this.#ws = ws;
    ws.binaryType = "arraybuffer";
    this.opened = ws.readyState === WebSocket.OPEN ? Promise.resolve() : new Promise((res, rej) => {
      ws.addEventListener("open", () => res(), { once: true });
      ws.addEventListener("close", () => rej(new Deno.errors.ConnectionReset("websocket closed")), {
        once: true,
      });
    });
    // A rejection nobody awaits must not crash the process.
    this.opened.catch(() => {});
    ws.addEventListener("message", (e: MessageEvent) => {
      const d = e.data;
      const chunk = d instanceof ArrayBuffer
        ? new Uint8Array(d)
        : typeof d === "string"
        ? new TextEncoder().encode(d)
        : new Uint8Array(0);
      if (chunk.length > 0) this.#queue.push(chunk);
      this.#wake();
    });
    ws.addEventListener("close", () => {
      this.#closed = true;
      this.#wake();
    });
    ws.addEventListener("error", (e) => {
      this.#error = new Deno.errors.ConnectionReset(
        e instanceof ErrorEvent ? e.message : "websocket error",
      );
      this.#wake();
    });
  }

  #wake(): void {
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.();
  }

  /** Bytes of the next queued messages; `null` once the socket closed. */
  async read(p: Uint8Array): Promise<number | null> {
    while (this.#queue.length === 0) {
      if (this.#closed) return null;
      if (this.#error) throw this.#error;
      await new Promise<void>((r) => this.#waiter = r);
    }
    const first = this.#queue[0];
    const n = Math.min(p.length, first.length - this.#head);
    p.set(first.subarray(this.#head, this.#head + n));
    this.#head += n;
    if (this.#head === first.length) {
      this.#queue.shift();
      this.#head = 0;
    }
    return n;
  }

  /** Send `p` as one binary message, pausing while the send buffer is full. */
  async write(p: Uint8Array): Promise<number> {
    if (this.#ws.readyState === WebSocket.CONNECTING) await this.opened;
    if (this.#ws.readyState !== WebSocket.OPEN) {
      throw new Deno.errors.BrokenPipe("websocket is not open");
    }
    // No copy of our own: send() takes a copy of the bytes before it returns (Deno's op copies
    // them synchronously), so the caller may reuse `p` at once.
    this.#ws.send(p);
    while (this.#ws.bufferedAmount > sendHighWaterBytes && this.#ws.readyState === WebSocket.OPEN) {
      await new Promise((r) => setTimeout(r, drainPollMs));
    }
    return p.length;
  }

  /** WebSocket has no half-close: closing the write side closes the socket. */
  closeWrite(): Promise<void> {
    this.close();
    return Promise.resolve();
  }

  /** Close the socket (code 1000). */
  close(): void {
    if (this.#ws.readyState === WebSocket.OPEN || this.#ws.readyState === WebSocket.CONNECTING) {
      try {
        this.#ws.close(1000);
      } catch {
        // Already closing.
      }
    }
    this.#closed = true;
    this.#wake();
  }
}
