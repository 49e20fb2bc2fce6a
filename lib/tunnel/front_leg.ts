/**
 * The pieces of a standalone-front connection below its state machine (front_http.ts): one
 * tunnel stream it uses (`Leg`, with its own small state), the response copy buffer, and the
 * HTTP/1.1 rules it applies to each request (upgrade offer and acceptance, last request).
 * @module
 */

import type { HostRewrite } from "./rewrite.ts";
import { fieldNameIs, type HeaderFields, headerTokens, type RequestHead } from "../http/mod.ts";
import type { Deadline } from "../net/mod.ts";
import type { TunnelStream } from "./tunnel_stream.ts";

/** Bytes per response read while a response starts, and while the connection idles. */
const responseFirstReadBytes = 4 * 1024;
/** Bytes per response read once reads fill the first size (downloads dominate bulk traffic). */
const responseBulkReadBytes = 256 * 1024;
/** Free bulk response buffers kept for other connections (the rest go to the GC). */
const maxFreeBulkBuffers = 16;

/** How one tunnel stream of a public connection stands. */
export enum LegState {
  /** Carrying requests and responses. */
  Open,
  /** We closed its write side (another Host, or no more requests): its end is expected. */
  Finishing,
  /** We answer the public client ourselves (a malformed body): its pump stays quiet. */
  Abandoned,
  /** Handed to the idle pool (front_pool.ts) for a later public connection: its pump is done. */
  Pooled,
  /** A reused stream ended before its first response: the request goes on a fresh stream. */
  Stale,
}

/** How a reused stream's first request stands (its `Leg.first`). */
export type FirstAnswer = "started" | "stale" | "failed";

/** A request of a leg waiting for its response (the access log's line is written then). */
export interface PendingRequest {
  method: string;
  /** The request target without its query (a query may carry secrets). */
  path: string;
  /** The Host it was sent for (a wildcard leg serves many names). */
  host: string;
  /** `performance.now()` when its head was read. */
  startedMs: number;
  /** `leg.requestBytes` before its head: its size is the difference to the next one's. */
  inStart: number;
  /**
   * The front took `close` out of its Connection field (so the app keeps the stream for a
   * later public connection): its response goes out with `Connection: close`, and it is the
   * public connection's last.
   */
  closeAfter: boolean;
}

/** One tunnel stream of a public connection: one virtual host, requests in order. */
export class Leg {
  state: LegState = LegState.Open;
  /** Request bytes (heads and bodies) sent into the stream. */
  requestBytes = 0;
  /** Response bytes copied to the public client. */
  responseBytes = 0;
  /** When the stream was opened (`performance.now()`), for its duration. */
  readonly startedMs: number = performance.now();
  /** Copies the responses to the public client until the stream ends. */
  pump: Promise<void> = Promise.resolve();
  /** Access log: the requests sent on this stream whose responses are not through yet. */
  readonly pending: PendingRequest[] = [];
  /** Access log: responses completed so far (numbers the request ids). */
  answered = 0;
  /** Fingerprint of the client serving it (access log). */
  client = "";
  /** Header rewrites of its host and client (responses are then parsed on the way out). */
  rewrite: HostRewrite | undefined;
  /** Bytes of the last request head sent on it (where that request's bytes start). */
  lastHeadBytes = 0;
  /** Upgrade legs: true once the app switched protocols, false for any other answer. */
  readonly switched: Promise<boolean>;
  readonly #settle: (switched: boolean) => void;
  /**
   * Whether the stream may go to the idle pool when its public connection is done with it:
   * it carries HTTP/1.1 requests only, no upgrade, its responses are parsed (their ends are
   * known) and each left the app's connection open. Cleared for good by anything else.
   */
  poolable = false;
  /** Its public connection is done with it: the pump stops at the next response boundary. */
  handBack = false;
  /** The read the pump awaits while no request waits for a response (handed to the pool). */
  idleRead: Promise<Uint8Array | null> | undefined;
  /** The pool's read parked on a reused stream: the pump's first read. */
  firstRead: Promise<Uint8Array | null> | undefined;
  /** Reused streams: how their first request went (the front waits for it). */
  first: Promise<FirstAnswer> | undefined;
  #first: ((a: FirstAnswer) => void) | undefined;
  /** The pump's 504 watch (deleted when the stream is pooled). */
  watch: Deadline | undefined;
  /** The 504 watch fired: the front answered 504 itself (the leg is then Abandoned). */
  timedOut = false;
  /** Its idle pool's key within its client (host and local port). */
  poolKey = "";

