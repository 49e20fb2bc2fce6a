/**
 * Per-source-address limit on failed authentication attempts: a token bucket per address
 * (IPv6 grouped by /64, since one host owns a whole /64), in a bounded map, so guessing a
 * token costs an attacker time and costs us a fixed amount of memory.
 * @module
 */

import { isIP } from "node:net";

/** Options of {@linkcode AuthFailureLimiter}. */
export interface AuthFailureLimiterOptions {
  /** Failed attempts an address may make in a burst. @default 5 */
  burst?: number;
  /** Failed attempts per minute regained (refill rate). @default 6 */
  perMinute?: number;
  /** Addresses tracked at once; the least recently failed is forgotten first. @default 10000 */
  maxEntries?: number;
  /** Clock (tests). @default Date.now */
  now?: () => number;
}

interface Bucket {
  tokens: number;
  updatedMs: number;
}

/**
 * The key of a remote address (`host:port`, `[v6]:port` or a bare IP): the IPv4 address, or
 * the /64 prefix of an IPv6 address (IPv4-mapped IPv6 counts as IPv4).
 */
export function sourceKey(remote: string): string {
  let host = remote;
  const bracket = /^\[([^\]]+)\](?::\d+)?$/.exec(remote);
  if (bracket) host = bracket[1];
  else if (isIP(remote) === 0 && /:\d+$/.test(remote)) {
    host = remote.slice(0, remote.lastIndexOf(":"));
  }
  host = host.replace(/%.*$/, "");
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(host);
  if (mapped) return mapped[1];
  if (isIP(host) !== 6) return host;
  // Expand to 8 groups and keep the first 4.
  const [head, tail = ""] = host.split("::");
  const h = head ? head.split(":") : [];
  const t = tail ? tail.split(":") : [];
  const groups = host.includes("::")
    ? [...h, ...Array(8 - h.length - t.length).fill("0"), ...t]
    : h;
  return `${groups.slice(0, 4).map((g) => g.toLowerCase().replace(/^0+(?=.)/, "")).join(":")}::/64`;
}

/**
 * Token bucket per source address for failed authentications.
 *
 * Call `allowed(remote)` before checking a secret (false: refuse without checking), and
 * `failed(remote)` after a wrong one. Successes do not refill: a correct secret from a
 * limited address still waits, so a guesser cannot reset its budget with a known-good one.
 *
 * @example
 * ```ts
 * import { AuthFailureLimiter } from "./ratelimit.ts";
 * const limiter = new AuthFailureLimiter({ burst: 2, perMinute: 1 });
 * limiter.failed("10.0.0.1:5000");
 * limiter.failed("10.0.0.1:5001");
 * console.assert(!limiter.allowed("10.0.0.1:5002"));
 * console.assert(limiter.allowed("10.0.0.2:5000"));
 * ```
 */
export class AuthFailureLimiter {
  readonly #burst: number;
  readonly #refillPerMs: number;
  readonly #max: number;
  readonly #now: () => number;
  readonly #buckets = new Map<string, Bucket>();
  /** Attempts refused because their address was over the limit. */
  refused = 0;

  /** A limiter with `burst` attempts, regaining `perMinute` per minute. */
  constructor(opts: AuthFailureLimiterOptions = {}) {
    this.#burst = opts.burst ?? 5;
    this.#refillPerMs = (opts.perMinute ?? 6) / 60_000;
    this.#max = opts.maxEntries ?? 10_000;
    this.#now = opts.now ?? Date.now;
    if (this.#burst < 1 || this.#refillPerMs <= 0 || this.#max < 1) {
      throw new RangeError("burst, perMinute and maxEntries must be positive");
    }
  }

  /** Addresses tracked now (bounded by `maxEntries`). */
  get size(): number {
    return this.#buckets.size;
  }

  #refilled(key: string): Bucket | undefined {
    const b = this.#buckets.get(key);
    if (!b) return undefined;
    const now = this.#now();
    b.tokens = Math.min(this.#burst, b.tokens + (now - b.updatedMs) * this.#refillPerMs);
    b.updatedMs = now;
    if (b.tokens >= this.#burst) {
      this.#buckets.delete(key); // full again: nothing to remember
      return undefined;
    }
    return b;
  }

  /** Whether `remote` may try to authenticate now (counts a refusal when not). */
  allowed(remote: string): boolean {
    const b = this.#refilled(sourceKey(remote));
    if (!b || b.tokens >= 1) return true;
    this.refused++;
    return false;
  }

  /** Record a failed attempt from `remote`. */
  failed(remote: string): void {
    const key = sourceKey(remote);
    const b = this.#refilled(key) ?? { tokens: this.#burst, updatedMs: this.#now() };
    b.tokens = Math.max(0, b.tokens - 1);
    // Re-insert so Map order is least-recently-failed first; evict from the front.
    this.#buckets.delete(key);
    this.#buckets.set(key, b);
    while (this.#buckets.size > this.#max) {
      this.#buckets.delete(this.#buckets.keys().next().value!);
    }
  }
}
