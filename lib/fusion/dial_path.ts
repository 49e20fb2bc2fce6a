/**
 * Dialling one path, optionally from a given local address.
 *
 * `Deno.connect` cannot bind a local address; `node:net`'s `connect({ localAddress })` can
 * (checked under Deno 2.9.6), so a path with a local address uses a node socket wrapped as
 * a Duplex, and one without uses lib/net `dial`.
 * @module
 */

import { connect, type Socket } from "node:net";
import { dial } from "../net/dial.ts";
import type { Duplex } from "../net/duplex.ts";
import { NetError, type NetFailureReason } from "../net/errors.ts";
import { joinHostPort } from "../net/addr.ts";
import { connectTls, type TlsClientConfig } from "../net/tls.ts";

/** Where one path goes, and from where. */
export interface PathSpec {
  /** Server host (name or IP). */
  host: string;
  /** Server port. */
  port: number;
  /** Local address to bind (selects the interface/link). */
  localAddress?: string;
}

/** Render a path spec as `local>host:port` or `host:port`. */
export function formatPathSpec(p: PathSpec): string {
  const remote = joinHostPort(p.host, p.port);
  return p.localAddress ? `${p.localAddress}>${remote}` : remote;
}

/** Bytes a node socket may buffer unread before it is paused. */
const nodeReadHighWaterBytes = 1024 * 1024;

/** A node:net socket as a Duplex (pull-style reads over its events). */
export class NodeSocketDuplex implements Duplex {
  #sock: Socket;
  #chunks: Uint8Array[] = [];
  #queued = 0;
  #eof = false;
  #error: Error | null = null;
  #waiter: (() => void) | null = null;

  /** Wrap a connected socket; reads pause it beyond 1 MiB unread. */
  constructor(sock: Socket) {
    this.#sock = sock;
    sock.setNoDelay(true);
    sock.on("data", (b: Uint8Array) => {
      this.#chunks.push(b);
      this.#queued += b.length;
      if (this.#queued > nodeReadHighWaterBytes) sock.pause();
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
        if (this.#queued < nodeReadHighWaterBytes / 2 && this.#sock.isPaused()) this.#sock.resume();
        return n;
      }
      if (this.#error) throw this.#error;
      if (this.#eof) return null;
      await new Promise<void>((r) => this.#waiter = r);
    }
  }

  /** Write `p`; resolves when the socket took it (its buffer may be reused then). */
  write(p: Uint8Array): Promise<number> {
    if (this.#sock.destroyed || this.#sock.writableEnded) {
      return Promise.reject(new Deno.errors.BrokenPipe("socket closed"));
    }
    return new Promise((resolve, reject) => {
      this.#sock.write(p, (err?: Error | null) => err ? reject(err) : resolve(p.length));
    });
  }

  /** Send our FIN; reading goes on. */
  closeWrite(): Promise<void> {
    return new Promise((resolve) => this.#sock.end(() => resolve()));
  }

  /** Destroy the socket. */
  close(): void {
    this.#sock.destroy();
    this.#eof = true;
    this.#wake();
  }
}

function nodeReason(code: string | undefined): NetFailureReason {
  switch (code) {
    case "ECONNREFUSED":
      return "refused";
    case "EHOSTUNREACH":
      return "host-unreachable";
    case "ENETUNREACH":
      return "network-unreachable";
    case "ETIMEDOUT":
      return "timeout";
    default:
      return "other";
  }
}

/**
 * Connect one path; rejects with a NetError (or a TlsError when `opts.tls` is set and the
 * handshake fails: wrong CA, host name, no client certificate …).
 */
export function dialPath(
  spec: PathSpec,
  opts: { timeoutMs?: number; signal?: AbortSignal; tls?: TlsClientConfig } = {},
): Promise<Duplex> {
  const timeoutMs = opts.timeoutMs ?? 5_000;
  if (opts.tls) {
    return connectTls(spec.host, spec.port, opts.tls, {
      timeoutMs,
      signal: opts.signal,
      localAddress: spec.localAddress,
    });
  }
  if (!spec.localAddress) return dial(spec.host, spec.port, { timeoutMs, signal: opts.signal });
  return new Promise((resolve, reject) => {
    const sock = connect({ host: spec.host, port: spec.port, localAddress: spec.localAddress });
    const done = (err: NetError | null) => {
      clearTimeout(timer);
      opts.signal?.removeEventListener("abort", onAbort);
      sock.off("error", onError);
      sock.off("connect", onConnect);
      if (err) {
        sock.destroy();
        reject(err);
      } else {
        resolve(new NodeSocketDuplex(sock));
      }
    };
    const onError = (e: Error & { code?: string }) =>
      done(new NetError(nodeReason(e.code), `dial ${formatPathSpec(spec)}: ${e.message}`));
    const onConnect = () => done(null);
    const onAbort = () => done(new NetError("aborted", "dial aborted"));
    const timer = setTimeout(
      () => done(new NetError("timeout", `dial ${formatPathSpec(spec)} timed out`)),
      timeoutMs,
    );
    sock.once("error", onError);
    sock.once("connect", onConnect);
    if (opts.signal?.aborted) onAbort();
    else opts.signal?.addEventListener("abort", onAbort, { once: true });
  });
}