  constructor(
    readonly host: string,
    readonly ts: TunnelStream,
    /** The protocols the client asked to upgrade to (lower case); undefined: no upgrade. */
    readonly upgrade: string[] | undefined,
    /**
     * Whether its responses are parsed (access log, response rewrites, or it may be pooled);
     * cleared when a long kept-alive run gives up pooling (see front_http.ts).
     */
    public framed = false,
    /** Taken from the idle pool (see `first`). */
    readonly reused = false,
  ) {
    // Not an arrow field: with the parameter properties above, TS emits fields as
    // assignments in the constructor, and V8 makes a function literal assigned to a property
    // in the old generation, where it kept this leg (and its stream) through every scavenge
    // until the next full GC (bench/RESULTS.md, mgc's section).
    const switched = Promise.withResolvers<boolean>();
    this.switched = switched.promise;
    this.#settle = switched.resolve;
    if (reused) this.first = new Promise((r) => this.#first = r);
  }

  /** Decide `switched` (the first call counts). */
  settle(switched: boolean): void {
    this.#settle(switched);
  }

  /** Whether `first` of a reused stream is still undecided. */
  get firstPending(): boolean {
    return this.#first !== undefined;
  }

  /** Decide `first` of a reused stream (the first call counts). */
  settleFirst(answer: FirstAnswer): void {
    this.#first?.(answer);
    this.#first = undefined;
  }
}

const freeBulkBuffers: Uint8Array[] = [];

/**
 * The response copy buffer: small while a response starts (and while the connection waits
 * for the next one), a bulk buffer borrowed while reads fill the small one.
 */
export class ResponseBuffer {
  #small: Uint8Array | undefined;
  #bulk: Uint8Array | undefined;

  /** The buffer for the next read. */
  get(): Uint8Array {
    return this.#bulk ?? (this.#small ??= new Uint8Array(responseFirstReadBytes));
  }

  /** After `n` bytes were read into `get()` and written out: grow or shrink. */
  adapt(n: number): void {
    if (!this.#bulk && n === responseFirstReadBytes) {
      this.#bulk = freeBulkBuffers.pop() ?? new Uint8Array(responseBulkReadBytes);
    } else if (this.#bulk && n < responseFirstReadBytes) {
      this.release();
    }
  }

  /** Give the bulk buffer back. */
  release(): void {
    if (this.#bulk && freeBulkBuffers.length < maxFreeBulkBuffers) {
      freeBulkBuffers.push(this.#bulk);
    }
    this.#bulk = undefined;
  }
}

/** The protocols a request asks to upgrade to (lower case), or undefined for none. */
export function upgradeOffer(head: RequestHead, connection: string[]): string[] | undefined {
  if (!connection.includes("upgrade")) return undefined;
  const offered = headerTokens(head.headers, "upgrade");
  return offered.length > 0 ? offered : undefined;
}

/** Whether a 101's Upgrade names only protocols the client offered (versions may be dropped). */
export function upgradeAccepted(offered: string[], chosen: string[]): boolean {
  const name = (t: string) => t.split("/")[0];
  return chosen.length > 0 &&
    chosen.every((c) => offered.some((o) => o === c || name(o) === c || o === name(c)));
}

/**
 * Methods whose request may go on a reused stream: safe ones (RFC 9110 §9.2.1), so that the
 * one retry on a fresh stream when a reused one turns out closed (§9.2.2 allows it for
 * idempotent requests) can never repeat an action. Others always get a fresh stream.
 */
const reusableMethods = new Set(["GET", "HEAD", "OPTIONS"]);

/** Whether a request (without a body) may ride a stream taken from the idle pool. */
export function mayReuse(method: string): boolean {
  return reusableMethods.has(method);
}

/**
 * `headers` without the `close` connection option (hop-by-hop: the public client's wish to
 * end its own connection, not the app's); a Connection field left empty goes.
 */
export function withoutCloseOption(headers: HeaderFields): HeaderFields {
  const out: HeaderFields = [];
  for (const [k, v] of headers) {
    if (!fieldNameIs(k, "connection")) {
      out.push([k, v]);
      continue;
    }
    const kept = v.split(",").map((t) => t.trim()).filter((t) =>
      t !== "" && t.toLowerCase() !== "close"
    );
    if (kept.length > 0) out.push([k, kept.join(", ")]);
  }
  return out;
}

/** Whether no request may follow this one on its connection (RFC 9112 §9.3, §9.6). */
export function isLastRequest(head: RequestHead, connection: string[]): boolean {
  if (connection.includes("close")) return true;
  return head.version === "HTTP/1.0" && !connection.includes("keep-alive");
}
