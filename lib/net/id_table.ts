/**
 * {@linkcode IdTable}: live items of a long-lived owner by a numeric id (a server's pending
 * requests), without a `Map`.
 *
 * Why not a `Map` (issue 20): a long-lived `Map` that gains and loses an entry per connection
 * rebuilds its hash table every few dozen deletions, and the replaced table keeps a link to its
 * successor and the entries it held. Once one table is promoted, every later one is reachable
 * from the dead old one through an old-to-new reference, which a scavenge treats as live until
 * the next full GC: every connection since that GC is copied and then promoted (lib/net/
 * live_list.ts says the same of a `Set`; bench/RESULTS.md, "dcut"). Here the buckets are one
 * array, replaced only when it grows (the old one emptied), and the items are chained through
 * symbol-keyed fields of their own, which an item leaving the table clears.
 *
 * An id's bucket is its low bits: meant for ids this side hands out (a counter), which spread
 * evenly. Ids a peer chooses could all share one bucket; lib/mux/stream_table.ts hashes those
 * with a secret seed.
 * @module
 */

const idOf: unique symbol = Symbol("id.id");
const nextOf: unique symbol = Symbol("id.next");
const tableOf: unique symbol = Symbol("id.table");

/** The fields a table keeps on each item (symbol-keyed: they touch no field of the item's own). */
interface Links {
  [idOf]?: number;
  [nextOf]?: Links;
  [tableOf]?: IdTable<object>;
}

/** Buckets of a new table (a power of two). */
const initialBuckets = 16;

/**
 * Items by a numeric id: `set`, `get` and `delete` in constant time on average. An item is in
 * at most one `IdTable` at a time, under one id. The bucket array grows with the most items
 * held at once and does not shrink.
 *
 * @example
 * ```ts
 * import { IdTable } from "./id_table.ts";
 * const pending = new IdTable<{ name: string }>();
 * const a = { name: "a" };
 * pending.set(7, a);
 * console.assert(pending.get(7) === a && pending.size === 1);
 * pending.delete(7);
 * console.assert(pending.get(7) === undefined && pending.size === 0);
 * ```
 */
export class IdTable<T extends object> implements Iterable<T> {
  #buckets: (Links | undefined)[] = new Array(initialBuckets).fill(undefined);
  #mask = initialBuckets - 1;
  #size = 0;

  /** Items in the table now. */
  get size(): number {
    return this.#size;
  }

  /** The item under `id`, if any. */
  get(id: number): T | undefined {
    for (let x = this.#buckets[id & this.#mask]; x; x = x[nextOf]) {
      if (x[idOf] === id) return x as T;
    }
    return undefined;
  }

  /**
   * Put `item` under `id`, in place of the item there (which leaves the table). Throws if
   * `item` is in a table already (this one under another id, or another table).
   */
  set(id: number, item: T): this {
    const x = item as Links;
    if (x[tableOf] === this && x[idOf] === id) return this;
    if (x[tableOf] !== undefined) throw new TypeError("the item is in an IdTable already");
    this.delete(id);
    if (this.#size >= this.#buckets.length) this.#grow();
    const i = id & this.#mask;
    x[idOf] = id;
    x[tableOf] = this;
    x[nextOf] = this.#buckets[i];
    this.#buckets[i] = x;
    this.#size++;
    return this;
  }

  /** Remove the item under `id`; false if there was none. It keeps no link into the table. */
  delete(id: number): boolean {
    const i = id & this.#mask;
    let prev: Links | undefined;
    for (let x = this.#buckets[i]; x; prev = x, x = x[nextOf]) {
      if (x[idOf] !== id) continue;
      if (prev) prev[nextOf] = x[nextOf];
      else this.#buckets[i] = x[nextOf];
      x[nextOf] = x[tableOf] = x[idOf] = undefined;
      this.#size--;
      return true;
    }
    return false;
  }

  /**
   * The items, bucket by bucket (no order). Deleting the item just yielded is safe; to change
   * the table more than that while walking, iterate over a copy (`[...table]`).
   */
  *[Symbol.iterator](): Generator<T, void, undefined> {
    const buckets = this.#buckets;
    for (let i = 0; i < buckets.length; i++) {
      for (let x = buckets[i]; x;) {
        const next = x[nextOf];
        yield x as T;
        x = next;
      }
    }
  }

  /** Twice the buckets, the items moved over and the old array emptied (it may be old-space). */
  #grow(): void {
    const old = this.#buckets;
    const buckets: (Links | undefined)[] = new Array(old.length * 2).fill(undefined);
    const mask = buckets.length - 1;
    for (let i = 0; i < old.length; i++) {
      for (let x = old[i]; x;) {
        const next = x[nextOf];
        const j = x[idOf]! & mask;
        x[nextOf] = buckets[j];
        buckets[j] = x;
        x = next;
      }
    }
    old.fill(undefined);
    this.#buckets = buckets;
    this.#mask = mask;
  }
}
