/**
 * The dials of a link client (`LinkClient`'s mux session, `QuicLinkClient`'s QUIC connection)
 * that wait for its link: each until the link is up, its connect failed, the dial's own signal
 * fired or `waitMs` passed.
 * @module
 */

import { errorMessage, NetError } from "../net/mod.ts";

/** The dials waiting for one link client's link `L`, and why its last connect failed. */
export class LinkWait<L> {
  #waiters: (() => void)[] = [];
  #lastError: NetError | null = null;

  /**
   * @param current the link when it is up, else null
   * @param stopped the client's stop signal: no wait once it fired
   * @param waitMs how long a dial waits for a link that is down
   */
  constructor(
    readonly current: () => L | null,
    readonly stopped: AbortSignal,
    readonly waitMs: number,
  ) {
    // The client stopped: its waiting dials end now ("link closed"), not after waitMs.
    stopped.addEventListener("abort", () => this.#wakeAll(), { once: true });
  }

  /** Every waiting dial looks again. */
  #wakeAll(): void {
    for (const w of this.#waiters.splice(0)) w();
  }

  /** The link came up: every waiting dial takes it. */
  up(): void {
    this.#lastError = null;
    this.#wakeAll();
  }

  /** A connect failed with `err`: every waiting dial fails with its reason (returned). */
  failed(err: unknown): NetError {
    const e = err instanceof NetError
      ? err
      : new NetError("other", errorMessage(err), { cause: err });
    this.#lastError = e;
    this.#wakeAll();
    return e;
  }

  /** The link, waiting for it while it is down; rejects with a `NetError` saying why not. */
  async get(signal: AbortSignal): Promise<L> {
    const now = this.current();
    if (now) return now;
    if (this.stopped.aborted) throw new NetError("other", "link closed");
    let wake!: () => void;
    const woke = new Promise<void>((r) => wake = r);
    this.#waiters.push(wake);
    signal.addEventListener("abort", wake, { once: true });
    const timer = setTimeout(wake, this.waitMs);
    try {
      await woke;
    } finally {
      clearTimeout(timer);
      signal.removeEventListener("abort", wake);
      const i = this.#waiters.indexOf(wake);
      if (i >= 0) this.#waiters.splice(i, 1);
    }
    if (signal.aborted) throw new NetError("aborted", "dial aborted");
    const link = this.current();
    if (link) return link;
    if (this.stopped.aborted) throw new NetError("other", "link closed");
    const last = this.#lastError;
    throw new NetError(last?.reason ?? "other", `link down${last ? `: ${last.message}` : ""}`);
  }
}
