/**
 * Exponential backoff with full jitter for redial loops (depot-local, tunnel-client,
 * seaprox links, fusion paths): reconnect forever without a thundering herd.
 * @module
 */

/** Options of {@linkcode Backoff}. */
export interface BackoffOptions {
  /** First delay. @default 250 */
  initialMs?: number;
  /** Ceiling of the delay. @default 30000 */
  maxMs?: number;
  /** Growth per failure. @default 2 */
  factor?: number;
  /** Fraction of the delay that is randomised (0 = none, 1 = full jitter). @default 0.5 */
  jitter?: number;
}

/** Delay sequence: call `next()` after each failure, `reset()` after a success. */
export class Backoff {
  #attempt = 0;
  readonly initialMs: number;
  readonly maxMs: number;
  readonly factor: number;
  readonly jitter: number;
  constructor(opts: BackoffOptions = {}) {
    this.initialMs = opts.initialMs ?? 250;
    this.maxMs = opts.maxMs ?? 30_000;
    this.factor = opts.factor ?? 2;
    this.jitter = opts.jitter ?? 0.5;
  }
  /** Failures since the last reset. */
  get attempt(): number {
    return this.#attempt;
  }
  /** The next delay in milliseconds. */
  next(): number {
    const base = Math.min(this.maxMs, this.initialMs * this.factor ** this.#attempt++);
    return Math.round(base * (1 - this.jitter * Math.random()));
  }
  reset(): void {
    this.#attempt = 0;
  }
}

/** Wait `ms`, or reject with the signal's reason when it aborts first. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) return Promise.reject(signal.reason);
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(t);
      reject(signal!.reason);
    };
    const t = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
