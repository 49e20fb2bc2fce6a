/**
 * A bounded, short-lived cache of shared-registry answers (which client serves a host, which
 * instance holds a client, where an instance listens), so a request routed across a cluster
 * costs no Redis round trip in the steady state. Change notices (Redis pub/sub) drop entries
 * at once; the lifetime bounds how long a lost notice can keep a stale answer.
 * @module
 */

interface Entry<V> {
  value: V;
  expires: number;
}

/** Key -> value for at most `ttlMs`, at most `maxEntries` (the oldest go first). */
export class LookupCache<V> {
  #map = new Map<string, Entry<V>>();
  /** Bumped by every invalidation: an answer read before one is not stored after it. */
  #epoch = 0;

  /** Entries live `ttlMs`; past `maxEntries` the oldest are dropped. */
  constructor(readonly ttlMs: number, readonly maxEntries = 10_000) {}

  /** The value of `key` while fresh; `undefined` when absent or expired. */
  get(key: string, now = performance.now()): { value: V } | undefined {
    const e = this.#map.get(key);
    if (!e) return undefined;
    if (e.expires <= now) {
      this.#map.delete(key);
      return undefined;
    }
    return { value: e.value };
  }

  /** The current epoch: pass it to `set` with an answer read after this call. */
  get epoch(): number {
    return this.#epoch;
  }

  /**
   * Store `value` read from the store since `epoch`; ignored when an invalidation came in
   * between (the answer may predate the change it announced).
   */
  set(key: string, value: V, epoch: number): void {
    if (epoch !== this.#epoch || this.ttlMs <= 0) return;
    this.#map.delete(key);
    this.#map.set(key, { value, expires: performance.now() + this.ttlMs });
    while (this.#map.size > this.maxEntries) {
      this.#map.delete(this.#map.keys().next().value!);
    }
  }

  /** Forget `key` (a change notice named it, or using it failed). */
  delete(key: string): void {
    this.#epoch++;
    this.#map.delete(key);
  }

  /** Forget everything (notices may have been missed). */
  clear(): void {
    this.#epoch++;
    this.#map.clear();
  }
}
