/**
 * The one failed-authentication limiter: a token bucket per source address (IPv6 grouped by
 * /64, since one host owns a whole /64) and claimed user, in a bounded map. A correct secret
 * always passes; wrong ones past the burst are answered late, so guessing costs an attacker
 * time, costs us a fixed amount of memory, and never locks the rightful user out.
 * @module
 */

import { ipFamily } from "./addr.ts";
import { sleep } from "./backoff.ts";

/** Options of {@linkcode AuthFailureLimiter}. */
export interface AuthFailureLimiterOptions {
  /** Failed attempts an address may make in a burst. @default 5 */
  burst?: number;
  /** Failed attempts per minute regained (refill rate). @default 6 */
  perMinute?: number;
  /** Keys tracked at once; the least recently failed is forgotten first. @default 10000 */
  maxEntries?: number;
  /** Longest a wrong answer is held once the burst is spent. @default 10000 */
  maxDelayMs?: number;
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
  // An IPv4 address or a name (no port, bracket or zone): itself, without the regexes
  // below (every accepted connection asks).
  if (remote.indexOf(":") < 0 && remote.indexOf("%") < 0 && remote[0] !== "[") return remote;
  let host = remote;
  const bracket = /^\[([^\]]+)\](?::\d+)?$/.exec(remote);
  if (bracket) host = bracket[1];
  else if (ipFamily(remote) === 0 && /:\d+$/.test(remote)) {
    host = remote.slice(0, remote.lastIndexOf(":"));
  }
  host = host.replace(/%.*$/, "");
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(host);
  if (mapped) return mapped[1];
  if (ipFamily(host) !== 6) return host;
  // Expand to 8 groups and keep the first 4.
  const [head, tail = ""] = host.split("::");
  const h = head ? head.split(":") : [];
  const t = tail ? tail.split(":") : [];
  const groups = host.includes("::")
    ? [...h, ...Array(8 - h.length - t.length).fill("0"), ...t]
    : h;
  return `${groups.slice(0, 4).map((g) => g.toLowerCase().replace(/^0+(?=.)/, "")).join(":")}::/64`;
}

/** Options of {@linkcode AuthFailureLimiter.verify}. */
export interface VerifyOptions {
  /**
   * The identity the attempt claims (SOCKS username, exit name), when the protocol has one:
   * failures are then counted per source and identity, so guessing one user's password does
   * not slow another user's typo from the same address.
   */
  user?: string;
  /** Cut a penalty delay short (server stop, handshake timeout): `verify` then rejects. */
  signal?: AbortSignal;
  /**
   * Hold a wrong answer past the burst for the key's penalty (true), or return "limited" at
   * once for a protocol that says so itself (HTTP 429 with Retry-After). @default true
   */
  hold?: boolean;
}

/**
 * The outcome of one attempt: "ok" (the secret was right), "wrong", or "limited" (wrong, and
 * its key had spent its burst: the answer was held, or is to be refused as such).
 */
export type AuthVerdict = "ok" | "wrong" | "limited";

/**
 * Failed authentications per source (IPv4 address, IPv6 /64, optionally with the claimed
 * user): a token bucket each, in a bounded map.
 *
 * The one check-compare-count sequence of every listener is {@linkcode verify}: the secret is
 * always compared (in constant time, by the caller's `check`), a correct one passes at once
 * whatever failed before it, and a wrong one is counted and, once its key's burst is spent,
 * answered only after a delay that grows with the key's debt (capped at `maxDelayMs`). So an
 * attacker sharing an address with the rightful user (or a proxy in front of both) costs that
 * user nothing: it can no longer lock them out, only slow its own wrong guesses. What bounds a
 * guesser that does not wait for its answers is the connection caps and, above all, the
 * secret's length.
 *
 * @example
 * ```ts
 * import { AuthFailureLimiter } from "./ratelimit.ts";
 * const limiter = new AuthFailureLimiter({ burst: 2, perMinute: 1 });
 * const given: string = "wrong password";
 * const verdict = await limiter.verify("10.0.0.1:5000", () => given === "expected");
 * console.assert(verdict === "wrong" && limiter.penaltyMs("10.0.0.1:5001") === 0);
 * ```
 */
