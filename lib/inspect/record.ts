/**
 * What the inspector keeps of one HTTP exchange that went through the tunnel, and the ring
 * that bounds how many it keeps: the newest `maxRequests`, each body cut at `bodyBytes`.
 * @module
 */

import type { HeaderFields } from "../http/mod.ts";

/** Default number of exchanges kept (the oldest is dropped when a new one arrives). */
export const defaultInspectMaxRequests = 100;
/** Default bytes of each request and response body kept (the rest is only counted). */
export const defaultInspectBodyBytes = 16 * 1024;

/** A body as captured: its first bytes up to the cap, and how many passed in all. */
export interface CapturedBody {
  /** Body bytes relayed (chunked bodies: the wire bytes, framing included). */
  bytes: number;
  /** The first bytes as relayed, at most the cap. */
  kept: Uint8Array;
  /** Whether more passed than `kept` holds. */
  truncated: boolean;
}

/** Where an exchange stands. */
export type ExchangeState = "pending" | "done" | "aborted";

/** One request and its response, as they passed between the tunnel and the local app. */
export interface Exchange {
  /** Increasing per inspector; the newest has the highest. */
  id: number;
  /** The exchange this one replayed, if it is a replay. */
  replayOf?: number;
  /** The local app's address it went to (`host:port`). */
  dest: string;
  /** Wall-clock start (ms since the epoch). */
  startedAt: number;
  /** Monotonic start, for the duration. */
  startedMs: number;
  method: string;
  /** The request target as sent (`/path?query`). */
  path: string;
  requestHeaders: HeaderFields;
  requestBody: CapturedBody;
  status?: number;
  reason?: string;
  responseHeaders?: HeaderFields;
  responseBody: CapturedBody;
  /** From the request to the end of the response (ms). */
  durationMs?: number;
  state: ExchangeState;
}

/** A new empty body capture. */
export function emptyBody(): CapturedBody {
  return { bytes: 0, kept: new Uint8Array(0), truncated: false };
}

/**
 * The ring of recent exchanges. `version` grows on every change so a poller can tell
 * whether anything moved.
 */
export class ExchangeRing {
  readonly #max: number;
  readonly #items: Exchange[] = [];
  #nextId = 1;
  /** Grows on every added or updated exchange. */
  version = 0;

  /** A ring of at most `maxRequests` exchanges. */
  constructor(readonly maxRequests: number = defaultInspectMaxRequests) {
    if (!(maxRequests >= 1)) throw new RangeError("maxRequests must be at least 1");
    this.#max = maxRequests;
  }

  /** Add `x` (given its id here), dropping the oldest beyond the bound. */
  add(x: Omit<Exchange, "id">): Exchange {
    const e = { ...x, id: this.#nextId++ } as Exchange;
    this.#items.push(e);
    if (this.#items.length > this.#max) this.#items.shift();
    this.version++;
    return e;
  }

  /** Note that an exchange changed. */
  touch(): void {
    this.version++;
  }

  /** The exchange `id` if still kept. */
  get(id: number): Exchange | undefined {
    return this.#items.find((e) => e.id === id);
  }

  /** Kept exchanges, newest first. */
  list(): Exchange[] {
    return [...this.#items].reverse();
  }
}
