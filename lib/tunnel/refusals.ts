/**
 * A short memory of the clients that refused a public UDP port (no such port, a refused
 * dial): while it lasts, a new peer's datagrams to that port are dropped and counted instead
 * of each asking the client again with a new tunnel stream, which it would refuse again.
 * Bounded in entries and expiring, so a client that starts to serve the port (or a new
 * session of it) is asked again soon.
 * @module
 */

import type { TunnelFailure } from "./tunnel_stream.ts";

/** How long a client's refusal of a UDP port is remembered. */
export const udpRefusalTtlMs = 5_000;
/** Refusals remembered per port at most; the oldest is forgotten for a newer one. */
export const maxUdpRefusals = 64;

/**
 * Whether a failed tunnel stream was the client's answer (it would answer the same again
 * now), not a lost session or a timeout.
 */
export function isRefusal(reason: TunnelFailure): boolean {
  return reason === "no-such-port" || reason === "dial-failed" || reason === "bad-request";
}

/** Clients (any key) that refused recently, each until its refusal expires. */
export class Refusals<K> {
  /** Expiry by key, oldest refusal first. */
  readonly #until = new Map<K, number>();

  /** Refusals kept `ttlMs` each, at most `max` of them; `now` is the clock in ms. */
  constructor(
    readonly ttlMs: number = udpRefusalTtlMs,
    readonly max: number = maxUdpRefusals,
    readonly now: () => number = () => performance.now(),
  ) {}

  /** `k` refused now (again: its memory starts over). */
  add(k: K): void {
    this.#until.delete(k);
    if (this.#until.size >= this.max) this.#until.delete(this.#until.keys().next().value!);
    this.#until.set(k, this.now() + this.ttlMs);
  }

  /** Whether `k` refused less than `ttlMs` ago. */
  has(k: K): boolean {
    const until = this.#until.get(k);
    if (until === undefined) return false;
    if (this.now() < until) return true;
    this.#until.delete(k);
    return false;
  }

  /** Refusals remembered (expired ones until they are looked at). */
  get size(): number {
    return this.#until.size;
  }
}
