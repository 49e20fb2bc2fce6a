/**
 * {@linkcode LiveList}: the live items of a long-lived owner (a server's connections), in the
 * order they were added, linked through fields of their own.
 *
 * Why not a `Set` (issue 20): a long-lived `Set` (or `Map`) that gains and loses an entry per
 * connection makes V8's young-generation collector keep finished connections. The set's
 * backing table is rebuilt every few dozen deletions; once one table has been promoted to the
 * old generation, each table that replaces it is reachable from the dead old one through an
 * old-to-new reference, which a scavenge treats as live until the next full GC. So every
 * table, and every connection record it held when it was replaced (with the connection's
 * frames, promises and buffers behind it), is copied and then promoted: ~1-1.7 KB per
 * connection, about a tenth of what a connection allocates, against ~0 when only the live
 * connections survive (bench/RESULTS.md, "what a scavenge keeps"). A list linked through its
 * items has no table to rebuild, and an item leaving it forgets its neighbours.
 * @module
 */

const nextOf: unique symbol = Symbol("live.next");
const prevOf: unique symbol = Symbol("live.prev");
const listOf: unique symbol = Symbol("live.list");

/** The fields a list keeps on each item (symbol-keyed: they touch no field of the item's own). */
interface Links {
  [nextOf]?: Links;
  [prevOf]?: Links;
  [listOf]?: LiveList<object>;
}

/**
 * A set of live objects without a hash table: `add`, `delete` and `has` in constant time,
 * iteration in the order of adding. An item is in at most one `LiveList` at a time.
 *
 * @example
 * ```ts
 * import { LiveList } from "./live_list.ts";
 * const live = new LiveList<{ id: number }>();
 * const a = { id: 1 }, b = { id: 2 };
 * live.add(a);
 * live.add(b);
 * live.delete(a);
 * console.assert(live.size === 1 && [...live][0] === b && !live.has(a));
 * ```
 */
export class LiveList<T extends object> implements Iterable<T> {
  #head: Links | undefined;
  #tail: Links | undefined;
  #size = 0;

  /** Items in the list now. */
  get size(): number {
    return this.#size;
  }

  /** Whether `item` is in this list. */
  has(item: T): boolean {
    return (item as Links)[listOf] === this;
  }

  /** Add `item` at the end; nothing if it is here already. Throws if it is in another list. */
  add(item: T): this {
    const x = item as Links;
    const owner = x[listOf];
    if (owner === this) return this;
    if (owner !== undefined) throw new TypeError("the item is in another LiveList");
    x[listOf] = this;
    x[prevOf] = this.#tail;
    x[nextOf] = undefined;
    if (this.#tail) this.#tail[nextOf] = x;
    else this.#head = x;
    this.#tail = x;
    this.#size++;
    return this;
  }

  /** Remove `item`; false if it was not in this list. It keeps no reference to its neighbours. */
  delete(item: T): boolean {
    const x = item as Links;
    if (x[listOf] !== this) return false;
    const prev = x[prevOf];
    const next = x[nextOf];
    if (prev) prev[nextOf] = next;
    else this.#head = next;
    if (next) next[prevOf] = prev;
    else this.#tail = prev;
    x[prevOf] = x[nextOf] = x[listOf] = undefined;
    this.#size--;
    return true;
  }

  /**
   * The items in the order they were added. Deleting the item just yielded is safe (the walk
   * has taken its successor); to change the list more than that while walking, iterate over a
   * copy (`[...list]`).
   */
  *[Symbol.iterator](): Generator<T, void, undefined> {
    for (let x = this.#head; x;) {
      const next = x[nextOf];
      yield x as T;
      x = next;
    }
  }
}