export class AuthFailureLimiter {
  readonly #burst: number;
  readonly #refillPerMs: number;
  readonly #max: number;
  readonly #maxDelayMs: number;
  readonly #now: () => number;
  readonly #buckets = new Map<string, Bucket>();
  /** Wrong attempts past their key's burst (held, or refused as limited). */
  delayed = 0;

  /** A limiter with `burst` attempts, regaining `perMinute` per minute. */
  constructor(opts: AuthFailureLimiterOptions = {}) {
    this.#burst = opts.burst ?? 5;
    this.#refillPerMs = (opts.perMinute ?? 6) / 60_000;
    this.#max = opts.maxEntries ?? 10_000;
    this.#maxDelayMs = opts.maxDelayMs ?? 10_000;
    this.#now = opts.now ?? Date.now;
    if (this.#burst < 1 || this.#refillPerMs <= 0 || this.#max < 1 || this.#maxDelayMs < 0) {
      throw new RangeError("burst, perMinute and maxEntries must be positive");
    }
  }

  /** Keys tracked now (bounded by `maxEntries`). */
  get size(): number {
    return this.#buckets.size;
  }

  #key(remote: string, user?: string): string {
    const source = sourceKey(remote);
    return user === undefined ? source : `${source} ${user}`;
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

  /**
   * How long a wrong answer to `remote` (and `user`) is held now: 0 while its burst lasts,
   * then the time until its bucket is back above zero, at most `maxDelayMs`.
   */
  penaltyMs(remote: string, user?: string): number {
    const b = this.#refilled(this.#key(remote, user));
    if (!b || b.tokens >= 0) return 0;
    return Math.min(this.#maxDelayMs, Math.ceil(-b.tokens / this.#refillPerMs));
  }

  /**
   * Record a failed attempt from `remote` (and `user`). Tokens go below zero (down to what
   * `maxDelayMs` covers), which is the debt that delays the next wrong answers.
   */
  failed(remote: string, user?: string): void {
    const key = this.#key(remote, user);
    const b = this.#refilled(key) ?? { tokens: this.#burst, updatedMs: this.#now() };
    b.tokens = Math.max(-this.#maxDelayMs * this.#refillPerMs - 1, b.tokens - 1);
    // Re-insert so Map order is least-recently-failed first; evict from the front.
    this.#buckets.delete(key);
    this.#buckets.set(key, b);
    while (this.#buckets.size > this.#max) {
      this.#buckets.delete(this.#buckets.keys().next().value!);
    }
  }

  /**
   * Check one attempt: run `check` (the caller's constant-time comparison); true is "ok" at
   * once. False is counted against `remote` (and `opts.user`): "wrong" within the burst,
   * "limited" past it, answered after the key's penalty ({@linkcode penaltyMs}) unless
   * `opts.hold` is false; an abort during the penalty rejects with the signal's reason.
   */
  async verify(
    remote: string,
    check: () => boolean | Promise<boolean>,
    opts: VerifyOptions = {},
  ): Promise<AuthVerdict> {
    if (await check()) return "ok";
    this.failed(remote, opts.user);
    const waitMs = this.penaltyMs(remote, opts.user);
    if (waitMs === 0) return "wrong";
    this.delayed++;
    if (opts.hold ?? true) await sleep(waitMs, opts.signal);
    return "limited";
  }
}

/**
 * {@linkcode AuthFailureLimiter.verify} when a limiter is configured, else just `check`: the
 * one check-compare-count sequence of every authenticating listener.
 */
export async function verifySecret(
  limiter: AuthFailureLimiter | undefined,
  remote: string,
  check: () => boolean | Promise<boolean>,
  opts: VerifyOptions = {},
): Promise<boolean> {
  return limiter ? (await limiter.verify(remote, check, opts)) === "ok" : await check();
}
